"""FID: Fréchet distance against a direct scipy computation, the feature path on a seeded
random network of the same architecture, and the offline error for missing weights."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from inpaintbench.errors import InpaintBenchError
from inpaintbench.metrics import fid as fidmod
from inpaintbench.metrics.fid import (
    FEATURE_DIM,
    FID_WEIGHTS_FILE,
    FIDFeatures,
    activation_stats,
    fid_between,
    fid_status,
    frechet_distance,
    frechet_distance_from_features,
)

SMALL = 96  # input size for fast feature tests (the real metric uses 299)


def _scipy_fid(mu1, s1, mu2, s2):
    """FID written out directly with scipy.linalg.sqrtm, for comparison."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def _random_cov(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d)


@pytest.mark.parametrize("d", [1, 5, 32])
def test_frechet_matches_scipy_full_rank(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_cov(rng, d) + 0.1 * np.eye(d), _random_cov(rng, d) + 0.1 * np.eye(d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _scipy_fid(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-8, abs=1e-9)
    # a 1-d check by hand: (m1-m2)^2 + (sqrt(v1) - sqrt(v2))^2
    if d == 1:
        assert ours == pytest.approx((mu1[0] - mu2[0]) ** 2 + (np.sqrt(s1[0, 0]) - np.sqrt(s2[0, 0])) ** 2)


def test_frechet_matches_scipy_near_singular():
    rng = np.random.default_rng(7)
    d = 24
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    # rank 6 covariances plus a tiny ridge: condition numbers around 1e9
    s1 = _random_cov(rng, d, rank=6) + 1e-9 * np.eye(d)
    s2 = _random_cov(rng, d, rank=6) + 1e-9 * np.eye(d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _scipy_fid(mu1, s1, mu2, s2)
    assert np.isfinite(ours)
    assert ours == pytest.approx(ref, rel=1e-5)


def test_frechet_exactly_singular_is_finite_and_matches_features():
    # fewer samples than dimensions: the situation of a bucket with < 2048 images
    rng = np.random.default_rng(3)
    fa, fb = rng.standard_normal((10, 40)), rng.standard_normal((10, 40)) + 0.5
    mu_a, s_a = activation_stats(fa)
    mu_b, s_b = activation_stats(fb)
    assert np.linalg.matrix_rank(s_a) < 40
    ours = frechet_distance(mu_a, s_a, mu_b, s_b)
    ref = _scipy_fid(mu_a, s_a + 1e-10 * np.eye(40), mu_b, s_b + 1e-10 * np.eye(40))
    assert np.isfinite(ours) and ours > 0
    assert ours == pytest.approx(ref, rel=1e-3)
    assert frechet_distance(mu_a, s_a, mu_a, s_a) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("n1,n2,d", [(10, 7, 40), (60, 50, 12)])
def test_feature_shortcut_equals_covariance_formula(n1, n2, d):
    # the fast path used below 2048 images is the same number as the D x D computation
    rng = np.random.default_rng(n1 + d)
    fa = rng.standard_normal((n1, d)) * rng.uniform(0.2, 2.0, d)
    fb = rng.standard_normal((n2, d)) + rng.uniform(-1, 1, d)
    slow = frechet_distance(*activation_stats(fa), *activation_stats(fb))
    # (the D x D path carries sqrt(round-off) ~1e-8 per zero eigenvalue when singular)
    assert frechet_distance_from_features(fa, fb) == pytest.approx(slow, rel=1e-7, abs=1e-5)
    assert frechet_distance_from_features(fa, fa) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(InpaintBenchError, match="do not match"):
        frechet_distance_from_features(fa, fb[:, :-1])


def test_activation_stats_and_errors():
    feats = np.arange(12, dtype=float).reshape(4, 3)
    mu, sigma = activation_stats(torch.from_numpy(feats))
    np.testing.assert_allclose(mu, feats.mean(0))
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False))
    with pytest.raises(InpaintBenchError, match="at least 2 images"):
        activation_stats(np.zeros((1, 3)))
    with pytest.raises(InpaintBenchError, match="do not match"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    return FIDFeatures(random_init=True, seed=0, input_size=SMALL)


def _images(seed, n=6, size=48):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_features_shape_and_determinism(random_net):
    torch.set_num_threads(1)
    x = _images(1, n=3)
    f1 = random_net(x)
    assert f1.shape == (3, FEATURE_DIM)
    assert torch.isfinite(f1).all() and f1.abs().sum() > 0
    # same seed, freshly built network -> identical features; different seed -> different
    again = FIDFeatures(random_init=True, seed=0, input_size=SMALL)(x)
    torch.testing.assert_close(f1, again, rtol=0, atol=0)
    other = FIDFeatures(random_init=True, seed=1, input_size=SMALL)(x)
    assert not torch.allclose(f1, other)
    # the standard 299 path also yields 2048-d pool3 features
    random_net.input_size = 299
    try:
        assert random_net(x[:1]).shape == (1, FEATURE_DIM)
    finally:
        random_net.input_size = SMALL


def test_fid_identical_sets_zero_and_shift_positive(random_net):
    torch.set_num_threads(1)
    real = _images(2, n=8)
    same = fid_between(real, real.clone(), model=random_net, batch_size=4)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["n"] == 8 and same["flagged"] is True
    shifted = fid_between(real, (real * 0.5 + 0.4).clamp(0, 1), model=random_net, batch_size=4)
    assert shifted["fid"] > 1e-3
    # numpy input gives the same number as tensor input
    as_np = fid_between(real.numpy(), (real * 0.5 + 0.4).clamp(0, 1).numpy(), model=random_net, batch_size=8)
    assert as_np["fid"] == pytest.approx(shifted["fid"], rel=1e-6)


def test_fid_flag_threshold(monkeypatch, random_net):
    monkeypatch.setattr(fidmod, "FULL_RANK_MIN_IMAGES", 4)
    out = fid_between(_images(4, n=4), _images(5, n=5), model=random_net)
    assert out["n"] == 4 and out["n_fake"] == 5 and out["flagged"] is False


def test_bad_image_shape_is_clear_error(random_net):
    with pytest.raises(InpaintBenchError, match="N x 3 x H x W"):
        fid_between(torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32), model=random_net)


def test_missing_weights_offline_is_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InpaintBenchError) as exc:
        FIDFeatures()
    msg = str(exc.value)
    assert FID_WEIGHTS_FILE in msg and str(tmp_path / "hub" / "checkpoints") in msg
    ok, reason = fid_status({"enabled": True})
    assert ok is False and FID_WEIGHTS_FILE in reason and reason.startswith("FID not computed")
    assert fid_status({"enabled": False}) == (False, "FID not computed: disabled in params.yaml (metrics.fid.enabled: false).")


def test_cached_weights_file_is_loaded(monkeypatch, tmp_path, random_net):
    # a weights file in the hub cache is what the network loads (here: the seeded random one)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    arch = fidmod._fid_inception_architecture()
    fidmod._seeded_random_init(arch, 0)
    torch.save(arch.state_dict(), ckpt / FID_WEIGHTS_FILE)
    assert fid_status({})[0] is True
    loaded = FIDFeatures(input_size=SMALL)
    x = _images(6, n=2)
    torch.testing.assert_close(loaded(x), random_net(x))
    (ckpt / FID_WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(InpaintBenchError, match="cannot load FID Inception weights"):
        FIDFeatures(input_size=SMALL)
