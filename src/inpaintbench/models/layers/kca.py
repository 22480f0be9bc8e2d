"""Knowledge-consistent attention (Li et al. 2020, "Recurrent feature reasoning for image
inpainting", Sec. 3.2 "Knowledge consistent attention").

For the feature map f of recurrence i (every pixel both query and key):

    sim^i_{x,y,x',y'}  = < f_{x,y}/|f_{x,y}| , f_{x',y'}/|f_{x',y'}| >                  (cosine)
    sim'^i_{x,y,x',y'} = Σ_{(p,q) ∈ k×k neighbourhood of (x,y)} sim^i_{p,q,x',y'}        (smoothing)
    score'^i_{x,y,·}   = softmax_{x',y'}(sim'^i_{x,y,·})
    score^i = β · score'^i + (1 - β) · score^{i-1}   where (x,y) was valid in recurrence i-1,
    score^i = score'^i                                elsewhere and at the first recurrence
    f'_{x,y} = Σ_{x',y'} score^i_{x,y,x',y'} f_{x',y'}
    out = Conv1×1([f', f])

The paper writes the blend with a learnable λ as (λ score' + score^{i-1}) / (λ + 1) (initial
λ = 1); we learn β = λ/(λ+1) directly, clamped to [0, 1] (initial 0.5, the same start), so that
β = 1 is exactly plain (memory-less) attention. Keys are all positions of the map (the features
in the hole have been partly filled by the earlier recurrences); the reconstruction uses the raw
features f, as the paper's equation is written. The previous recurrence's scores and validity
are passed in and returned explicitly instead of being kept as module state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KnowledgeConsistentAttention(nn.Module):
    def __init__(self, channels: int, propagate: int = 3, blend: float = 0.5, eps: float = 1e-7):
        super().__init__()
        if propagate < 1 or propagate % 2 == 0:
            raise ValueError(f"propagate must be a positive odd size, got {propagate}")
        self.propagate = propagate
        self.blend = nn.Parameter(torch.tensor(float(blend)))
        self.combine = nn.Conv2d(2 * channels, channels, 1)
        self.eps = eps

    def blend_weight(self) -> torch.Tensor:
        return self.blend.clamp(0.0, 1.0)

    def scores(self, feat: torch.Tensor) -> torch.Tensor:
        """score'^i: (N, L_keys, H, W), softmax over keys for every query position."""
        n, c, h, w = feat.shape
        flat = feat.reshape(n, c, h * w)
        unit = flat / (flat.norm(dim=1, keepdim=True) + self.eps)
        sim = torch.bmm(unit.transpose(1, 2), unit)            # (N, L_query, L_key)
        sim = sim.transpose(1, 2).reshape(n, h * w, h, w)       # keys as channels, queries as pixels
        if self.propagate > 1:
            k = self.propagate
            sim = F.avg_pool2d(sim, k, stride=1, padding=k // 2, count_include_pad=True) * (k * k)
        return torch.softmax(sim, dim=1)

    def forward(self, feat: torch.Tensor, prev_scores: torch.Tensor | None = None,
                prev_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """feat N C H W; prev_valid N 1 H W (1 = the query pixel was valid in recurrence i-1).
        Returns (output features, this recurrence's scores for the next one)."""
        n, c, h, w = feat.shape
        score = self.scores(feat)
        if prev_scores is not None:
            beta = self.blend_weight()
            keep = prev_valid if prev_valid is not None else torch.ones_like(feat[:, :1])
            blended = beta * score + (1 - beta) * prev_scores
            score = keep * blended + (1 - keep) * score
        attended = torch.bmm(feat.reshape(n, c, h * w), score.reshape(n, h * w, h * w)).reshape(n, c, h, w)
        return self.combine(torch.cat([attended, feat], 1)), score
