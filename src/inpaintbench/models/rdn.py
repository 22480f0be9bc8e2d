"""RDN, a comparison system of CCSA's Table 2.

Identification: "RDN in CCSA Table 2 most likely = Residual Dense Network; the CCSA reference list
is not in our copy". We implement the Residual Dense Network (Zhang, Tian, Kong, Zhong, Fu, CVPR
2018, "Residual dense network for image super-resolution"; TPAMI 2021 "Residual dense network
for image restoration"), applied to inpainting as an image-restoration network at scale 1: its
input is the masked image and the mask, [Ĩ, M] (4 channels), its output the restored image.
If CCSA's "RDN" is another system, this row compares against the wrong method; the report's
caption says so.

Network (CVPR 2018, Sec. 3, Fig. 2-3; equation numbers of that paper):
* Shallow feature extraction: two 3×3 convs, F_{-1} = H_SFE1(I), F_0 = H_SFE2(F_{-1}) (Eq. 1-2).
* D residual dense blocks (Sec. 3.2, Fig. 3): in block d, conv layer c (3×3, ReLU, growth G)
  sees the concatenation of the block input and every earlier layer's output,
  F_{d,c} = σ(W_{d,c}[F_{d-1}, F_{d,1}, ..., F_{d,c-1}]) (Eq. 3, contiguous memory);
  local feature fusion, a 1×1 conv over [F_{d-1}, F_{d,1}, ..., F_{d,C}] back to G0 channels
  (Eq. 4); local residual learning F_d = F_{d-1} + F_{d,LF} (Eq. 5).
* Dense feature fusion: global feature fusion over [F_1, ..., F_D] by a 1×1 conv then a 3×3 conv
  (Eq. 6-7), global residual learning F_DF = F_{-1} + F_GF (Eq. 7).
* Reconstruction: at scale 1 there is no up-sampling net (the TPAMI restoration setting); a
  3×3 conv maps F_DF to RGB (linear output).
Loss: the L1 loss the paper trains with (Sec. 4.1 / 5.1), mean |I_out - I_gt| over the image.

Sizes: the paper's final RDN is D = 16, C = 8, G = 64, G0 = 64 (the "RDN_D16C8G64" setting of
the authors' released models; Sec. 5 studies D20C6G32 too): 21,976,259 parameters here (the SR
model's ≈ 22 M less its up-sampler, with 4 input channels and no scale). Small class default:
D = 2, C = 3, G = 8, G0 = 16 (17,923 parameters); the built-in 64×64 run (params.yaml `rdn`) uses
D = 2, C = 2, G = 8, G0 = 8 (5,707 parameters, half the CPU step): every layer runs at full
resolution, so the layer count sets the CPU cost.

Memory: every block's growing concatenation is kept for the backward pass, ≈ 16 x 3,400 channels
x 128² x 4 B = 3.6 GB per 128 px image at the paper's size. ``checkpoint`` (true / false /
"auto", default; not part of the method) keeps only each RDB's input and recomputes the block in
the backward pass (`torch.utils.checkpoint`, non-reentrant; `layers.semantic_prior.dense_checkpoint`:
"auto" only where a block's concatenation is large, so the built-in model keeps its speed). The
blocks are conv + ReLU only (no batch norm, no dropout), so the recomputation is exact: outputs
and gradients equal (tests/test_dense_checkpoint.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from .base import BuildContext, InpaintModel, StepOutput
from .layers.semantic_prior import check_checkpoint_arg, dense_checkpoint
from .registry import register


class RDB(nn.Module):
    """Residual dense block (Sec. 3.2, Eq. 3-5): C densely connected 3×3 conv + ReLU layers,
    local feature fusion (1×1 conv) and local residual learning."""

    def __init__(self, g0: int, growth: int, layers: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(g0 + c * growth, growth, 3, padding=1), nn.ReLU(inplace=True))
            for c in range(layers))
        self.lff = nn.Conv2d(g0 + layers * growth, g0, 1)
        self.concat_channels = g0 + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x
        for conv in self.convs:
            feats = torch.cat([feats, conv(feats)], 1)      # Eq. 3: contiguous memory
        return x + self.lff(feats)                          # Eq. 4-5


class RDN(InpaintModel):
    def __init__(self, blocks: int = 2, layers: int = 3, growth: int = 8, g0: int = 16, in_channels: int = 4,
                 checkpoint: bool | str = "auto"):
        super().__init__()
        if min(blocks, layers, growth, g0) < 1:
            raise InpaintBenchError("rdn: blocks, layers, growth and g0 must be >= 1; fix models.<name>.args")
        try:
            self.checkpoint = check_checkpoint_arg(checkpoint, "rdn")
        except ValueError as e:
            raise InpaintBenchError(f"{e}; fix models.<name>.args") from None
        self.sfe1 = nn.Conv2d(in_channels, g0, 3, padding=1)          # Eq. 1
        self.sfe2 = nn.Conv2d(g0, g0, 3, padding=1)                   # Eq. 2
        self.rdbs = nn.ModuleList(RDB(g0, growth, layers) for _ in range(blocks))
        self.gff = nn.Sequential(nn.Conv2d(blocks * g0, g0, 1), nn.Conv2d(g0, g0, 3, padding=1))  # Eq. 6
        self.out = nn.Conv2d(g0, 3, 3, padding=1)

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f_m1 = self.sfe1(torch.cat([image_in * (1 - mask), mask], 1))
        x = self.sfe2(f_m1)
        local = []
        for rdb in self.rdbs:
            x = dense_checkpoint(rdb, x, self.checkpoint, rdb.concat_channels)
            local.append(x)
        x = self.gff(torch.cat(local, 1)) + f_m1                     # Eq. 7: global residual
        return self.out(x)

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        pred = self(image * (1 - mask), mask)
        l1 = F.l1_loss(pred, image)
        return StepOutput(l1, {"l1": l1.detach()}, pred)


@register("rdn")
def build(args: dict, loss: dict, ctx: BuildContext) -> RDN:
    if loss.get("weights"):
        raise InpaintBenchError("rdn: its only loss is L1 (no weights to set); remove models.<name>.loss")
    return RDN(**args)
