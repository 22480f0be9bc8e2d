"""Uncertainty of the reported numbers: bootstrap confidence intervals, paired tests, Holm.

* ``bootstrap_mean_ci(values)``: a (1 - alpha) bootstrap CI of the mean of each row of a
  k x n matrix (k cells, n images), all rows at once (one resample index matrix B x n, shared by
  the rows, from ``numpy.random.default_rng(seed)``). ``method="percentile"``: the alpha/2 and
  1 - alpha/2 quantiles of the B resampled means. ``method="bca"``: bias-corrected and
  accelerated (Efron 1987; DiCiccio & Efron 1996), acceleration from the jackknife of the mean,
  which is closed form: the leave-one-out means are (sum - x_i) / (n - 1).
* FID and KID CIs resample the pairs of the two Inception feature sets (``metrics.kid.feature_cis``).
* ``paired_comparison(x, ref)``: per row, the mean paired difference x - ref with its bootstrap CI
  (as above) and the two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``, zero
  differences dropped - Wilcoxon's treatment -; scipy's "auto": exact null distribution for n <= 50
  without zeros or ties, with them exhaustive permutations for n <= 13, else the tie-corrected
  normal approximation; all differences zero -> p = 1).
* ``holm(p)``: Holm's (1979) step-down adjusted p-values, family = the given vector.

Settings (params.yaml ``evaluation.bootstrap``): ``resamples`` (B, default 1000), ``method``
(percentile | bca, default percentile), ``seed`` (default 0), ``level`` (default 0.95),
``alpha`` for the tests (default 0.05).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..errors import InpaintBenchError

METHODS = ("percentile", "bca")


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = 1000
    method: str = "percentile"
    seed: int = 0
    level: float = 0.95
    alpha: float = 0.05  # significance level of the paired tests (after Holm)

    @classmethod
    def from_params(cls, raw: Mapping | None) -> "BootstrapSettings":
        cfg = dict(raw or {})
        unknown = set(cfg) - {"resamples", "method", "seed", "level", "alpha"}
        if unknown:
            raise InpaintBenchError(f"params.yaml: evaluation.bootstrap: unknown keys {sorted(unknown)}; "
                                    "allowed: resamples, method, seed, level, alpha")
        s = cls(resamples=int(cfg.get("resamples", 1000)), method=str(cfg.get("method", "percentile")),
                seed=int(cfg.get("seed", 0)), level=float(cfg.get("level", 0.95)), alpha=float(cfg.get("alpha", 0.05)))
        if s.method not in METHODS:
            raise InpaintBenchError(f"params.yaml: evaluation.bootstrap.method must be one of {METHODS}, got {s.method!r}")
        if s.resamples < 10:
            raise InpaintBenchError(f"params.yaml: evaluation.bootstrap.resamples must be >= 10, got {s.resamples}")
        if not 0.5 < s.level < 1 or not 0 < s.alpha < 0.5:
            raise InpaintBenchError("params.yaml: evaluation.bootstrap: level must be in (0.5, 1) and alpha in (0, 0.5)")
        return s

    def describe(self) -> str:
        return f"{self.level:.0%} {'BCa' if self.method == 'bca' else 'percentile'} bootstrap, {self.resamples} resamples, seed {self.seed}"


def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentile(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    a = (1 - level) / 2
    return np.quantile(boot, a, axis=-1), np.quantile(boot, 1 - a, axis=-1)


def _bca(boot: np.ndarray, theta: np.ndarray, jack: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """BCa interval per row. boot: k x B resampled statistics, theta: k estimates, jack: k x n
    leave-one-out statistics."""
    from scipy import special  # imported here: scipy costs ~0.7 s CPU, and most steps never need it

    b = boot.shape[-1]
    # bias correction z0 = Phi^-1(share of resamples below the estimate), ties counted half
    below = (boot < theta[:, None]).sum(-1) + 0.5 * (boot == theta[:, None]).sum(-1)
    z0 = special.ndtri(np.clip(below / b, 1 / (2 * b), 1 - 1 / (2 * b)))
    d = jack.mean(-1, keepdims=True) - jack
    num = (d ** 3).sum(-1)
    den = 6.0 * ((d ** 2).sum(-1)) ** 1.5
    acc = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    za = special.ndtri(np.array([(1 - level) / 2, 1 - (1 - level) / 2]))
    lo_hi = []
    for z in za:
        q = special.ndtr(z0 + (z0 + z) / (1 - acc * (z0 + z)))
        q = np.clip(np.nan_to_num(q, nan=0.5), 0.0, 1.0)
        sorted_boot = np.sort(boot, axis=-1)
        # the q-quantile of each row (linear interpolation, as np.quantile)
        pos = q * (b - 1)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, b - 1)
        w = pos - i0
        rows = np.arange(boot.shape[0])
        lo_hi.append(sorted_boot[rows, i0] * (1 - w) + sorted_boot[rows, i1] * w)
    return lo_hi[0], lo_hi[1]


def resample_counts(n: int, settings: BootstrapSettings = BootstrapSettings()) -> np.ndarray:
    """B x n matrix: how often each of the n images is drawn in each resample (from the seeded
    resample index matrix); the resampled means of a k x n matrix x are x @ counts.T / n."""
    idx = _resample_indices(n, settings.resamples, settings.seed)
    rows = np.repeat(np.arange(settings.resamples), n)
    counts = np.zeros((settings.resamples, n))
    np.add.at(counts, (rows, idx.ravel()), 1.0)
    return counts


def ci_from_boot(x: np.ndarray, boot: np.ndarray, settings: BootstrapSettings = BootstrapSettings()) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per row from the resampled means ``boot`` (k x B) of the rows of ``x`` (k x n)."""
    if settings.method == "bca":
        n = x.shape[1]
        jack = (x.sum(-1, keepdims=True) - x) / (n - 1)
        return _bca(boot, x.mean(-1), jack, settings.level)
    return _percentile(boot, settings.level)


def bootstrap_mean_ci(values, settings: BootstrapSettings = BootstrapSettings()) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the bootstrap CI of the mean of each row of ``values`` (k x n, or n).

    A row with a non-finite value (e.g. PSNR = inf on an identical image) gets NaN bounds; a
    single image gives lo = hi = the value (no spread can be estimated)."""
    x = np.asarray(values, dtype=np.float64)
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    k, n = x.shape
    lo, hi = np.full(k, np.nan), np.full(k, np.nan)
    finite = np.isfinite(x).all(-1)
    if n == 0 or not finite.any():
        return (lo[0], hi[0]) if squeeze else (lo, hi)
    xf = x[finite]
    if n == 1:
        lo[finite], hi[finite] = xf[:, 0], xf[:, 0]
    else:
        boot = xf @ resample_counts(n, settings).T / n  # k x B resampled means
        lo[finite], hi[finite] = ci_from_boot(xf, boot, settings)
    return (lo[0], hi[0]) if squeeze else (lo, hi)


def wilcoxon_p(diff) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-value of each row of paired differences (k x n), equal to
    ``scipy.stats.wilcoxon(row).pvalue`` row by row. Rows without zeros or tied |d| go through one
    vectorised scipy call (scipy picks the same exact/approximate method for all of them, as it
    would row by row: they have the same n); the others one by one."""
    from scipy import stats

    d = np.atleast_2d(np.asarray(diff, dtype=np.float64))
    out = np.ones(d.shape[0])
    finite = np.isfinite(d).all(-1)
    a = np.sort(np.abs(d), axis=-1)
    clean = finite & (a[:, 0] > 0) & ~(np.diff(a, axis=-1) == 0).any(-1)
    if clean.any() and d.shape[1] > 0:
        out[clean] = stats.wilcoxon(d[clean], zero_method="wilcox", alternative="two-sided", axis=-1).pvalue
    for i in np.flatnonzero(~clean):
        row = d[i][np.isfinite(d[i])]
        if row.size == 0 or not np.any(row != 0):
            continue  # identical scores: no evidence of a difference
        out[i] = float(stats.wilcoxon(row, zero_method="wilcox", alternative="two-sided").pvalue)
    return out


@dataclass
class Paired:
    """Row-wise paired comparison of x against a reference (arrays of length k)."""

    n: np.ndarray
    diff: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    p: np.ndarray


def paired_comparison(x, ref, settings: BootstrapSettings = BootstrapSettings()) -> Paired:
    """Mean paired difference x - ref per row (k x n: the same n images on both sides), its
    bootstrap CI and the Wilcoxon signed-rank p-value (not yet corrected for multiplicity)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    if x.shape != ref.shape:
        raise InpaintBenchError(f"paired comparison needs the same pairs on both sides, got {x.shape} vs {ref.shape}")
    d = x - ref
    lo, hi = bootstrap_mean_ci(d, settings)
    return Paired(n=np.full(d.shape[0], d.shape[1]), diff=d.mean(-1), lo=np.atleast_1d(lo), hi=np.atleast_1d(hi), p=wilcoxon_p(d))


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values: sort ascending, p_(i) * (m - i + 1) (i from 1),
    running maximum, capped at 1; NaN entries are left out of the family and stay NaN."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adj
    return out
