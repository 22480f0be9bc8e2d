"""Partial-convolution U-Net (Liu et al. 2018, Sec. 3.3 "Network design"): the learned baseline.

Encoder: `depth` stride-2 partial convolutions with kernels 7, 5, 5, 3, 3, ... (ReLU; BN on all but
the first). Decoder: nearest ×2 upsampling of features *and* mask, concatenation with the encoder
skip (features and masks), partial conv 3×3 with LeakyReLU(0.2); the last layer sees the input
image and has no BN/activation. Width doubles per level up to 8× `base` (512 at published size:
base 64, depth 8, ~32.9 M parameters at 512×512 input). Losses: Eq. 8 (train/losses.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..train.perceptual import build_backbone
from .base import BuildContext, PConvLossModel
from .layers.partial_conv import PartialConvBlock
from .registry import register


class PConvUNet(PConvLossModel):
    def __init__(self, base: int = 16, depth: int = 4, backbone: nn.Module | None = None,
                 loss_weights: dict | None = None):
        super().__init__()
        kernels = [7, 5, 5] + [3] * max(0, depth - 3)
        widths = [min(base * 2 ** i, base * 8) for i in range(depth)]
        self.enc = nn.ModuleList()
        cin = 3
        for i in range(depth):
            self.enc.append(PartialConvBlock(cin, widths[i], kernels[i], stride=2, bn=i > 0, act="relu"))
            cin = widths[i]
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            skip = widths[i - 1] if i > 0 else 3
            cout = widths[i - 1] if i > 0 else 3
            last = i == 0
            self.dec.append(PartialConvBlock(cin + skip, cout, 3, bn=not last, act="none" if last else "leaky"))
            cin = cout
        self.backbone = backbone
        self.loss_weights = loss_weights or {}

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, valid = image_in, 1 - mask  # partial conv wants 1 = known
        skips = [(x, valid)]
        for block in self.enc:
            x, valid = block(x, valid)
            skips.append((x, valid))
        skips.pop()
        for block in self.dec:
            s, sv = skips.pop()
            x = F.interpolate(x, size=s.shape[-2:], mode="nearest")
            valid = F.interpolate(valid, size=s.shape[-2:], mode="nearest")
            # the concatenated mask is the union of valid positions of both inputs
            x, valid = block(torch.cat([x, s], 1), torch.clamp(valid + sv, max=1.0))
        return x


@register("pconv_unet")
def build(args: dict, loss: dict, ctx: BuildContext) -> PConvUNet:
    backbone = build_backbone(ctx.perceptual, ctx)
    return PConvUNet(backbone=backbone, loss_weights=loss.get("weights"), **args)
