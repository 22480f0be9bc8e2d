"""Knowledge-consistent attention (Li et al. 2020, "Recurrent feature reasoning for image
inpainting", Sec. 3.2 "Knowledge consistent attention").

For the feature map f of recurrence i (every pixel both query and key), as the official code
computes it (jingyuanli001/RFR-Inpainting modules/Attention.py):

    k̂_{x',y'}           = (f_{x',y'} + ε) / |f_{x',y'} + ε|        (keys normalised, ε = 1e-7)
    sim^i_{x,y,x',y'}    = < f_{x,y} , k̂_{x',y'} >                   (queries are NOT normalised)
    sim'^i_{x,y,x',y'}   = Σ_{(p,q) ∈ 3×3 neighbourhood of (x,y)} sim^i_{p,q,x',y'}   (propagation;
                           zero padding, the official avg_pool2d(3, 1, 1)·9)
    score'^i_{x,y,·}     = softmax_{x',y'}(sim'^i_{x,y,·})
    score^i              = (m^{i-1} score^{i-1} + |λ| score'^i) / (m^{i-1} + |λ|)      (|λ| + 1e-7)
    f'_{x,y}             = Σ_{x',y'} score^i_{x,y,x',y'} k̂_{x',y'}   (reconstruction from the
                           normalised keys)
    out                  = Conv1×1([f', f])

m^{i-1} is the previous recurrence's validity mask at this resolution (nearest-neighbour resized,
as the official F.interpolate), so the blend is the paper's (λ score' + score^{i-1}) / (λ + 1)
on pixels valid in recurrence i-1 and plain attention elsewhere; λ starts at 1 and is learned.
The previous recurrence's scores and mask are passed in and returned explicitly instead of being
kept as module state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KnowledgeConsistentAttention(nn.Module):
    def __init__(self, channels: int, propagate: int = 3, ratio: float = 1.0, eps: float = 1e-7):
        super().__init__()
        if propagate < 1 or propagate % 2 == 0:
            raise ValueError(f"propagate must be a positive odd size, got {propagate}")
        self.propagate = propagate
        self.ratio = nn.Parameter(torch.tensor(float(ratio)))  # λ of Sec. 3.2 (official `ratio`)
        self.combine = nn.Conv2d(2 * channels, channels, 1)
        self.eps = eps

    def keys(self, feat: torch.Tensor) -> torch.Tensor:
        """k̂: (N, C, L) unit key vectors (the official adds 1e-7 before normalising)."""
        flat = feat.flatten(2) + self.eps
        return flat / flat.pow(2).sum(1, keepdim=True).sqrt()

    def scores(self, feat: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """score'^i: (N, L_keys, H, W), softmax over keys for every query position."""
        n, c, h, w = feat.shape
        keys = self.keys(feat) if keys is None else keys
        sim = torch.bmm(keys.transpose(1, 2), feat.flatten(2)).reshape(n, h * w, h, w)  # keys as channels
        if self.propagate > 1:
            k = self.propagate
            sim = F.avg_pool2d(sim, k, stride=1, padding=k // 2, count_include_pad=True) * (k * k)
        return torch.softmax(sim, dim=1)

    def forward(self, feat: torch.Tensor, prev_scores: torch.Tensor | None = None,
                prev_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """feat N C H W; prev_valid N 1 H W (1 = the pixel was valid in recurrence i-1).
        Returns (output features, this recurrence's scores for the next one)."""
        n, c, h, w = feat.shape
        keys = self.keys(feat)
        score = self.scores(feat, keys)
        if prev_scores is not None:
            lam = self.ratio.abs() + 1e-7
            keep = prev_valid if prev_valid is not None else torch.ones_like(feat[:, :1])
            score = (prev_scores * keep + score * lam) / (keep + lam)
        attended = torch.bmm(keys, score.reshape(n, h * w, h * w)).reshape(n, c, h, w)
        return self.combine(torch.cat([attended, feat], 1)), score
