"""Edge maps for EdgeConnect (Nazeri et al. 2019, Sec. 3.1 and Sec. 4 "Training setup": Canny
edges, the smoothing sigma of the Canny detector is a parameter, 2 by default in the paper).

Edges are computed on the CPU with scikit-image's ``skimage.feature.canny`` (not differentiable,
never part of the graph) from the greyscale image (``skimage.color.rgb2gray`` weights).

* ``known_region_edges``: what G1 sees, C̃ = edges of the *known* region only. The detector runs
  with ``mask=known`` (scikit-image smooths with the mask and erodes it by one pixel), so the
  hole contributes nothing: edges inside the hole are zero, and the hole border does not create
  a spurious edge. The result depends only on the known pixels, so it is the same at training
  time (from the ground truth) and at inference (from the masked input).
* ``full_edges``: C_gt = edges of the whole ground-truth image, the target that the edge
  discriminator D1 sees as "real" (Eq. 1-2).
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.feature import canny

RGB2GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray


def rgb_to_gray(image: torch.Tensor) -> torch.Tensor:
    """N3HW RGB in [0, 1] -> N1HW luminance in [0, 1]."""
    w = torch.tensor(RGB2GRAY_WEIGHTS, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def _canny_batch(gray: torch.Tensor, sigma: float, low: float | None, high: float | None,
                 known: torch.Tensor | None) -> torch.Tensor:
    g = gray.detach().float().cpu().numpy()[:, 0]
    k = None if known is None else (known.detach().cpu().numpy()[:, 0] > 0.5)
    edges = np.zeros_like(g, dtype=np.float32)
    for i in range(g.shape[0]):
        region = None if k is None else k[i]
        if region is not None and not region.any():
            continue  # nothing known: no edges
        edges[i] = canny(g[i], sigma=sigma, low_threshold=low, high_threshold=high, mask=region)
    return torch.from_numpy(edges).unsqueeze(1).to(device=gray.device, dtype=gray.dtype)


def full_edges(gray: torch.Tensor, sigma: float = 2.0, low: float | None = None,
               high: float | None = None) -> torch.Tensor:
    """C_gt: Canny edges of the whole greyscale image, N1HW in {0, 1}."""
    return _canny_batch(gray, sigma, low, high, None)


def known_region_edges(gray: torch.Tensor, hole: torch.Tensor, sigma: float = 2.0,
                       low: float | None = None, high: float | None = None) -> torch.Tensor:
    """C̃: Canny edges computed on the known region only (hole = 1 is ignored), zero in the hole."""
    known = 1.0 - hole
    return _canny_batch(gray, sigma, low, high, known) * known
