"""Multi-channel partial convolution (Liu et al. 2018, Sec. 3.1, Eq. 1-2, with a mask per input
channel), the variant CTSDG (``PartialConv2d(multi_channel=True)`` in Xiefan-Guo/CTSDG) and
PSR-Net (``PartialConv`` in sfwyly/PSR-Net) build on.

The mask M has one channel per input channel (1 = valid). For a k×k window

    count  = Σ_{c, window} M                      (all input channels and window positions)
    ratio  = (C_in · k²) / count  where count > 0, else 0
    x'     = W^T (X ⊙ M) · ratio                   (Eq. 1; no bias in either model)
    m'     = clamp(count, 0, 1), repeated over the C_out output channels     (Eq. 2)

Unlike the single-channel layer (layers/partial_conv.py), a decoder that concatenates an
upsampled feature map with an encoder skip also concatenates their masks, so ``count`` weighs each
part by its channel count — what both official implementations do. ``count`` is computed as a
single-channel box filter of the channel-summed mask, which equals the official all-ones
(C_out, C_in, k, k) mask convolution at a fraction of its cost; masks are carried as expanded
views where their channels are equal.

``premultiply`` (CTSDG: True) multiplies X by M before the convolution; PSR-Net's layer does
not (``output = conv(input)``) and instead can skip the re-scaling (``rescale`` False, PSR's
``mul=False``: a plain convolution whose mask is still updated).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiChannelPartialConv2d(nn.Conv2d):
    def __init__(self, *args, premultiply: bool = True, rescale: bool = True, **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        self.premultiply = premultiply
        self.rescale = rescale

    def mask_update(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ratio, new mask) of Eq. 1-2, both N1H'W'."""
        kh, kw = self.kernel_size
        with torch.no_grad():
            summed = mask.sum(1, keepdim=True)
            window = torch.ones(1, 1, kh, kw, device=mask.device, dtype=mask.dtype)
            count = F.conv2d(summed, window, stride=self.stride, padding=self.padding, dilation=self.dilation)
            new_mask = count.clamp(0.0, 1.0)
            ratio = (mask.shape[1] * kh * kw) / (count + 1e-8) * new_mask
        return ratio, new_mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ratio, new_mask = self.mask_update(mask)
        raw = super().forward(x * mask if self.premultiply else x)
        if self.rescale:
            if self.bias is not None:
                b = self.bias.view(1, -1, 1, 1)
                raw = ((raw - b) * ratio + b) * new_mask
            else:
                raw = raw * ratio
                if not self.premultiply:   # PSR: output * ratio * update_mask
                    raw = raw * new_mask
        return raw, new_mask.expand(-1, self.out_channels, -1, -1)
