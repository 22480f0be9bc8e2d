"""SPL: context-aware image inpainting with learned semantic priors (Zhang, Zhu, Wang, Ni & Yang,
IJCAI 2021, arXiv 2106.07220; official code WendongZh/SPL, followed for every layer size).

Generator (paper Sec. 3, Fig. 2; official ``networks.py`` G_Net):
* **Semantic prior learner** (Sec. 3.1, "learning semantic priors"): the masked image (holes
  filled with 1) and the mask, upsampled ×2 (nearest, as the official
  ``F.interpolate(gt_256_masked, 512)``), pass a 7×7 conv and three stride-2 4×4 convs (LeakyReLU
  0.1) to h/4, a residual-dense trunk (16 RDBs, growth 32, 6 layers, global fusion and residual),
  four residual blocks → the semantic layout L (256 ch), and a 1×1 conv → the prior F_prior in the
  teacher's channels.
* **Knowledge distillation from the frozen multi-label teacher** (Sec. 3.1): the target is the
  teacher's stride-8 feature map of the ×2-upsampled full image (ASL TResNet-L ``layer2``, 152 ch at
  h/4; train/teacher.py), L_prior = mean(|F_prior − F_teacher| ⊙ (1 + α M_{h/4})), α = 3 and M the
  mask resized (nearest) to h/4 (official ``g_l1_FM_loss``).
* **Context-aware image generator** (Sec. 3.2): an encoder with region normalisation (RN-B) to
  h/4, eight SPADE residual blocks (dilation 2) whose modulation is predicted from L (the
  SPADE-like fusion of global semantics and local features), and a decoder of pixel-shuffle ×2
  upsampling with learnable region normalisation (RN-L), then a 7×7 conv; I_out = (tanh + 1)/2.
  Blocks: layers/semantic_prior.py.
Discriminator: the EdgeConnect-style 70×70 PatchGAN with spectral norm (official ``D_Net``) on the
raw prediction, non-saturating GAN (BCE) loss, D loss = (real + fake)/2.
Loss (Sec. 3.3, official weights): L = 10·mean(|I_out − I| ⊙ (1 + 2M)) + 1·L_prior + 1·L_adv.

Choices: image_in follows the project contract (holes zeroed); we add the mask back so the
network sees holes = 1 as in the official code. The teacher's input is the bilinear ×2 upsampling
of the full image (the official loader resizes the original to 512). The official Paris schedule
drops L_prior in the last 10 epochs; we keep it on (one schedule for all datasets).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.teacher import TEACHER_KINDS, LazyTeacher, TeacherModelMixin, drop_teacher_keys, lazy_teacher_for
from .base import BuildContext, InpaintModel, StepOutput
from .layers.edge_blocks import PatchDiscriminator
from .layers.semantic_prior import (LearnableRegionNorm, RegionNorm, ReflectResBlock, ResidualDenseTrunk,
                                    SPADEResBlock, check_checkpoint_arg, reflect_conv)
from .registry import register

# built-in 64 px default; published SPL (official G_Net, ASL teacher): see PAPER_ARGS
DEFAULT_ARGS = {
    "base": 4,             # image encoder widths base, 2·base, 4·base (official 64)
    "sem_width": 12,       # semantic branch width (official 256)
    "rdb_count": 2,        # RDBs in the prior learner (official 16)
    "rdb_growth": 8,       # growth rate (official 32)
    "rdb_layers": 2,       # conv layers per RDB (official 6)
    "recon_blocks": 1,     # residual blocks after the trunk (official 4)
    "recon_hidden": 12,    # their hidden width (official 256)
    "middle_blocks": 2,    # SPADE residual blocks (official 8)
    "middle_hidden": 16,   # their hidden width (official 256)
    "spade_hidden": 8,     # SPADE embedding width (official 128)
    "rn_threshold": 0.8,   # RN-L region threshold (official 0.8)
    "kernel": 3,           # the 7×7 stem / output convolutions (official 7; 3 keeps the CPU run small)
    "disc_base": 4,        # PatchGAN width (official 64)
    "teacher": None,       # None: the experiment's teacher.kind (train/teacher.py); else a kind
    "teacher_allow_download": None,
    "checkpoint": "auto",  # recompute each RDB of the trunk in the backward pass: true, false, auto (large ones)
}
PAPER_ARGS = {**DEFAULT_ARGS, "base": 64, "sem_width": 256, "rdb_count": 16, "rdb_growth": 32, "rdb_layers": 6,
              "recon_blocks": 4, "recon_hidden": 256, "middle_blocks": 8, "middle_hidden": 256,
              "spade_hidden": 128, "kernel": 7, "disc_base": 64}
LOSS_WEIGHTS = {"rec": 10.0, "prior": 1.0, "adversarial": 1.0}
DEFAULT_LOSS = {"weights": LOSS_WEIGHTS, "rec_hole_weight": 2.0, "prior_alpha": 3.0}


def resolve_args(args: dict, defaults: dict, name: str) -> dict:
    unknown = set(args) - set(defaults)
    if unknown:
        raise InpaintBenchError(f"unknown {name} args {sorted(unknown)}; known: {sorted(defaults)}")
    out = {**defaults, **args}
    if out["teacher"] is not None and out["teacher"] not in TEACHER_KINDS:
        raise InpaintBenchError(f"{name} teacher {out['teacher']!r}; choose one of {', '.join(TEACHER_KINDS)}")
    try:
        check_checkpoint_arg(out["checkpoint"], name)
    except ValueError as e:
        raise InpaintBenchError(f"{e}; fix models.<name>.args") from None
    return out


def prior_input(image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(I ⊙ (1 − M) + M, M) upsampled ×2 with nearest neighbour (official masked_512, mask_512)."""
    filled = image_in * (1 - mask) + mask
    return F.interpolate(torch.cat([filled, mask], 1), scale_factor=2, mode="nearest")


class SemanticEncoder(nn.Module):
    """7×7 conv, then three 4×4 stride-2 convs: from the 2h input to h, h/2 and h/4. Returns the
    three feature maps (SPN uses the first two as pyramid skips)."""

    def __init__(self, base: int, width: int, act: str, kernel: int = 7):
        super().__init__()
        make_act = (lambda: nn.LeakyReLU(0.1)) if act == "leaky" else (lambda: nn.ReLU())  # noqa: E731
        self.stem = nn.Sequential(reflect_conv(4, base, kernel), make_act())
        self.down1 = nn.Sequential(nn.Conv2d(base, 2 * base, 4, 2, 1), make_act())       # h
        self.down2 = nn.Sequential(nn.Conv2d(2 * base, width, 4, 2, 1), make_act())      # h/2
        self.down3 = nn.Sequential(nn.Conv2d(width, width, 4, 2, 1), make_act())         # h/4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.down1(self.stem(x))
        f2 = self.down2(f1)
        return [f1, f2, self.down3(f2)]


class PriorLearner(nn.Module):
    """Semantic prior learner at h/4: residual-dense trunk and residual blocks → layout L; 1×1 → prior."""

    def __init__(self, width: int, rdb_count: int, rdb_growth: int, rdb_layers: int, recon_blocks: int,
                 recon_hidden: int, prior_channels: int, checkpoint: bool | str = "auto"):
        super().__init__()
        self.trunk = ResidualDenseTrunk(width, rdb_count, rdb_growth, rdb_layers, checkpoint)
        self.recon = nn.Sequential(*[ReflectResBlock(width, recon_hidden) for _ in range(recon_blocks)])
        self.to_prior = nn.Conv2d(width, prior_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layout = self.recon(self.trunk(x))
        return layout, self.to_prior(layout)


class RNEncoder(nn.Module):
    """Image encoder: 7×7 conv + RN-B + ReLU, two 4×4 stride-2 convs + RN-B + ReLU (to h/4)."""

    def __init__(self, base: int, kernel: int = 7):
        super().__init__()
        self.convs = nn.ModuleList([reflect_conv(3, base, kernel), nn.Conv2d(base, 2 * base, 4, 2, 1),
                                    nn.Conv2d(2 * base, 4 * base, 4, 2, 1)])
        self.norms = nn.ModuleList(RegionNorm(c) for c in (base, 2 * base, 4 * base))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x), mask))
        return x


class SPLGenerator(nn.Module):
    def __init__(self, prior_channels: int, base: int, sem_width: int, rdb_count: int, rdb_growth: int,
                 rdb_layers: int, recon_blocks: int, recon_hidden: int, middle_blocks: int, middle_hidden: int,
                 spade_hidden: int, rn_threshold: float, kernel: int = 7, checkpoint: bool | str = "auto"):
        super().__init__()
        self.encoder = RNEncoder(base, kernel)
        self.semantic = SemanticEncoder(base, sem_width, act="leaky", kernel=kernel)
        self.prior = PriorLearner(sem_width, rdb_count, rdb_growth, rdb_layers, recon_blocks, recon_hidden,
                                  prior_channels, checkpoint)
        self.middle = nn.ModuleList(SPADEResBlock(4 * base, sem_width, middle_hidden, spade_hidden, dilation=2)
                                    for _ in range(middle_blocks))
        self.decoder = nn.ModuleList([
            nn.Sequential(nn.Conv2d(4 * base, 2 * base * 4, 3, padding=1), nn.PixelShuffle(2)),
            LearnableRegionNorm(2 * base, rn_threshold),
            nn.Sequential(nn.Conv2d(2 * base, base * 4, 3, padding=1), nn.PixelShuffle(2)),
            LearnableRegionNorm(base, rn_threshold),
        ])
        self.to_image = reflect_conv(base, 3, kernel)

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = image_in.shape[-2:]
        if h % 4 or w % 4:
            raise InpaintBenchError(f"SPL needs image sides divisible by 4, got {w}x{h}")
        x = self.encoder(image_in * (1 - mask) + mask, mask)
        layout, prior = self.prior(self.semantic(prior_input(image_in, mask))[-1])
        for block in self.middle:
            x = block(x, layout)
        for layer in self.decoder:
            x = layer(x)
            if isinstance(layer, LearnableRegionNorm):
                x = F.relu(x)
        return (torch.tanh(self.to_image(x)) + 1) / 2, [prior]


def nsgan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Non-saturating GAN loss: BCE of sigmoid(D) against 1 (real) or 0 (fake), on logits."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


def semantic_prior_loss(goals: list[torch.Tensor], priors: list[torch.Tensor], mask: torch.Tensor,
                        alpha: float) -> torch.Tensor:
    """Σ_scales mean(|F_prior − F_teacher| ⊙ (1 + α M_s)), M_s the mask resized (nearest) to the
    scale (SPL: one scale, h/4; SPN: h, h/2, h/4)."""
    total = priors[0].new_zeros(())
    for goal, prior in zip(goals, priors):
        if goal.shape != prior.shape:
            raise ValueError(f"teacher feature {tuple(goal.shape)} and prior {tuple(prior.shape)} differ")
        m = F.interpolate(mask, size=prior.shape[-2:], mode="nearest")
        total = total + ((prior - goal).abs() * (1 + alpha * m)).mean()
    return total


class SemanticPriorInpainter(TeacherModelMixin, InpaintModel):
    """SPL/SPN training: generator (pred, priors), frozen teacher targets, PatchGAN, the losses above.
    ``goal_scales`` picks which of the teacher's three maps (h, h/2, h/4) the priors learn."""

    def __init__(self, generator: nn.Module, teacher: nn.Module | LazyTeacher, discriminator: nn.Module,
                 goal_scales: list[int], loss: dict | None = None, name: str = "SPL"):
        super().__init__()
        self.generator = generator
        # the teacher supervises the prior loss only (Sec. 3.1): built on first training use, never
        # for inference, and no sub-module (no teacher weights in the state dict; old ones dropped)
        self.teacher_source = teacher if isinstance(teacher, LazyTeacher) else LazyTeacher.of(teacher)
        self.register_load_state_dict_pre_hook(drop_teacher_keys)
        self.discriminator = discriminator
        self.goal_scales = list(goal_scales)
        loss = dict(loss or {})
        unknown = set(loss) - set(DEFAULT_LOSS)
        if unknown:
            raise InpaintBenchError(f"unknown {name} loss params {sorted(unknown)}; known: {sorted(DEFAULT_LOSS)}")
        weights = {**LOSS_WEIGHTS, **(loss.get("weights") or {})}
        if set(weights) - set(LOSS_WEIGHTS):
            raise InpaintBenchError(f"unknown {name} loss weights {sorted(set(weights) - set(LOSS_WEIGHTS))}; "
                                    f"known: {sorted(LOSS_WEIGHTS)}")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.hole_weight = float(loss.get("rec_hole_weight", DEFAULT_LOSS["rec_hole_weight"]))
        self.alpha = float(loss.get("prior_alpha", DEFAULT_LOSS["prior_alpha"]))

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.generator(image_in, mask)[0]

    def teacher_goals(self, image: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            up = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
            feats = self.teacher_source.get(image.device, like=self.generator)(up)
            return [feats[s].detach() for s in self.goal_scales]

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        pred, priors = self.generator(image * (1 - mask), mask)
        terms = {"rec": ((pred - image).abs() * (1 + self.hole_weight * mask)).mean(),
                 "prior": semantic_prior_loss(self.teacher_goals(image), priors, mask, self.alpha)}
        flags = [p.requires_grad for p in self.discriminator.parameters()]
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        try:
            terms["adv_g"] = nsgan_loss(self.discriminator(pred)[0], True)
        finally:
            for p, f in zip(self.discriminator.parameters(), flags):
                p.requires_grad_(f)
        w = self.weights
        total = w["rec"] * terms["rec"] + w["prior"] * terms["prior"] + w["adversarial"] * terms["adv_g"]
        logs = {k: v.detach() for k, v in terms.items()}
        logs["l1"] = (pred.detach() - image).abs().mean()
        return StepOutput(total, logs, pred)

    def discriminator_losses(self, image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> StepOutput:
        real = nsgan_loss(self.discriminator(image)[0], True)
        fake = nsgan_loss(self.discriminator(pred.detach())[0], False)
        return StepOutput((real + fake) / 2, {"real": real.detach(), "fake": fake.detach()}, None)

    def parameter_counts(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"generator": count(self.generator), "discriminator": count(self.discriminator),
                "teacher": count(self.teacher)}


def build_generator(args: dict, teacher_channels: list[int]) -> SPLGenerator:
    a = resolve_args(args, DEFAULT_ARGS, "SPL")
    return SPLGenerator(teacher_channels[-1], a["base"], a["sem_width"], a["rdb_count"], a["rdb_growth"],
                        a["rdb_layers"], a["recon_blocks"], a["recon_hidden"], a["middle_blocks"], a["middle_hidden"],
                        a["spade_hidden"], a["rn_threshold"], a["kernel"], a["checkpoint"])


@register("spl")
def build(args: dict, loss: dict, ctx: BuildContext) -> SemanticPriorInpainter:
    a = resolve_args(args, DEFAULT_ARGS, "SPL")
    teacher = lazy_teacher_for(ctx, a["teacher"], a["teacher_allow_download"])  # channels only, no weights
    generator = build_generator(a, teacher.channels)
    return SemanticPriorInpainter(generator, teacher, PatchDiscriminator(3, a["disc_base"]), [2], loss, "SPL")
