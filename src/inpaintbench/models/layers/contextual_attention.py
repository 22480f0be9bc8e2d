"""Contextual attention (Yu et al. 2018, "Generative image inpainting with contextual attention",
Sec. 3.1 of the paper's method section "Contextual Attention", used by DeepFill v2's refinement
branch, Yu et al. 2019 Sec. 3.1 / Fig. 3).

Steps, each named as in the paper:

1. *Match* (Eq. 1): extract k×k patches of the background b (here: the whole feature map; a patch
   counts as background only if it lies entirely in the known region) and of the foreground f,
   and score every pair by the similarity of the released code (JiahuiYu/generative_inpainting
   inpaint_ops.py contextual_attention: conv2d of the raw foreground with normalised patches)
       s_{x,y,x',y'} = < f_{x,y},  b_{x',y'} / max(||b_{x',y'}||, 1e-4) >
   (the paper's Eq. 1 writes the cosine, normalising f_{x,y} too).
   The paper implements this as a convolution of f with the normalised background patches; a
   batched matrix product of unfolded patches is the same sum and keeps every sample separate.
2. *Attention propagation*: the score map is convolved with an identity matrix of size k_fuse,
   i.e. s'_{x,y,x',y'} = Σ_i s_{x+i,y,x'+i,y'} (left-right), then the same top-down, so that a
   shift of a coherent region scores higher than isolated matches.
3. *Scaled softmax* over the background positions (x', y'):  s* = softmax(λ s'), λ = 10.
4. *Reconstruction*: the raw background patches are the kernels of a transposed convolution
   ("deconvolution") weighted by s*; overlapping contributions are averaged.

Matching runs on features downsampled by `rate` (2 in the paper, to save memory); the raw
patches used for reconstruction are then 2·rate × 2·rate with stride `rate` at full resolution.

**Per-sample masks.** The released DeepFill code takes the mask of the first sample for the
whole batch; here every quantity (patch validity, scores, softmax, reconstruction) is computed
per sample, so a batch gives the same result as its samples processed one by one
(tests/test_baselines_deepfill_lama.py checks this).

Choices where the paper is silent (stated beside the code as well):
* only the background patches are normalised, as the released code does (the paper's Eq. 1
  normalises both; the released weights were trained with the code's version, whose foreground
  norm acts as a per-query softmax temperature);
* the features and the mask are downsampled by nearest-neighbour resizing, as the released code
  (TF resize with nearest_neighbor; MMagic F.interpolate), the mask in two steps (to the feature
  size, then by `rate`) as MMagic's refiner and attention module do;
* attention propagation, as the released code, convolves the score matrix over the *flattened*
  (row-major, then column-major) position indices with an identity kernel, so that neighbours
  across a row end count too (``fuse="flat"``; ``fuse="grid"`` shifts on the 2-D grid only);
* reconstruction divides by the actual number of overlapping patches at each pixel (the code
  divides by a constant 4, which is the interior overlap count for rate 2);
* a sample whose mask leaves no fully known patch gets a zero attention output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def propagate_scores(scores: torch.Tensor, h: int, w: int, k: int) -> torch.Tensor:
    """Attention propagation (step 2): sum scores along the diagonal of (fg, bg) shifts.

    scores: (N, L_bg, L_fg) with L = h·w for both (background and foreground share the grid).
    Returns the propagated scores, same shape. Zero outside the map ("same" padding).
    """
    n = scores.shape[0]
    p = k // 2
    s = scores.reshape(n, h, w, h, w)  # (n, y_bg, x_bg, y_fg, x_fg)
    # left-right: shift x_bg and x_fg together
    sp = F.pad(s, (p, p, 0, 0, p, p))  # pads x_fg (dim 4) and x_bg (dim 2)
    s = sum(sp[:, :, p + d:p + d + w, :, p + d:p + d + w] for d in range(-p, p + 1))
    # top-down: shift y_bg and y_fg together
    sp = F.pad(s, (0, 0, p, p, 0, 0, p, p))  # pads y_fg (dim 3) and y_bg (dim 1)
    s = sum(sp[:, p + d:p + d + h, :, p + d:p + d + h, :] for d in range(-p, p + 1))
    return s.reshape(n, h * w, h * w)


def propagate_scores_flat(scores: torch.Tensor, h: int, w: int, k: int) -> torch.Tensor:
    """Attention propagation as the released code (TF contextual_attention, MMagic
    fuse_correlation_map): an identity k×k kernel convolved over the (bg, fg) score matrix with
    positions flattened row-major, then again with positions flattened column-major."""
    n = scores.shape[0]
    eye = torch.eye(k, dtype=scores.dtype, device=scores.device).view(1, 1, k, k)
    s = F.conv2d(scores[:, None], eye, padding=k // 2)                       # along x (row-major)
    s = s.reshape(n, h, w, h, w).permute(0, 2, 1, 4, 3).reshape(n, 1, h * w, h * w)
    s = F.conv2d(s, eye, padding=k // 2)                                     # along y (column-major)
    return s.reshape(n, w, h, w, h).permute(0, 2, 1, 4, 3).reshape(n, h * w, h * w)


class ContextualAttention(nn.Module):
    """y = ContextualAttention(f, b, hole_mask): f and b are N×C×H×W, mask N×1×H'×W' (1 = hole).

    H and W must be multiples of `rate` (and the mask's size a multiple of H/rate, W/rate).
    `rate` is 1 or even. Returns N×C×H×W; with return_attention also the softmax weights
    (N, L_bg, L_fg) on the matching grid.
    """

    def __init__(self, ksize: int = 3, rate: int = 2, fuse_k: int = 3, softmax_scale: float = 10.0,
                 fuse: bool | str = "flat"):
        super().__init__()
        if rate != 1 and rate % 2:
            raise ValueError(f"contextual attention rate must be 1 or even, got {rate}")
        if ksize % 2 == 0 or fuse_k % 2 == 0:
            raise ValueError("contextual attention ksize and fuse_k must be odd")
        self.ksize, self.rate, self.fuse_k = ksize, rate, fuse_k
        if fuse is True:
            fuse = "flat"
        if fuse not in (False, "flat", "grid"):
            raise ValueError(f"contextual attention fuse must be 'flat', 'grid' or False, got {fuse!r}")
        self.softmax_scale, self.fuse = softmax_scale, fuse

    def forward(self, fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor,
                return_attention: bool = False):
        n, c, h, w = bg.shape
        r, k = self.rate, self.ksize
        if h % r or w % r:
            raise ValueError(f"feature size {h}x{w} is not a multiple of the attention rate {r}")
        hd, wd = h // r, w // r
        # matching grid: features downsampled by `rate` (average pooling, see module docstring)
        fg_d = F.interpolate(fg, size=(hd, wd), mode="nearest") if r > 1 else fg
        bg_d = fg_d if bg is fg else (F.interpolate(bg, size=(hd, wd), mode="nearest") if r > 1 else bg)
        hole = mask.to(bg.dtype)
        if hole.shape[-2:] != (h, w):
            hole = F.interpolate(hole, size=(h, w), mode="nearest")
        hole_d = F.interpolate(hole, size=(hd, wd), mode="nearest") if r > 1 else hole

        # step 1: cosine similarity of every fg patch with every bg patch, per sample
        fg_p = F.unfold(fg_d, k, padding=k // 2)  # (n, C·k·k, L), raw (released code)
        bg_p = F.normalize(fg_p if bg is fg else F.unfold(bg_d, k, padding=k // 2), dim=1, eps=1e-4)
        scores = torch.bmm(bg_p.transpose(1, 2), fg_p)  # (n, L_bg, L_fg)
        # a background patch is usable only if it contains no hole pixel (this sample's mask)
        valid = F.unfold(hole_d, k, padding=k // 2).amax(dim=1) == 0  # (n, L_bg)

        # step 2: attention propagation
        if self.fuse == "grid" and self.fuse_k > 1:
            scores = propagate_scores(scores, hd, wd, self.fuse_k)
        elif self.fuse == "flat" and self.fuse_k > 1:
            scores = propagate_scores_flat(scores, hd, wd, self.fuse_k)

        # step 3: scaled softmax over background positions, restricted to known patches
        logits = (scores * self.softmax_scale).masked_fill(~valid[:, :, None], -1e4)
        attn = torch.softmax(logits, dim=1) * valid[:, :, None].to(scores.dtype)

        # step 4: raw full-resolution background patches as deconvolution kernels
        raw_k, pad = (2 * r, r // 2) if r > 1 else (k, k // 2)
        raw = F.unfold(bg, raw_k, stride=r, padding=pad)  # (n, C·raw_k², L_bg)
        cols = torch.bmm(raw, attn)  # (n, C·raw_k², L_fg)
        out = F.fold(cols, (h, w), raw_k, stride=r, padding=pad)
        ones = torch.ones(1, raw_k * raw_k, hd * wd, dtype=bg.dtype, device=bg.device)
        overlap = F.fold(ones, (h, w), raw_k, stride=r, padding=pad)
        out = out / overlap
        return (out, attn) if return_attention else out
