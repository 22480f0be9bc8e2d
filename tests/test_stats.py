"""Bootstrap CIs, paired Wilcoxon tests, Holm, KID and the FID/KID bootstrap, against independent
computations (scipy, hand computations, direct O(n²) loops)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from inpaintbench.errors import InpaintBenchError
from inpaintbench.metrics.fid import frechet_distance_from_features
from inpaintbench.metrics.kid import _weighted_fid, feature_cis, kid
from inpaintbench.metrics.stats import BootstrapSettings, bootstrap_mean_ci, holm, paired_comparison, wilcoxon_p


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_covers_the_mean_at_the_nominal_rate(method):
    # 2000 independent samples of n = 40 from an exponential (skewed) with mean 1: the share of
    # CIs containing 1 must be near 95 % (bootstrap CIs undercover slightly at small n; the
    # binomial s.e. of the share is ~0.5 %)
    rng = np.random.default_rng(123)
    x = rng.exponential(1.0, size=(2000, 40))
    lo, hi = bootstrap_mean_ci(x, BootstrapSettings(resamples=1000, method=method, seed=1))
    cover = float(np.mean((lo <= 1.0) & (1.0 <= hi)))
    assert 0.91 <= cover <= 0.97, cover
    # and on a symmetric distribution the percentile and BCa intervals both sit near nominal
    z = rng.normal(3.0, 2.0, size=(2000, 30))
    lo, hi = bootstrap_mean_ci(z, BootstrapSettings(resamples=1000, method=method, seed=2))
    assert 0.92 <= float(np.mean((lo <= 3.0) & (3.0 <= hi))) <= 0.97


def test_bootstrap_ci_matches_scipy_within_resampling_noise():
    # both sides averaged over 8 seeds of 20000 resamples (resampling noise of one bound ~0.003
    # after averaging); BCa and percentile differ by ~0.03 here, so a wrong correction is caught
    x = np.random.default_rng(5).gamma(2.0, 1.0, size=60)
    for method in ("percentile", "bca"):
        ours = np.mean([bootstrap_mean_ci(x, BootstrapSettings(resamples=20000, method=method, seed=s)) for s in range(8)], axis=0)
        ref = np.mean([tuple(sps.bootstrap((x,), np.mean, n_resamples=20000, method="BCa" if method == "bca" else "percentile",
                                           random_state=np.random.default_rng(100 + s)).confidence_interval) for s in range(8)], axis=0)
        assert ours == pytest.approx(ref, abs=0.012)


def test_bootstrap_is_seeded_and_handles_edge_cases():
    x = np.random.default_rng(0).random((3, 20))
    a = bootstrap_mean_ci(x, BootstrapSettings(seed=4))
    b = bootstrap_mean_ci(x, BootstrapSettings(seed=4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    lo, hi = bootstrap_mean_ci(np.array([[1.0, np.inf, 2.0], [1.0, 2.0, 3.0]]))
    assert np.isnan(lo[0]) and np.isnan(hi[0]) and lo[1] <= 2.0 <= hi[1]
    assert bootstrap_mean_ci(np.array([0.7])) == (0.7, 0.7)
    with pytest.raises(InpaintBenchError, match="method"):
        BootstrapSettings.from_params({"method": "studentized"})


def test_wilcoxon_p_equals_scipy_and_exact_permutation_on_a_tiny_case():
    rng = np.random.default_rng(3)
    d = rng.normal(0.2, 1.0, size=(4, 25))
    assert np.allclose(wilcoxon_p(d), [sps.wilcoxon(r).pvalue for r in d], rtol=0, atol=1e-12)
    # rows with zeros and ties (take the one-by-one path) beside clean rows, n = 16 (exact) and 80
    for n in (16, 80):
        m = rng.normal(0.1, 1.0, size=(30, n))
        m[::3, :4] = 0.0
        m[1::5] = np.round(m[1::5], 1)
        assert np.allclose(wilcoxon_p(m), [sps.wilcoxon(r).pvalue for r in m], rtol=0, atol=1e-12)
    # exact: all 2^6 sign flips of distinct |d|, statistic = sum of positive ranks
    tiny = np.array([0.3, -0.1, 0.45, 0.2, 0.6, -0.05])
    ranks = sps.rankdata(np.abs(tiny))
    t_obs = ranks[tiny > 0].sum()
    stats_all = np.array([ranks[np.array(s) > 0].sum() for s in itertools.product([-1, 1], repeat=6)])
    mu = ranks.sum() / 2
    p_exact = np.mean(np.abs(stats_all - mu) >= abs(t_obs - mu) - 1e-12)
    assert wilcoxon_p(tiny)[0] == pytest.approx(p_exact, abs=1e-12)
    assert wilcoxon_p(np.zeros(8))[0] == 1.0  # identical scores


def test_paired_comparison_difference_and_ci():
    rng = np.random.default_rng(8)
    ref = rng.normal(25, 2, size=(2, 50))
    x = ref + np.array([[0.5], [0.0]]) + rng.normal(0, 0.3, size=(2, 50))
    res = paired_comparison(x, ref, BootstrapSettings(resamples=2000))
    assert np.allclose(res.diff, (x - ref).mean(1))
    assert res.lo[0] > 0 and res.p[0] < 1e-6  # a clear improvement
    assert res.lo[1] < 0 < res.hi[1]
    assert list(res.n) == [50, 50]


def test_holm_against_a_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert np.allclose(holm(p)[:4], [0.03, 0.06, 0.06, 0.02]) and np.isnan(holm(p)[4])
    assert np.allclose(holm([0.5, 0.6]), [1.0, 1.0])


def _kid_direct(x, y):
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)^3, written as explicit double loops."""
    m, d = x.shape
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return sxx + syy - 2 * sxy


def test_kid_equals_the_direct_formula():
    rng = np.random.default_rng(0)
    x, y = rng.random((15, 8)), rng.random((15, 8)) + 0.2
    assert kid(x, y) == pytest.approx(_kid_direct(x, y), rel=1e-10)
    assert abs(kid(x, x + 0.0)) < 1e-12 + abs(_kid_direct(x, x))  # same set: an unbiased ~0
    # subsets: the mean of the direct formula over the same seeded subsets
    big_x, big_y = rng.random((30, 8)), rng.random((30, 8))
    r = np.random.default_rng(3)
    manual = np.mean([_kid_direct(big_x[r.choice(30, 10, replace=False)], big_y[r.choice(30, 10, replace=False)]) for _ in range(5)])
    assert kid(big_x, big_y, subsets=5, subset_size=10, seed=3) == pytest.approx(manual, rel=1e-10)


def test_weighted_fid_of_a_resample_equals_fid_of_the_resampled_features():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 64)), rng.normal(0.3, 1.2, size=(20, 64))
    idx = rng.integers(0, 20, 20)
    w = np.bincount(idx, minlength=20).astype(float)
    got = _weighted_fid(x @ x.T, y @ y.T, x @ y.T, w)
    assert got == pytest.approx(frechet_distance_from_features(x[idx], y[idx]), rel=1e-9)


def test_feature_cis_bracket_the_estimates():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 32)), rng.normal(0.5, 1.0, size=(40, 32))
    for method in ("percentile", "bca"):
        ci = feature_cis(x, y, BootstrapSettings(resamples=300, method=method))
        assert ci["kid_lo"] < kid(x, y) < ci["kid_hi"]
        f = frechet_distance_from_features(x, y)
        assert ci["fid_lo"] < f < ci["fid_hi"] and ci["fid_hi"] - ci["fid_lo"] < f


def test_paired_feature_difference_is_consistent_with_its_ci():
    from inpaintbench.metrics.kid import feature_boot, paired_difference

    rng = np.random.default_rng(4)
    real = rng.normal(size=(40, 16))
    near = real + rng.normal(0, 0.3, size=real.shape)
    far = real + rng.normal(0.8, 0.3, size=real.shape)
    s = BootstrapSettings(resamples=300)
    a, b, c = feature_boot(real, near, s), feature_boot(real, far, s), feature_boot(real, near + 1e-9, s)
    # resample FIDs take the nuclear norm from eigenvalues of C C^T (squares the condition number):
    # agreement with the SVD-based FID to ~1e-6 relative
    assert a["fid"] == pytest.approx(frechet_distance_from_features(real, near), rel=1e-5)
    assert a["kid"] == pytest.approx(kid(real, near), rel=1e-9)
    for metric in ("fid", "kid"):
        diff, lo, hi, p = paired_difference(a, b, metric)
        assert diff == pytest.approx(a[metric] - b[metric]) and lo < diff < hi
        assert hi < 0 and p < 0.05  # near is clearly closer to the real set than far
        diff, lo, hi, p = paired_difference(a, c, metric)  # practically the same composites
        assert lo <= 0 <= hi and p > 0.05
