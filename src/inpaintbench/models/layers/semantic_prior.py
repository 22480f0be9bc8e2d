"""Building blocks of SPL (Zhang et al., IJCAI 2021) and SPN (Zhang et al., Pattern Recognition 2023).

Both papers build on region normalisation (RN, Yu et al., AAAI 2020) in the image branch, a
residual-dense semantic prior learner (RDN blocks, Zhang et al. CVPR 2018) and SPADE-modulated
residual blocks (Park et al. 2019) that inject the learned priors into the generator. Layer
layouts follow the official code (WendongZh/SPL, WendongZh/SPN `networks.py`, `rn.py`); every
width is a parameter so the built-in suite can run a tiny version.

* `RegionNorm` — RN-B (RN paper Eq. 2–3): per sample and channel, the hole region and the valid
  region are normalised with their own mean and variance, x̂ = (x − μ_r)/√(σ_r² + ε) for x in r,
  then each region gets its own affine (1 + γ_r, β_r), zero-initialised as in the official code.
  The official code computes the same by filling the outside of a region with its mean, applying
  instance norm and rescaling by √(|r|/HW); we compute the region statistics directly.
* `LearnableRegionNorm` — RN-L (RN paper Sec. 3.3): a spatial response map
  s = sigmoid(conv7×7([mean_c x, max_c x])), regions {s ≥ t} (t = 0.8, detached), RN over them,
  then a spatial affine (1 + γ(s), β(s)) from two 7×7 convolutions of s.
* `ResidualDenseBlock` — RDB: densely connected 3×3 conv + ReLU layers, 1×1 local fusion and a
  local residual. Its growing concatenations are most of what the trunk keeps for the backward
  pass (issue 11: 184 of SPL-pub's 462 MiB per 128 px image); ``checkpoint`` (see
  `dense_checkpoint`) keeps only each block's input and recomputes the block in the backward pass.
* `ReflectResBlock` — reflection-padded conv–ReLU–conv residual block without normalisation.
* `SPADEResBlock` — SPL's ``ResnetBlock_Spade``: [SPADE → ReLU → (dilated) conv] twice + identity.
* `SPADEUpBlock` — SPN's ``ResnetBlock_Spade_MaskG``: [SPADE → LeakyReLU(0.2) → conv] twice with a
  learned SPADE → conv shortcut when the width changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .spade import SPADE

#: checkpoint="auto": recompute a dense block only where its final concatenation holds at least
#: this many elements per image (1 MiB in fp32): SPL/SPN-pub's trunk from 128 px images on
#: (448 x 32² = 459 k), RDN-pub at any size (576 x 64² = 2.4 M at 64 px), never the built-in
#: models (SPL/SPN: 24 x 16² = 6 k; RDN: 24 x 64² = 98 k), which keep their speed.
DENSE_CHECKPOINT_MIN_ELEMENTS = 1 << 18
CHECKPOINT_CHOICES = (True, False, "auto")


def check_checkpoint_arg(value, name: str):
    """`checkpoint` model arg: true, false or 'auto'; raises ValueError otherwise."""
    if value not in CHECKPOINT_CHOICES or isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{name} checkpoint must be true, false or 'auto', got {value!r}")
    return value


def dense_checkpoint(block: nn.Module, x: torch.Tensor, mode, out_channels: int) -> torch.Tensor:
    """block(x), through `torch.utils.checkpoint` (non-reentrant) where `mode` says so: True,
    or "auto" and the block's final concatenation (`out_channels` x H x W per image) is at least
    DENSE_CHECKPOINT_MIN_ELEMENTS. The math is unchanged (same ops recomputed; outputs and
    gradients equal: tests/test_dense_checkpoint.py). Only used on conv + ReLU blocks: no batch
    norm (its running statistics would be updated twice) and no dropout in them; the RNG state is
    preserved anyway (torch's default)."""
    use = mode is True or (mode == "auto" and out_channels * x.shape[-2] * x.shape[-1] >= DENSE_CHECKPOINT_MIN_ELEMENTS)
    if use and torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters())):
        return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
    return block(x)


def region_normalize(x: torch.Tensor, regions: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Σ_r 1_r ⊙ (x − μ_r) / √(σ_r² + ε) over the two regions {regions = 1} and {regions = 0}
    (per sample and channel; `regions` N1HW or NCHW, binary)."""
    out = torch.zeros_like(x)
    for r in (regions, 1 - regions):
        area = r.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
        mean = (x * r).sum(dim=(2, 3), keepdim=True) / area
        var = (((x - mean) * r) ** 2).sum(dim=(2, 3), keepdim=True) / area
        out = out + r * (x - mean) / torch.sqrt(var + eps)
    return out


class RegionNorm(nn.Module):
    """RN-B with region-wise affine parameters; `mask` (1 = hole) is resized (nearest) to x."""

    def __init__(self, channels: int):
        super().__init__()
        self.hole_gamma = nn.Parameter(torch.zeros(channels))
        self.hole_beta = nn.Parameter(torch.zeros(channels))
        self.valid_gamma = nn.Parameter(torch.zeros(channels))
        self.valid_beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = F.interpolate(mask, size=x.shape[-2:], mode="nearest").detach()
        xn = region_normalize(x, m)
        view = lambda p: p.view(1, -1, 1, 1)  # noqa: E731
        hole = (xn * m) * (1 + view(self.hole_gamma)) + view(self.hole_beta)
        valid = (xn * (1 - m)) * (1 + view(self.valid_gamma)) + view(self.valid_beta)
        return hole + valid


class LearnableRegionNorm(nn.Module):
    def __init__(self, channels: int, threshold: float = 0.8, kernel: int = 7):
        super().__init__()
        pad = kernel // 2
        self.response = nn.Conv2d(2, 1, kernel, padding=pad, bias=False)
        self.to_gamma = nn.Conv2d(1, 1, kernel, padding=pad)
        self.to_beta = nn.Conv2d(1, 1, kernel, padding=pad)
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.response(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        regions = (s.detach() >= self.threshold).float()
        return region_normalize(x, regions) * (1 + self.to_gamma(s)) + self.to_beta(s)


class ResidualDenseBlock(nn.Module):
    def __init__(self, channels: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Conv2d(channels + growth * i, growth, 3, padding=1) for i in range(layers))
        self.fuse = nn.Conv2d(channels + growth * layers, channels, 1)
        self.concat_channels = channels + growth * layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x
        for conv in self.layers:
            feats = torch.cat([feats, F.relu(conv(feats))], 1)
        return x + self.fuse(feats)


class ResidualDenseTrunk(nn.Module):
    """`count` RDBs, global feature fusion (1×1 over all RDB outputs, then 3×3) and the global
    residual to the trunk's input (official SPL ``rdbs`` + ``gff`` + ``x_sm``). ``checkpoint``
    (true / false / "auto"): recompute each RDB in the backward pass (`dense_checkpoint`)."""

    def __init__(self, channels: int, count: int, growth: int, layers: int, checkpoint: bool | str = "auto"):
        super().__init__()
        self.head = nn.Conv2d(channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualDenseBlock(channels, growth, layers) for _ in range(count))
        self.fusion = nn.Sequential(nn.Conv2d(channels * count, channels, 1), nn.Conv2d(channels, channels, 3, padding=1))
        self.checkpoint = check_checkpoint_arg(checkpoint, "residual-dense trunk")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        outs = []
        for block in self.blocks:
            h = dense_checkpoint(block, h, self.checkpoint, block.concat_channels)
            outs.append(h)
        return self.fusion(torch.cat(outs, 1)) + x


def reflect_conv(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(dilation * (k // 2)), nn.Conv2d(cin, cout, k, dilation=dilation))


class ReflectResBlock(nn.Module):
    def __init__(self, channels: int, hidden: int | None = None, out: int | None = None, dilation: int = 1,
                 learned_shortcut: bool = False):
        super().__init__()
        hidden = hidden or channels
        out = out or channels
        self.body = nn.Sequential(reflect_conv(channels, out if learned_shortcut else hidden, 3, dilation),
                                  nn.ReLU(inplace=True),
                                  reflect_conv(out if learned_shortcut else hidden, out, 3, 1))
        # SPN's ResnetBlock_withshort: a 3×3 conv shortcut when the width changes
        self.shortcut = reflect_conv(channels, out, 3, dilation) if learned_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class SPADEResBlock(nn.Module):
    def __init__(self, channels: int, cond_channels: int, hidden: int, spade_hidden: int, dilation: int = 2):
        super().__init__()
        self.norm1 = SPADE(channels, cond_channels, spade_hidden)
        self.conv1 = reflect_conv(channels, hidden, 3, dilation)
        self.norm2 = SPADE(hidden, cond_channels, spade_hidden)
        self.conv2 = reflect_conv(hidden, channels, 3, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x, cond)))
        return x + self.conv2(F.relu(self.norm2(h, cond)))


class SPADEUpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_channels: int, spade_hidden: int):
        super().__init__()
        mid = min(cin, cout)
        self.norm1 = SPADE(cin, cond_channels, spade_hidden)
        self.conv1 = nn.Conv2d(cin, mid, 3, padding=1)
        self.norm2 = SPADE(mid, cond_channels, spade_hidden)
        self.conv2 = nn.Conv2d(mid, cout, 3, padding=1)
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.norm_s = SPADE(cin, cond_channels, spade_hidden)
            self.conv_s = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        h = self.conv1(F.leaky_relu(self.norm1(x, cond), 0.2))
        return skip + self.conv2(F.leaky_relu(self.norm2(h, cond), 0.2))
