"""PSNR, SSIM and L1 on composites (DESIGN.md, Conventions: Metrics).

* PSNR = 10 log10(1 / MSE) over the full composite, data range 1.
* SSIM (Wang et al. 2004): Gaussian window 11×11, sigma 1.5, K1 0.01, K2 0.03, data range 1,
  computed per channel and averaged, mean over the valid (un-padded) region — the settings of
  scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)`, which the tests compare against.
* L1 full = mean |out - gt| over all pixels and channels; L1 hole = the same over hole pixels only.
Inputs: float arrays HxWx3 in [0, 1] (numpy) or N3HW tensors.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InpaintBenchError

_K1, _K2, _WIN, _SIGMA = 0.01, 0.03, 11, 1.5


def psnr(out: np.ndarray, gt: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(out, np.float64) - np.asarray(gt, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range ** 2 / mse)


def l1(out: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(out, np.float64) - np.asarray(gt, np.float64))))


def l1_hole(out: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    hole = np.asarray(mask) > 0.5
    if not hole.any():
        return 0.0
    diff = np.abs(np.asarray(out, np.float64) - np.asarray(gt, np.float64))
    return float(diff[hole].mean())


def _gaussian_1d(device=None, dtype=torch.float64) -> torch.Tensor:
    coords = torch.arange(_WIN, dtype=dtype, device=device) - (_WIN - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * _SIGMA ** 2))
    return g / g.sum()


def ssim_torch(out: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM for N×C×H×W tensors (channels averaged); returns a length-N tensor."""
    n, c, h, w = out.shape
    if min(h, w) < _WIN:
        raise InpaintBenchError(f"SSIM needs images of at least {_WIN}x{_WIN} pixels, got {w}x{h}")
    # the 11x11 Gaussian is the outer product g g^T: filter rows then columns (the same values up
    # to rounding, ~8x less work than the 2-D window: float64 depthwise convs are slow on CPU)
    g = _gaussian_1d(out.device, out.dtype)
    g_rows, g_cols = g.view(1, 1, _WIN, 1).expand(c, 1, _WIN, 1), g.view(1, 1, 1, _WIN).expand(c, 1, 1, _WIN)
    filt = lambda x: F.conv2d(F.conv2d(x, g_rows, groups=c), g_cols, groups=c)  # 'valid', as skimage crops the border
    mu_x, mu_y = filt(out), filt(gt)
    sxx = filt(out * out) - mu_x ** 2
    syy = filt(gt * gt) - mu_y ** 2
    sxy = filt(out * gt) - mu_x * mu_y
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3))


def ssim(out: np.ndarray, gt: np.ndarray, data_range: float = 1.0) -> float:
    a = torch.from_numpy(np.asarray(out, np.float64)).permute(2, 0, 1)[None]
    b = torch.from_numpy(np.asarray(gt, np.float64)).permute(2, 0, 1)[None]
    return float(ssim_torch(a, b, data_range)[0])


def image_metrics(out: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(out, gt), "ssim": ssim(out, gt), "l1": l1(out, gt), "l1_hole": l1_hole(out, gt, mask)}


METRICS = ("psnr", "ssim", "l1", "l1_hole")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "l1": False, "l1_hole": False, "mae": False, "fid": False}
