"""Metrics against independent computations (scikit-image, numpy)."""
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from inpaintbench.errors import InpaintBenchError
from inpaintbench.metrics.quality import image_metrics, l1, l1_hole, psnr, ssim


def _pair(seed, noise):
    rng = np.random.default_rng(seed)
    gt = rng.random((48, 40, 3)).astype(np.float32)
    gt = (gt + np.roll(gt, 1, 0) + np.roll(gt, 1, 1)) / 3  # some structure
    out = np.clip(gt + rng.normal(0, noise, gt.shape), 0, 1).astype(np.float32)
    return out, gt


@pytest.mark.parametrize("seed,noise", [(0, 0.02), (1, 0.1), (2, 0.3)])
def test_ssim_matches_scikit_image(seed, noise):
    out, gt = _pair(seed, noise)
    ref = structural_similarity(out.astype(np.float64), gt.astype(np.float64), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0, channel_axis=-1)
    assert abs(ssim(out, gt) - ref) < 1e-4


def test_psnr_matches_scikit_image_and_identity():
    out, gt = _pair(3, 0.05)
    assert psnr(out, gt) == pytest.approx(peak_signal_noise_ratio(gt.astype(np.float64), out.astype(np.float64), data_range=1.0), abs=1e-6)
    assert psnr(gt, gt) == float("inf")
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-9)


def test_l1_full_and_hole():
    gt = np.zeros((4, 4, 3))
    out = np.zeros((4, 4, 3))
    out[0, 0] = 1.0  # error only at one pixel, which is in the hole
    mask = np.zeros((4, 4))
    mask[0, :2] = 1
    assert l1(out, gt) == pytest.approx(3 / 48)
    assert l1_hole(out, gt, mask) == pytest.approx(3 / 6)
    big = np.zeros((16, 16, 3))
    m = image_metrics(big, big, np.zeros((16, 16)))
    assert set(m) == {"psnr", "ssim", "l1", "l1_hole"}
    with pytest.raises(InpaintBenchError, match="at least 11"):
        ssim(out, gt)
