"""Convolutional blocks of the CCSA network (/work/shared/papers/ccsa_cross_scale_semantic_attention.txt):
basic block (Sec. 3.1, Fig. 2), multi-scale feature selection and fusion (Sec. 3.4, Eq. 7-9),
semantic residual attention (Sec. 3.1, SRA). Figures 1-2 are not in the text we have; the
choices below follow the prose and are stated beside the code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .partial_conv import PartialConvBlock


class BasicBlock(nn.Module):
    """BB (Sec. 3.1, Fig. 2): one scale of the network, built from partial convolutions.

    "We split each input into two paths ... the two channels are pooled maximum and on
    average": path A is `depth` 3x3 partial convs, path B a 5x5 then `depth-1` 3x3 dilation-2
    partial convs (a wider receptive field; the paper does not give the paths' kernels). The
    first conv of each path has stride `stride` (one BB per scale). The two outputs are pooled
    channel by channel across the paths (element-wise max and mean), the two pooled maps are
    concatenated (2C) and a 1x1 conv + BN + ReLU brings them back to C (our choice, keeps the
    widths of adjacent BBs independent). The valid mask out is the union of the paths' masks.
    """

    def __init__(self, cin: int, cout: int, depth: int = 1, stride: int = 2):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.path_a = nn.ModuleList(
            [PartialConvBlock(cin, cout, 3, stride=stride)]
            + [PartialConvBlock(cout, cout, 3) for _ in range(depth - 1)])
        self.path_b = nn.ModuleList(
            [PartialConvBlock(cin, cout, 5, stride=stride)]
            + [PartialConvBlock(cout, cout, 3, dilation=2) for _ in range(depth - 1)])
        self.fuse = nn.Sequential(nn.Conv2d(2 * cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    @staticmethod
    def _run(path: nn.ModuleList, x: torch.Tensor, valid: torch.Tensor):
        for block in path:
            x, valid = block(x, valid)
        return x, valid

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, valid_a = self._run(self.path_a, x, valid)
        b, valid_b = self._run(self.path_b, x, valid)
        pooled = torch.cat([torch.maximum(a, b), 0.5 * (a + b)], 1)
        return self.fuse(pooled), torch.maximum(valid_a, valid_b)


class SemanticResidualAttention(nn.Module):
    """SRA (Sec. 3.1): passes the semantic residual of BB_j on to BB_{j+1}.

    The paper only says SRA "realizes the transmission of semantic residuals across adjacent BB
    modules". Our reading: the BB_j output is average-pooled to BB_{j+1}'s grid and projected by
    a 1x1 conv (r); a channel attention from the per-channel mean and max of r (shared two-layer
    1x1 MLP, sigmoid) gates it; the gated residual is added to BB_{j+1}'s output, then ReLU:
        f_{j+1} <- ReLU(f_{j+1} + sigmoid(MLP(avg r) + MLP(max r)) * r)
    """

    def __init__(self, cin: int, cout: int, reduction: int = 4):
        super().__init__()
        hidden = max(cout // reduction, 1)
        self.proj = nn.Conv2d(cin, cout, 1, bias=False)
        self.mlp = nn.Sequential(nn.Conv2d(cout, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1))

    def forward(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        r = self.proj(F.adaptive_avg_pool2d(prev, cur.shape[-2:]))
        gate = torch.sigmoid(self.mlp(r.mean((2, 3), keepdim=True)) + self.mlp(r.amax((2, 3), keepdim=True)))
        return F.relu(cur + gate * r)


class MultiScaleFusion(nn.Module):
    """Multi-scale feature selection and fusion (Sec. 3.4, Eq. 7-9).

    Eq. 7: ff = sum_r g_r(f), g_r a 3x3 conv with dilation r in {1, 2, 4, 8} (+ ReLU).
    Eq. 8: F = sum_r g_r(f) * s_r. The scores s_{r,x,y} carry a position index, so we read
    "the maximum and average values for each channel" as the max and mean over the channels
    of ff at every position (a 2-channel map); a 3x3 conv turns it into one logit per scale
    and a softmax across the scales gives s_r (they sum to 1 at every position).
    Eq. 9: out = Phi([F, F_high]), Phi a 1x1 conv (+ ReLU) over the concatenation with the
    high-level features, nearest-upsampled to this scale.
    """

    rates = (1, 2, 4, 8)

    def __init__(self, channels: int, high_channels: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=r, dilation=r), nn.ReLU(inplace=True))
            for r in self.rates)
        self.scale_logits = nn.Conv2d(2, len(self.rates), 3, padding=1)
        self.phi = nn.Sequential(nn.Conv2d(channels + high_channels, channels, 1), nn.ReLU(inplace=True))

    def forward(self, f: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        outs = [branch(f) for branch in self.branches]
        ff = torch.stack(outs, 1)  # [B, R, C, H, W]
        summed = ff.sum(1)  # Eq. 7
        stats = torch.cat([summed.amax(1, keepdim=True), summed.mean(1, keepdim=True)], 1)
        s = torch.softmax(self.scale_logits(stats), dim=1)  # [B, R, H, W]
        fused = (ff * s.unsqueeze(2)).sum(1)  # Eq. 8
        high_up = F.interpolate(high, size=f.shape[-2:], mode="nearest")
        return self.phi(torch.cat([fused, high_up], 1))  # Eq. 9
