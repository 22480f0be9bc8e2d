"""Kernel Inception Distance (Bińkowski et al. 2018) and bootstrap CIs of FID and KID.

KID is the unbiased estimate of the squared MMD between the Inception features of two image
sets under the cubic polynomial kernel k(x, y) = (x·y / d + 1)^3 (d = 2048):

    MMD²_u = 1/(m(m-1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m-1)) Σ_{i≠j} k(y_i, y_j) - 2/m² Σ_{i,j} k(x_i, y_j)

averaged over ``subsets`` random subsets of ``subset_size`` images drawn without replacement from
each set, as the reference implementations do (Bińkowski's ``compute_scores.py``, clean-fid,
torch-fidelity: 100 subsets of 1000; subset size = min(subset_size, n)). When the subset size is
the whole set, every subset is the same and one full-set estimate is returned. Unbiased, so it is
meaningful for buckets far below the 2,048 images that FID needs.

Bootstrap CIs (``feature_cis``): B resamples of the *pairs* (the same indices on the real and the
composite side, as in the per-image metrics), computed from the n x n Gram matrices of the
features, which are computed once: a resample is a count vector w (how often each pair is drawn).
FID of a resample: the weighted means/covariances written through the Grams (Tr((S1 S2)^1/2) =
nuclear norm of the doubly centred, sqrt(w)-weighted cross Gram). KID of a resample: the
unbiased MMD² of the resample, the within-set sums over pairs of
different images (w^T K w - Σ w_i² K_ii over m² - Σ w_i² pairs; a drawn image paired with its own
duplicate would add k(x, x) and bias KID upward); equal to the estimator above when w = 1.
FID of a resample is the plug-in distance of the resampled sets; duplicates make it biased upward
(fewer distinct images): its interval is the percentile interval of the resampled FIDs shifted by
the bootstrap bias estimate mean(FID*) - FID, whatever ``method`` says (BCa's bias correction
degenerates when nearly every resample lies above the estimate). KID uses ``method``.
"""
from __future__ import annotations

import numpy as np

from ..errors import InpaintBenchError
from .stats import BootstrapSettings, _bca, _percentile, _resample_indices

DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def _mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m = kxx.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.sum() / (m * m))


def kid(feats_real, feats_fake, *, subsets: int = DEFAULT_SUBSETS, subset_size: int = DEFAULT_SUBSET_SIZE,
        seed: int = 0) -> float:
    """KID (unbiased MMD², cubic polynomial kernel) between two N x D feature matrices."""
    x = np.asarray(feats_real, dtype=np.float64)
    y = np.asarray(feats_fake, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise InpaintBenchError(f"KID features must be N x D matrices of the same D, got {x.shape} and {y.shape}")
    n = min(x.shape[0], y.shape[0])
    if n < 2:
        raise InpaintBenchError(f"KID needs at least 2 images per set, got {n}")
    m = min(n, int(subset_size))
    if m == x.shape[0] == y.shape[0]:
        return _mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(int(subsets)):
        a = x[rng.choice(x.shape[0], m, replace=False)]
        b = y[rng.choice(y.shape[0], m, replace=False)]
        vals.append(_mmd2_unbiased(polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)))
    return float(np.mean(vals))


def _weighted_fid(g11, g22, g12, w) -> float:
    n = w.sum()
    keep = w > 0
    w, g11, g22, g12 = w[keep], g11[np.ix_(keep, keep)], g22[np.ix_(keep, keep)], g12[np.ix_(keep, keep)]
    r1, r2 = g11 @ w / n, g22 @ w / n  # f1_i·m1, f2_i·m2
    c12_row, c12_col = g12 @ w / n, w @ g12 / n  # f1_i·m2, m1·f2_j
    m11, m22, m12 = w @ r1 / n, w @ r2 / n, w @ c12_row / n  # m1·m1, m2·m2, m1·m2
    cross = g12 - c12_row[:, None] - c12_col[None, :] + m12
    sw = np.sqrt(w)
    cross = sw[:, None] * cross * sw[None, :] / (n - 1)
    tr1 = (w @ np.diag(g11) - n * m11) / (n - 1)
    tr2 = (w @ np.diag(g22) - n * m22) / (n - 1)
    # nuclear norm = sum of sqrt(eigenvalues of C C^T): a symmetric eigensolver, which stays fast
    # where the threaded LAPACK SVD slows down badly on a busy machine
    nuc = float(np.sqrt(np.clip(np.linalg.eigvalsh(cross @ cross.T), 0.0, None)).sum())
    return max(float(m11 + m22 - 2 * m12 + tr1 + tr2 - 2 * nuc), 0.0)


def _one_blas_thread(active: bool):
    """Limit BLAS/LAPACK to one thread (threadpoolctl, installed with scikit-learn/scikit-image's
    stack); a no-op where it is missing or not wanted."""
    import contextlib

    if not active:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def feature_cis(feats_real, feats_fake, settings: BootstrapSettings = BootstrapSettings(),
                resamples: int | None = None) -> dict:
    """Bootstrap CIs of FID and KID over resampled pairs (row i of both matrices is pair i).
    Returns {"fid_lo", "fid_hi", "kid_lo", "kid_hi", "resamples"} (percentile or BCa as set)."""
    x = np.asarray(feats_real, dtype=np.float64)
    y = np.asarray(feats_fake, dtype=np.float64)
    if x.shape != y.shape:
        raise InpaintBenchError(f"FID/KID CIs resample pairs: the two feature sets must match, got {x.shape} vs {y.shape}")
    n, d = x.shape
    b = int(resamples or settings.resamples)
    g11, g22, g12 = x @ x.T, y @ y.T, x @ y.T
    kxx, kyy, kxy = (g11 / d + 1) ** 3, (g22 / d + 1) ** 3, (g12 / d + 1) ** 3
    idx = _resample_indices(n, b, settings.seed)
    w = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(np.float64)  # B x n counts

    def kid_w(wm: np.ndarray) -> np.ndarray:  # rows of count vectors -> unbiased MMD² of each resample
        m = wm.sum(1)
        w2 = wm * wm
        pairs = m * m - w2.sum(1)  # ordered pairs of resample positions holding different images
        pairs = np.where(pairs > 0, pairs, np.nan)  # a resample of one image repeated: no estimate
        sxx = (((wm @ kxx) * wm).sum(1) - w2 @ np.diag(kxx)) / pairs
        syy = (((wm @ kyy) * wm).sum(1) - w2 @ np.diag(kyy)) / pairs
        sxy = ((wm @ kxy) * wm).sum(1) / (m * m)
        return sxx + syy - 2 * sxy

    kid_boot = kid_w(w)[None]
    kid_boot = kid_boot[:, np.isfinite(kid_boot[0])]
    ones = np.ones(n)
    with _one_blas_thread(n <= 1024):  # many small eigenproblems: threads only contend
        fid_hat = _weighted_fid(g11, g22, g12, ones)
        fid_boot = np.array([_weighted_fid(g11, g22, g12, wi) for wi in w])[None]
    # FID: percentile interval shifted by the bootstrap bias estimate mean(FID*) - FID (see the
    # module docstring: the resamples hold ~63 % distinct images and FID grows as that falls, so
    # the raw percentile interval can miss the estimate and BCa's z0 degenerates)
    fid_lo, fid_hi = _percentile(fid_boot - (fid_boot.mean() - fid_hat), settings.level)
    if settings.method == "bca":
        jw = 1.0 - np.eye(n)  # leave-one-out count vectors
        kid_lo, kid_hi = _bca(kid_boot, kid_w(ones[None]), kid_w(jw)[None], settings.level)
    else:
        kid_lo, kid_hi = _percentile(kid_boot, settings.level)
    return {"fid_lo": float(fid_lo[0]), "fid_hi": float(fid_hi[0]), "kid_lo": float(kid_lo[0]),
            "kid_hi": float(kid_hi[0]), "resamples": b}


def feature_boot(feats_real, feats_fake, settings: BootstrapSettings = BootstrapSettings(),
                 resamples: int | None = None) -> dict:
    """FID and KID of the pairs and of each of B pair resamples (the resample counts depend only
    on n and the seed, so two methods scored on the same pairs get the *same* resamples: their
    differences are paired). Returns {"fid", "kid", "fid_boot", "kid_boot"} (boot: length B, KID
    NaN where a resample repeats one image only)."""
    x = np.asarray(feats_real, dtype=np.float64)
    y = np.asarray(feats_fake, dtype=np.float64)
    n, d = x.shape
    b = int(resamples or settings.resamples)
    g11, g22, g12 = x @ x.T, y @ y.T, x @ y.T
    kxx, kyy, kxy = (g11 / d + 1) ** 3, (g22 / d + 1) ** 3, (g12 / d + 1) ** 3
    idx = _resample_indices(n, b, settings.seed)
    w = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(np.float64)
    m = w.sum(1)
    w2 = w * w
    pairs = np.where(m * m - w2.sum(1) > 0, m * m - w2.sum(1), np.nan)
    kid_boot = ((((w @ kxx) * w).sum(1) - w2 @ np.diag(kxx)) / pairs + (((w @ kyy) * w).sum(1) - w2 @ np.diag(kyy)) / pairs
                - 2 * ((w @ kxy) * w).sum(1) / (m * m))
    kid_hat = _mmd2_unbiased(kxx, kyy, kxy)
    with _one_blas_thread(n <= 1024):
        fid_hat = _weighted_fid(g11, g22, g12, np.ones(n))
        fid_boot = np.array([_weighted_fid(g11, g22, g12, wi) for wi in w])
    return {"fid": fid_hat, "kid": kid_hat, "fid_boot": fid_boot, "kid_boot": kid_boot}


def paired_difference(a: dict, b: dict, metric: str, level: float = 0.95) -> tuple[float, float, float, float]:
    """(diff, lo, hi, p) of metric(a) - metric(b) from two ``feature_boot`` results on the same
    pairs: the percentile interval of the resampled differences shifted by their bootstrap bias
    (as for FID above), and the two-sided bootstrap p-value of that interval's inversion,
    2 * min(share <= 0, share >= 0) of the shifted differences (at least 1/B): p < 1 - level
    exactly when the interval excludes 0."""
    diff = float(a[metric] - b[metric])
    boot = a[metric + "_boot"] - b[metric + "_boot"]
    boot = boot[np.isfinite(boot)]
    if boot.size < 10:
        return diff, float("nan"), float("nan"), float("nan")
    shifted = boot - (boot.mean() - diff)
    lo, hi = np.quantile(shifted, [(1 - level) / 2, 1 - (1 - level) / 2])
    p = min(1.0, max(2 * min(np.mean(shifted <= 0), np.mean(shifted >= 0)), 1.0 / boot.size))
    return diff, float(lo), float(hi), float(p)
