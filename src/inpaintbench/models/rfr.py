"""RFR-Net (Li et al. 2020, "Recurrent feature reasoning for image inpainting", CVPR), a baseline
of the benchmark, written from the paper's description (section numbers of the CVPR paper).

Pipeline (Sec. 3, Fig. 2):
1. Feature mapping: two partial convolutions (7×7 stride 2, 7×7) map the masked image into a
   feature map at half resolution, carrying the partial-conv validity mask.
2. Recurrent feature reasoning module (Sec. 3.1), run ``recurrences`` times with shared weights:
   * area identification (Sec. 3.1.1): two 7×7 partial convolutions; the partial-conv mask
     update (layers/partial_conv.py, Liu et al. Eq. 2) grows the valid region, and the newly
     valid ring is the area this recurrence fills;
   * feature reasoning (Sec. 3.1.2): an encoder-decoder (3 stride-2 convs doubling the width,
     3 dilated convs, decoder with skip connections) with knowledge-consistent attention
     (Sec. 3.2, layers/kca.py) in the decoder at 1/4 of the module's resolution; its output is
     kept only where the updated mask is valid (F^i = FR(·) ⊙ M^i).
   The attention scores of each recurrence are passed to the next (Sec. 3.2).
3. Adaptive feature merging (Sec. 3.1.3): F̄ = Σ_i F^i / Σ_i M^i over the recurrences (positions
   never filled stay 0). We merge the recurrences' outputs only, as the equation is written.
4. Decoding (Sec. 3.3): a 4×4 transposed conv back to full resolution, concatenation with the
   masked input image, a 3×3 partial conv, a residual bottleneck block, and a 3×3 conv to RGB
   (linear output, like the partial-conv U-Net).
Losses (Sec. 3.3): λ_valid L_valid + λ_hole L_hole + λ_perc L_perc + λ_style L_style with
1, 6, 0.05, 120 — Liu et al.'s losses without the TV term (train/losses.py `pconv_losses`, tv
weight 0 by default), perceptual backbone from `build_backbone(ctx.perceptual, ctx)`.

Published size: ``base`` 64 (reasoning widths 128-256-512), 6 recurrences: 31,224,100 parameters.
Small default for the built-in 64×64 run: ``base`` 4, 2 recurrences: 123,257 parameters (the
recurrence count shares weights and does not change the count; at 64×64 the head plus two
recurrences reach about 34 pixels into a hole, 12 more per recurrence).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.perceptual import build_backbone
from .base import BuildContext, PConvLossModel
from .layers.kca import KnowledgeConsistentAttention
from .layers.partial_conv import PartialConv2d, PartialConvBlock
from .registry import register

RFR_WEIGHTS = {"valid": 1.0, "hole": 6.0, "perceptual": 0.05, "style": 120.0, "tv": 0.0}


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1, act: str = "relu") -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
              nn.BatchNorm2d(cout)]
    layers.append(nn.ReLU(inplace=True) if act == "relu" else nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _up_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def coarse_valid(valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A coarse cell is valid only if every pixel it covers is valid (our choice)."""
    return 1.0 - F.adaptive_max_pool2d(1.0 - valid, size)


class FeatureReasoning(nn.Module):
    """Sec. 3.1.2: encoder (`levels` stride-2 convs) -> `dilated` dilated convs -> decoder with
    skips; KCA (Sec. 3.2) after the first decoder upsampling. Output width = input width."""

    def __init__(self, ch: int, levels: int = 3, dilated: int = 3, propagate: int = 3):
        super().__init__()
        if levels < 2 or dilated < 1:
            raise ValueError("feature reasoning needs levels >= 2 and dilated >= 1")
        widths = [ch * 2 ** (i + 1) for i in range(levels)]
        self.down = nn.ModuleList()
        c = ch
        for w in widths:
            self.down.append(_conv_bn(c, w, stride=2))
            c = w
        self.bottom = nn.ModuleList([_conv_bn(c, c, dilation=2) for _ in range(dilated)])
        self.bottom_dec = nn.ModuleList([_conv_bn(2 * c, c, dilation=2, act="leaky") for _ in range(dilated - 1)])
        outs = [widths[-1 - i] for i in range(levels - 1)] + [ch]   # e.g. 8c, 4c, c
        self.up = nn.ModuleList()
        for i, out in enumerate(outs):
            skip = widths[-1 - i]
            self.up.append(_up_bn(c + skip, out))
            c = out
        self.kca = KnowledgeConsistentAttention(outs[0], propagate=propagate)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, prev: dict | None) -> tuple[torch.Tensor, dict]:
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        bottoms = []
        for conv in self.bottom:
            x = conv(x)
            bottoms.append(x)
        for conv, skip in zip(self.bottom_dec, reversed(bottoms[:-1])):
            x = conv(torch.cat([x, skip], 1))
        state = {}
        for i, up in enumerate(self.up):
            x = up(torch.cat([x, skips[-1 - i]], 1))
            if i == 0:
                valid_att = coarse_valid(valid, x.shape[-2:])
                prev = prev or {}
                x, scores = self.kca(x, prev.get("scores"), prev.get("valid"))
                state = {"scores": scores, "valid": valid_att}
        return x, state


class ResidualBottleneck(nn.Module):
    """1×1 -> 3×3 -> 1×1 (BN, ReLU) with an identity skip; part of the output decoder."""

    def __init__(self, ch: int):
        super().__init__()
        mid = max(ch // 4, 1)
        self.body = nn.Sequential(
            nn.Conv2d(ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, ch, 1, bias=False), nn.BatchNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class RFRNet(PConvLossModel):
    def __init__(self, base: int = 4, recurrences: int = 2, levels: int = 3, dilated: int = 3,
                 propagate: int = 3, backbone: nn.Module | None = None, loss_weights: dict | None = None):
        super().__init__()
        if recurrences < 1:
            raise InpaintBenchError(f"rfr: recurrences must be >= 1 (got {recurrences}); fix models.<name>.args")
        c = base
        self.recurrences = int(recurrences)
        # 1. feature mapping
        self.head = nn.ModuleList([PartialConvBlock(3, c, 7, stride=2, bn=True, act="relu"),
                                   PartialConvBlock(c, c, 7, stride=1, bn=True, act="relu")])
        # 2a. area identification (Sec. 3.1.1)
        self.area = nn.ModuleList([PartialConv2d(c, c, 7, padding=3, bias=False),
                                   PartialConv2d(c, c, 7, padding=3, bias=False)])
        self.area_norm = nn.BatchNorm2d(c)
        # 2b. feature reasoning with KCA (Sec. 3.1.2, 3.2)
        self.reason = FeatureReasoning(c, levels, dilated, propagate)
        # 4. decoding (Sec. 3.3)
        tail = max(c // 2, 1)
        self.up = _up_bn(c, c)
        self.tail = PartialConvBlock(3 + c, tail, 3, bn=False, act="leaky")
        self.refine = ResidualBottleneck(tail)
        self.to_rgb = nn.Conv2d(2 * tail, 3, 3, padding=1)
        self.backbone = backbone
        unknown = set(loss_weights or {}) - set(RFR_WEIGHTS)
        if unknown:
            raise InpaintBenchError(f"rfr: unknown loss weight(s) {sorted(unknown)}; known: {sorted(RFR_WEIGHTS)}")
        self.loss_weights = {**RFR_WEIGHTS, **(loss_weights or {})}

    def recurrent_features(self, image_in: torch.Tensor, mask: torch.Tensor,
                           recurrences: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Steps 1-2: the feature map F^i and validity mask M^i of every recurrence."""
        x, valid = image_in, 1 - mask   # partial conv wants 1 = known
        for block in self.head:
            x, valid = block(x, valid)
        feats, masks, prev = [], [], None
        for _ in range(self.recurrences if recurrences is None else recurrences):
            for conv in self.area:
                x, valid = conv(x, valid)
            x = F.leaky_relu(self.area_norm(x), 0.2)
            x, prev = self.reason(x, valid, prev)
            x = x * valid
            feats.append(x)
            masks.append(valid)
        return feats, masks

    @staticmethod
    def merge(feats: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sec. 3.1.3 adaptive merging: Σ F^i / Σ M^i, and the union of the masks."""
        count = torch.stack(masks).sum(0)
        merged = torch.stack(feats).sum(0) / count.clamp(min=1.0)
        return merged, (count > 0).to(merged.dtype)

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor, recurrences: int | None = None) -> torch.Tensor:
        feats, masks = self.recurrent_features(image_in, mask, recurrences)
        merged, valid = self.merge(feats, masks)
        x = self.up(merged)
        valid = F.interpolate(valid, size=x.shape[-2:], mode="nearest")
        x, _ = self.tail(torch.cat([image_in, x], 1), torch.clamp(valid + (1 - mask), max=1.0))
        return self.to_rgb(torch.cat([x, self.refine(x)], 1))


@register("rfr")
def build(args: dict, loss: dict, ctx: BuildContext) -> RFRNet:
    backbone = build_backbone(ctx.perceptual, ctx)
    return RFRNet(backbone=backbone, loss_weights=loss.get("weights"), **args)
