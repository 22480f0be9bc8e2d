"""SPN: fully context-aware image inpainting with a learned semantic pyramid (Zhang, Zhu, Wang, Ni &
Yang, Pattern Recognition 2023; official code WendongZh/SPN, ``SPN_determine`` — the deterministic
setting the SAHN paper compares against — followed for every layer size).

SPN extends SPL (models/spl.py) from one semantic prior to a multi-scale **semantic pyramid**:
* **Pyramid prior learner** (paper Sec. 3.1): the SPL prior learner at h/4 (semantic encoder with
  ReLU, residual-dense trunk, residual blocks → layout L³ and prior P³ = 1×1(L³)), then a decoder
  of two [3×3 conv → pixel shuffle ×2 → ReLU → residual block with a conv shortcut] stages whose
  inputs are concatenated with the semantic encoder's features at the same scale (the pyramid's
  lateral skips): layouts L² at h/2 and L¹ at h, and priors P² = 1×1(L²), P¹ = 1×1(L¹).
* **Multi-scale distillation** from the frozen teacher (train/teacher.py), official
  ``g_l1_FM_loss``: Σ_s mean(|P^s − F_teacher^s| ⊙ (1 + 3 M_s)) over h (the teacher's stride-4 stem
  map upsampled ×2, as the official ``F.interpolate(img_f_full[0], 256)``), h/2 (layer1) and h/4
  (layer2).
* **Deterministic generator** (Sec. 3.2): the SPL image encoder (RN-B) and SPADE residual blocks
  modulated by L³ at h/4, then a decoder that injects the pyramid at every scale: nearest ×2 →
  SPADE block (width 4b → 2b) modulated by L², nearest ×2 → SPADE block (2b → b) modulated by L¹,
  LeakyReLU, 7×7 conv; I_out = (tanh + 1)/2.
Discriminator and losses as SPL (official weights: 10·L1 with hole weight 1 + 2M, 1·L_prior, 1·nsgan).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.teacher import lazy_teacher_for
from .base import BuildContext
from .layers.edge_blocks import PatchDiscriminator
from .layers.semantic_prior import ReflectResBlock, SPADEResBlock, SPADEUpBlock, reflect_conv
from .registry import register
from .spl import PriorLearner, RNEncoder, SemanticEncoder, SemanticPriorInpainter, prior_input, resolve_args
from .spl import DEFAULT_ARGS as SPL_ARGS
from .spl import PAPER_ARGS as SPL_PAPER_ARGS

# built-in 64 px default: SPN also runs SPADE blocks at h/2 and h, so it is thinner than SPL's.
# Measured on the shared 2-core machine (batch 8, 64 px, one thread, G + D step): ≈ 0.59 × SAHN's
# built-in step, SPL ≈ 0.41 ×; the step cost no longer falls with the widths (many small ops at h).
DEFAULT_ARGS = {**SPL_ARGS, "spade_hidden": 4, "middle_blocks": 1}
PAPER_ARGS = dict(SPL_PAPER_ARGS)  # the official SPN_determine widths equal SPL's


class PyramidDecoder(nn.Module):
    """L³ (h/4, `width` ch) → L² (h/2, 2b ch) → L¹ (h, b ch), each stage fed the semantic encoder's
    feature at its scale (official ``feature_recon_decoder``)."""

    def __init__(self, width: int, base: int):
        super().__init__()
        self.up2 = nn.Sequential(nn.Conv2d(width, 2 * base * 4, 3, padding=1), nn.PixelShuffle(2), nn.ReLU())
        self.fuse2 = ReflectResBlock(2 * base + width, out=2 * base, learned_shortcut=True)
        self.up1 = nn.Sequential(nn.Conv2d(2 * base, base * 4, 3, padding=1), nn.PixelShuffle(2), nn.ReLU())
        self.fuse1 = ReflectResBlock(base + 2 * base, out=base, learned_shortcut=True)

    def forward(self, layout3: torch.Tensor, skips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        f1, f2 = skips  # semantic encoder features at h (2b ch) and h/2 (width ch)
        layout2 = self.fuse2(torch.cat([f2, self.up2(layout3)], 1))
        layout1 = self.fuse1(torch.cat([f1, self.up1(layout2)], 1))
        return layout2, layout1


class SPNGenerator(nn.Module):
    def __init__(self, teacher_channels: list[int], base: int, sem_width: int, rdb_count: int, rdb_growth: int,
                 rdb_layers: int, recon_blocks: int, recon_hidden: int, middle_blocks: int, middle_hidden: int,
                 spade_hidden: int, rn_threshold: float, kernel: int = 7, checkpoint: bool | str = "auto"):
        super().__init__()
        if len(teacher_channels) != 3:
            raise InpaintBenchError(f"SPN needs a teacher with three feature maps, got {teacher_channels}")
        self.encoder = RNEncoder(base, kernel)
        self.semantic = SemanticEncoder(base, sem_width, act="relu", kernel=kernel)
        self.prior = PriorLearner(sem_width, rdb_count, rdb_growth, rdb_layers, recon_blocks, recon_hidden,
                                  teacher_channels[2], checkpoint)
        self.pyramid = PyramidDecoder(sem_width, base)
        self.to_prior2 = nn.Conv2d(2 * base, teacher_channels[1], 1)
        self.to_prior1 = nn.Conv2d(base, teacher_channels[0], 1)
        self.middle = nn.ModuleList(SPADEResBlock(4 * base, sem_width, middle_hidden, spade_hidden, dilation=2)
                                    for _ in range(middle_blocks))
        self.dec2 = SPADEUpBlock(4 * base, 2 * base, 2 * base, spade_hidden)
        self.dec1 = SPADEUpBlock(2 * base, base, base, spade_hidden)
        self.to_image = reflect_conv(base, 3, kernel)

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = image_in.shape[-2:]
        if h % 4 or w % 4:
            raise InpaintBenchError(f"SPN needs image sides divisible by 4, got {w}x{h}")
        x = self.encoder(image_in * (1 - mask) + mask, mask)
        f1, f2, f3 = self.semantic(prior_input(image_in, mask))
        layout3, prior3 = self.prior(f3)
        layout2, layout1 = self.pyramid(layout3, [f1, f2])
        for block in self.middle:
            x = block(x, layout3)
        x = self.dec2(F.interpolate(x, scale_factor=2, mode="nearest"), layout2)
        x = self.dec1(F.interpolate(x, scale_factor=2, mode="nearest"), layout1)
        out = (torch.tanh(self.to_image(F.leaky_relu(x, 0.2))) + 1) / 2
        return out, [self.to_prior1(layout1), self.to_prior2(layout2), prior3]


def build_generator(args: dict, teacher_channels: list[int]) -> SPNGenerator:
    a = resolve_args(args, DEFAULT_ARGS, "SPN")
    return SPNGenerator(list(teacher_channels), a["base"], a["sem_width"], a["rdb_count"], a["rdb_growth"],
                        a["rdb_layers"], a["recon_blocks"], a["recon_hidden"], a["middle_blocks"], a["middle_hidden"],
                        a["spade_hidden"], a["rn_threshold"], a["kernel"], a["checkpoint"])


@register("spn")
def build(args: dict, loss: dict, ctx: BuildContext) -> SemanticPriorInpainter:
    a = resolve_args(args, DEFAULT_ARGS, "SPN")
    teacher = lazy_teacher_for(ctx, a["teacher"], a["teacher_allow_download"])  # channels only, no weights
    generator = build_generator(a, teacher.channels)
    return SemanticPriorInpainter(generator, teacher, PatchDiscriminator(3, a["disc_base"]), [0, 1, 2], loss, "SPN")
