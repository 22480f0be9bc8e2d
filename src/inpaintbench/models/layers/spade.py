"""Spatially-adaptive normalisation (SPADE, Park et al. 2019) as SAHN's MSF uses it.

SAHN Sec. 3.1, Eq. λ^n, θ^n = MSF(F_str^n); F_out^n = λ^n ⊙ IN(F_text) + θ^n, and Fig. 3A: the
semantic structure is projected to an embedding (3×3 conv + ReLU), then two 3×3 convolutions give
the spatial tensors λ^n and θ^n. IN is parameter-free instance normalisation.
Choice: λ is parameterised as 1 + γ (γ the conv output), SPADE's own parameterisation of the same
formula, so that a freshly initialised block does not scale its input towards zero.

`SPADEResBlock` is Fig. 3B(a): [SPADE → LeakyReLU(0.2) → conv] twice plus a shortcut (learned
SPADE → 1×1 conv when the width changes), with the two 3×3 convolutions deformable (MSF point 3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sahn_deform import DeformableConv2d


class SPADE(nn.Module):
    def __init__(self, channels: int, cond_channels: int, hidden: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.embed = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.to_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.to_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def modulation(self, cond: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ, θ) at `size`; `cond` is resized (nearest) if it is not already there."""
        if cond.shape[-2:] != tuple(size):
            cond = F.interpolate(cond, size=size, mode="nearest")
        h = self.embed(cond)
        return 1.0 + self.to_gamma(h), self.to_beta(h)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        lam, theta = self.modulation(cond, x.shape[-2:])
        return lam * self.norm(x) + theta


class SPADEResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_channels: int, hidden: int, deform_backend: str = "auto"):
        super().__init__()
        mid = min(cin, cout)
        self.norm_0 = SPADE(cin, cond_channels, hidden)
        self.conv_0 = DeformableConv2d(cin, mid, 3, backend=deform_backend)
        self.norm_1 = SPADE(mid, cond_channels, hidden)
        self.conv_1 = DeformableConv2d(mid, cout, 3, backend=deform_backend)
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.norm_s = SPADE(cin, cond_channels, hidden)
            self.conv_s = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return skip + dx
