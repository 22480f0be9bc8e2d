"""SAHN: semantic-prior-aware hierarchical network with a multi-scale fusion generator
(Feng, Tang & Zhong, Technologies 13(11):521, 2025; papers/sahn_semantic_prior_hierarchical_network.txt).

Generator G (Sec. 3.1, Fig. 2), scales n = 1..N (N = 3) of sizes h, h/2, h/4:
* (a) texture encoder E_text: three convolutions over (I_broken, I_mask) → F_text at h/4.
* (b) semantic prior mapper: (I'_broken, I'_mask) upsampled ×2 → U-Net encoder E_s → F_s^n;
  F_pyr^N = Multi-ResBlock(F_s^N) (dilated residual blocks), F_pyr^n = ResBlock1(U(F_pyr^{n+1}),
  F_s^n) with pixel-shuffle U; the prior F_prior^n = conv1×1(F_pyr^n), in the teacher's channels,
  is supervised by L_prior (Eq. 19) against F_goal^n = P(I'_full) (frozen teacher, train/teacher.py);
  ResBlock2 maps F_prior^n → semantic structures F_str^n.
* (c) multi-scale fusion (MSF): from n = N down to 1, msf_blocks[n] SPADE residual blocks with
  deformable convolutions modulated by F_str^n, nearest ×2 upsampling between scales, and a final
  convolution to the image: F_out^n = U(SPADE^n(F_text, F_str^n)), I_out = Conv(F_out^1).
Discriminator D (Sec. 3.2): layers/sahn_discriminator.py.
Loss (Sec. 3.3, Eq. 14): L = ω1 L_rec + ω2 L_fm + ω3 L_adv + ω4 L_prior, ω = 1.0, 0.3, 0.1, 0.5.

Ablations (Sec. 4.3, Table 4), chosen with args:
* ``unet: false`` ("without U-Net"): the prior pyramid loses the U-Net skip connections;
  F_pyr^n = ResBlock1(U(F_pyr^{n+1})) decodes from the bottleneck only (a plain
  encoder–decoder); everything else, including L_prior on all three scales, is unchanged.
* ``msf: false`` ("without multi-scale semantic fusion"): the MSF module is replaced by a plain
  decoder with the same widths, block counts and upsampling whose residual blocks use instance
  norm and ordinary convolutions; the semantic structure enters once, at scale N, by
  concatenation with F_text and a 1×1 convolution (single-scale, non-adaptive fusion). The prior
  mapper and L_prior are unchanged; ResBlock2 is only built for scale N.

Choices where the paper is silent or ambiguous (each also noted at the code):
* image_in follows the project contract (holes zeroed) and the mask is an input channel; the
  paper fills holes with 1 — equivalent up to the first layer's bias.
* I'_broken is upsampled bilinearly, I'_mask with nearest neighbour (stays binary).
* I_mask^n in Eq. 19 is the hole fraction at scale n (area downsampling of the mask).
* Eq. 15 is read as L_rec = mean(|I_full − I_out| ⊙ (1 + ∂ I_mask)); ∂ (`rec_hole_weight`) is not
  given in the paper; default 5 gives Liu et al.'s 6:1 hole:valid ratio.
* α (`prior_alpha`) is "20 %, 40 %, 60 % or 80 %" in the paper; default 0.4.
* L_fm (Eq. 16) uses the backbone from params (`perceptual`), η_i = 1 unless `perceptual_layers`.
* I_out = sigmoid(conv(F_out^1)), in [0, 1] like the images.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.perceptual import lazy_backbone
from ..train.teacher import TEACHER_KINDS, LazyTeacher, TeacherModelMixin, drop_teacher_keys, lazy_teacher_for
from .base import BuildContext, InpaintModel, StepOutput, composite
from .layers.sahn_discriminator import MaskGuidedDiscriminator, discriminator_loss, generator_adversarial_loss
from .layers.spade import SPADEResBlock
from .registry import register

NUM_SCALES = 3
# small default for the built-in 64×64 run: 95 k generator + 27 k discriminator parameters.
# One step (batch 8, 1 thread, G + D) costs ≈ 0.22 s CPU time on the shared 2-core machine, over
# the ~0.12 s target: the bilinear sampling of the two deformable convolutions at the 64×64 scale
# alone costs ≈ 85 ms (widths are already at 4 there); sahn-no-msf ≈ 0.10 s.
DEFAULT_ARGS = {
    "tex_widths": [8, 16, 16],   # E_text: 7×7 stride 1, 4×4 stride 2, 4×4 stride 2
    "sem_widths": [8, 8, 16],    # E_s / prior pyramid width at scales 1..N
    "str_widths": [4, 4, 16],    # F_str^n channels (also the SPADE embedding width)
    "msf_widths": [4, 4, 16],    # MSF feature width at scales 1..N
    "msf_blocks": [1, 1, 2],     # SPADE residual blocks at scales 1..N (MSF point 2)
    "pyr_blocks": 2,             # dilated residual blocks in Multi-ResBlock (scale N)
    "str_blocks": 1,             # residual blocks per scale in ResBlock2
    "disc_widths": [8, 16, 32, 32],
    "unet": True,
    "msf": True,
    "teacher": None,             # None: the experiment's `teacher.kind`; else a kind (train/teacher.py)
    "teacher_allow_download": None,  # None: the experiment's `teacher.allow_download`
    "deform_backend": "auto",    # auto | torchvision | grid_sample (layers/sahn_deform.py)
    "spectral_norm": True,
}
# published scale (256×256 input); the paper gives no widths, these follow the SPL/SPADE family.
# 39.80 M generator + 2.76 M discriminator parameters (+ 1.44 M frozen ResNet-50 taps); the paper
# reports 98.7 M for the whole model (Sec. 4.5), which presumably includes its TResNet-L teacher.
PAPER_ARGS = {
    **DEFAULT_ARGS,
    "tex_widths": [64, 128, 256],
    "sem_widths": [64, 128, 256],
    "str_widths": [64, 128, 256],
    "msf_widths": [64, 128, 256],
    "msf_blocks": [1, 2, 4],
    "pyr_blocks": 8,
    "str_blocks": 2,
    "disc_widths": [64, 128, 256, 512],
}
LOSS_WEIGHTS = {"rec": 1.0, "perceptual": 0.3, "adversarial": 0.1, "prior": 0.5}  # Sec. 4.1
DEFAULT_LOSS = {"weights": LOSS_WEIGHTS, "rec_hole_weight": 5.0, "prior_alpha": 0.4, "perceptual_layers": None}
# Log keys (StepOutput.logs; the trainer adds "loss" and prefixes D's terms with "d_", "d_loss" = D total).
# Figure 5: FM_loss -> "perceptual", G_loss -> "adv_g", D_loss -> "d_loss", L1_loss -> "l1".
LOG_KEYS = ("l1", "rec", "perceptual", "adv_g", "prior")


class ResBlock(nn.Module):
    """conv3×3 → IN → ReLU → conv3×3 → IN plus identity (1×1 conv when the width changes)."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.InstanceNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.InstanceNorm2d(cout))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def _conv_in_relu(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=(k - stride + 1) // 2 if stride > 1 else k // 2),
                         nn.InstanceNorm2d(cout), nn.ReLU(inplace=True))


class TextureEncoder(nn.Module):
    """E_text (Fig. 2a, Eq. F_text = E_text(I_broken, I_mask)): three convolutions to h/4."""

    def __init__(self, widths: list[int]):
        super().__init__()
        t1, t2, t3 = widths
        self.net = nn.Sequential(_conv_in_relu(4, t1, 7, 1), _conv_in_relu(t1, t2, 4, 2), _conv_in_relu(t2, t3, 4, 2))

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image_in, mask], 1))


class SemanticPriorMapper(nn.Module):
    """Fig. 2b: E_s on the ×2-upsampled input, the pyramid (Eqs. F_pyr^N, F_pyr^n) and the 1×1
    heads to the teacher's channels; returns [F_prior^1, ..., F_prior^N] (F_prior^n = conv1×1(F_pyr^n))."""

    def __init__(self, widths: list[int], teacher_channels: list[int], pyr_blocks: int, unet: bool):
        super().__init__()
        self.unet = unet
        enc, cin = [], 4
        for w in widths:  # 2h → h → h/2 → h/4: F_s^1, F_s^2, F_s^3
            enc.append(_conv_in_relu(cin, w, 4, 2))
            cin = w
        self.encoder = nn.ModuleList(enc)
        self.bottleneck = nn.Sequential(*[ResBlock(widths[-1], widths[-1], dilation=2) for _ in range(pyr_blocks)])
        self.up = nn.ModuleList()    # U: pixel shuffle ×2 from scale n+1 to n
        self.fuse = nn.ModuleList()  # ResBlock1
        for n in range(len(widths) - 1):
            self.up.append(nn.Sequential(nn.Conv2d(widths[n + 1], 4 * widths[n], 3, padding=1), nn.PixelShuffle(2)))
            self.fuse.append(ResBlock(2 * widths[n] if unet else widths[n], widths[n]))
        self.heads = nn.ModuleList(nn.Conv2d(w, c, 1) for w, c in zip(widths, teacher_channels))

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([F.interpolate(image_in, scale_factor=2, mode="bilinear", align_corners=False),
                       F.interpolate(mask, scale_factor=2, mode="nearest")], 1)
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        pyr = [None] * len(feats)
        pyr[-1] = self.bottleneck(feats[-1])  # F_pyr^N = Multi-ResBlock(F_s^N)
        for n in reversed(range(len(feats) - 1)):
            up = self.up[n](pyr[n + 1])
            pyr[n] = self.fuse[n](torch.cat([up, feats[n]], 1) if self.unet else up)
        return [head(p) for head, p in zip(self.heads, pyr)]


class StructureMapper(nn.Module):
    """ResBlock2: {F_str^n} = ResBlock2(F_prior) — per scale a 1×1 conv and residual blocks."""

    def __init__(self, teacher_channels: list[int], widths: list[int], blocks: int):
        super().__init__()
        self.maps = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, w, 1), *[ResBlock(w, w) for _ in range(blocks)])
            for c, w in zip(teacher_channels, widths))

    def forward(self, priors: list[torch.Tensor], scales: list[int]) -> dict[int, torch.Tensor]:
        return {n: self.maps[i](priors[n]) for i, n in enumerate(scales)}


class MSFDecoder(nn.Module):
    """Fig. 3B: per scale n = N..1, msf_blocks[n] SPADE residual blocks conditioned on F_str^n,
    nearest ×2 upsampling between scales, then I_out = Conv(F_out^1)."""

    def __init__(self, tex_channels: int, widths: list[int], blocks: list[int], str_widths: list[int], backend: str):
        super().__init__()
        self.stages = nn.ModuleList()
        cin = tex_channels
        for n in reversed(range(len(widths))):
            stage = nn.ModuleList()
            for b in range(blocks[n]):
                stage.append(SPADEResBlock(cin if b == 0 else widths[n], widths[n], str_widths[n], str_widths[n], backend))
            cin = widths[n]
            self.stages.insert(0, stage)
        self.to_image = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, f_text: torch.Tensor, structures: dict[int, torch.Tensor]) -> torch.Tensor:
        x = f_text
        for n in reversed(range(len(self.stages))):
            for block in self.stages[n]:
                x = block(x, structures[n])
            if n > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        return torch.sigmoid(self.to_image(F.leaky_relu(x, 0.2)))


class PlainDecoder(nn.Module):
    """Ablation "without multi-scale semantic fusion": concat(F_text, F_str^N) → 1×1 conv, then
    plain residual blocks with the MSF's widths/counts and the same upsampling."""

    def __init__(self, tex_channels: int, widths: list[int], blocks: list[int], str_channels: int):
        super().__init__()
        top = len(widths) - 1
        self.merge = nn.Conv2d(tex_channels + str_channels, widths[top], 1)
        self.stages = nn.ModuleList()
        cin = widths[top]
        for n in reversed(range(len(widths))):
            layers = [ResBlock(cin if b == 0 else widths[n], widths[n]) for b in range(blocks[n])]
            cin = widths[n]
            self.stages.insert(0, nn.Sequential(*layers))
        self.to_image = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, f_text: torch.Tensor, structures: dict[int, torch.Tensor]) -> torch.Tensor:
        top = len(self.stages) - 1
        x = self.merge(torch.cat([f_text, structures[top]], 1))
        for n in reversed(range(len(self.stages))):
            x = self.stages[n](x)
            if n > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        return torch.sigmoid(self.to_image(F.leaky_relu(x, 0.2)))


class SAHNGenerator(nn.Module):
    def __init__(self, teacher_channels: list[int], tex_widths, sem_widths, str_widths, msf_widths, msf_blocks,
                 pyr_blocks: int, str_blocks: int, unet: bool = True, msf: bool = True, deform_backend: str = "auto"):
        super().__init__()
        for name, v in [("teacher channels", teacher_channels), ("tex_widths", tex_widths), ("sem_widths", sem_widths),
                        ("str_widths", str_widths), ("msf_widths", msf_widths), ("msf_blocks", msf_blocks)]:
            if len(v) != NUM_SCALES:
                raise InpaintBenchError(f"SAHN {name} needs {NUM_SCALES} entries (scales 1..N), got {list(v)}")
        if min(msf_blocks) < 1:
            raise InpaintBenchError(f"SAHN msf_blocks must be ≥ 1 per scale, got {list(msf_blocks)}")
        self.texture = TextureEncoder(list(tex_widths))
        self.prior = SemanticPriorMapper(list(sem_widths), list(teacher_channels), int(pyr_blocks), bool(unet))
        self.structure_scales = list(range(NUM_SCALES)) if msf else [NUM_SCALES - 1]
        self.structure = StructureMapper([teacher_channels[n] for n in self.structure_scales],
                                         [str_widths[n] for n in self.structure_scales], int(str_blocks))
        if msf:
            self.decoder = MSFDecoder(tex_widths[-1], list(msf_widths), list(msf_blocks), list(str_widths), deform_backend)
        else:
            self.decoder = PlainDecoder(tex_widths[-1], list(msf_widths), list(msf_blocks), str_widths[-1])

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = image_in.shape[-2:]
        if h % 4 or w % 4:
            raise InpaintBenchError(f"SAHN needs image sides divisible by 4, got {w}x{h}")
        f_text = self.texture(image_in, mask)
        priors = self.prior(image_in, mask)
        structures = self.structure(priors, self.structure_scales)
        return self.decoder(f_text, structures), priors


def prior_loss(goals: list[torch.Tensor], priors: list[torch.Tensor], mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 19: Σ_n ‖(F_goal^n − conv1×1(F_pyr^n)) ⊙ (1 + α I_mask^n)‖₁ (mean per scale);
    I_mask^n = hole fraction of each cell at scale n's size."""
    total = goals[0].new_zeros(())
    for goal, prior in zip(goals, priors):
        if goal.shape != prior.shape:
            raise ValueError(f"teacher feature {tuple(goal.shape)} and prior {tuple(prior.shape)} differ")
        m = F.interpolate(mask, size=goal.shape[-2:], mode="area")
        total = total + ((goal - prior) * (1 + alpha * m)).abs().mean()
    return total


def reconstruction_loss(pred: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, hole_weight: float) -> torch.Tensor:
    """Eq. 15: mean(|I_full − I_out| ⊙ (1 + ∂ I_mask)) — the hole counts 1 + ∂ times."""
    return ((pred - image).abs() * (1 + hole_weight * mask)).mean()


@contextmanager
def _frozen(module: nn.Module):
    """No gradients into `module` while the generator's adversarial term is built."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class SAHN(TeacherModelMixin, InpaintModel):
    def __init__(self, generator: SAHNGenerator, teacher: nn.Module | LazyTeacher, discriminator: nn.Module,
                 backbone: nn.Module | None, loss: dict | None = None):
        super().__init__()
        self.generator = generator
        # P supervises L_prior only (Eq. 19): built on first training use, never for inference, and
        # no sub-module (no teacher weights in the state dict; old checkpoints' are dropped)
        self.teacher_source = teacher if isinstance(teacher, LazyTeacher) else LazyTeacher.of(teacher)
        self.register_load_state_dict_pre_hook(drop_teacher_keys)
        # registered as `disc`: the base class's class attribute `discriminator = None` would
        # shadow a sub-module stored under that name (nn.Module keeps those in _modules)
        self.disc = discriminator
        self.set_backbone(backbone)  # lazy: built on first training use only (models/base.py)
        loss = dict(loss or {})
        unknown = set(loss) - set(DEFAULT_LOSS)
        if unknown:
            raise InpaintBenchError(f"unknown SAHN loss params {sorted(unknown)}; known: {sorted(DEFAULT_LOSS)}")
        weights = {**LOSS_WEIGHTS, **(loss.get("weights") or {})}
        if set(weights) - set(LOSS_WEIGHTS):
            raise InpaintBenchError(f"unknown SAHN loss weights {sorted(set(weights) - set(LOSS_WEIGHTS))}; "
                                    f"known: {sorted(LOSS_WEIGHTS)}")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.hole_weight = float(loss.get("rec_hole_weight", DEFAULT_LOSS["rec_hole_weight"]))
        self.alpha = float(loss.get("prior_alpha", DEFAULT_LOSS["prior_alpha"]))
        self.layer_weights = loss.get("perceptual_layers")

    @property
    def discriminator(self) -> nn.Module:
        return self.disc

    @discriminator.setter
    def discriminator(self, value) -> None:
        # a base class that initialises `self.discriminator = None` lands here: keep `disc`
        if value is not None:
            self.disc = value

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.generator(image_in, mask)[0]

    def teacher_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """F_goal^n = P(I'_full), I'_full the ×2 (bilinear) upsampled full image."""
        with torch.no_grad():
            up = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
            return [f.detach() for f in self.teacher_source.get(image.device, like=self.generator)(up)]

    def perceptual(self, pred: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Eq. 16: Σ_i η_i ‖φ_i(I_out) − φ_i(I_full)‖₁ (mean per layer)."""
        with torch.no_grad():
            f_gt = [f.detach() for f in self.backbone(image)]
        f_out = self.backbone(pred)
        eta = self.layer_weights or [1.0] * len(f_out)
        return sum(float(e) * F.l1_loss(a, b) for e, a, b in zip(eta, f_out, f_gt))

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        pred, priors = self.generator(image * (1 - mask), mask)
        terms = {
            "rec": reconstruction_loss(pred, image, mask, self.hole_weight),
            "prior": prior_loss(self.teacher_features(image), priors, mask, self.alpha),
        }
        if self.backbone is not None:
            terms["perceptual"] = self.perceptual(pred, image)
        with _frozen(self.discriminator):
            terms["adv_g"] = generator_adversarial_loss(self.discriminator, composite(pred, image, mask))
        w = self.weights
        total = (w["rec"] * terms["rec"] + w["prior"] * terms["prior"] + w["adversarial"] * terms["adv_g"]
                 + w["perceptual"] * terms.get("perceptual", 0.0))
        logs = {k: v.detach() for k, v in terms.items()}
        logs["l1"] = (pred.detach() - image).abs().mean()
        return StepOutput(total, logs, pred)

    def discriminator_losses(self, image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> StepOutput:
        restored = composite(pred.detach(), image, mask)  # Sec. 3.2: I_pred
        total, parts = discriminator_loss(self.discriminator, image, restored, mask)
        return StepOutput(total, {k: v.detach() for k, v in parts.items()}, None)

    def parameter_counts(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        return {"generator": count(self.generator), "discriminator": count(self.discriminator),
                "teacher": count(self.teacher), "perceptual_backbone": count(self.backbone)}


def resolve_args(args: dict) -> dict:
    unknown = set(args) - set(DEFAULT_ARGS)
    if unknown:
        raise InpaintBenchError(f"unknown SAHN args {sorted(unknown)}; known: {sorted(DEFAULT_ARGS)}")
    out = {**DEFAULT_ARGS, **args}
    if out["teacher"] is not None and out["teacher"] not in TEACHER_KINDS:
        raise InpaintBenchError(f"SAHN teacher {out['teacher']!r}; choose one of {', '.join(TEACHER_KINDS)}")
    return out


def build_generator(args: dict, teacher_channels: list[int]) -> SAHNGenerator:
    a = resolve_args(args)
    return SAHNGenerator(teacher_channels, a["tex_widths"], a["sem_widths"], a["str_widths"], a["msf_widths"],
                         a["msf_blocks"], a["pyr_blocks"], a["str_blocks"], unet=a["unet"], msf=a["msf"],
                         deform_backend=a["deform_backend"])


def build_discriminator(args: dict) -> MaskGuidedDiscriminator:
    a = resolve_args(args)
    return MaskGuidedDiscriminator(a["disc_widths"], use_spectral_norm=bool(a["spectral_norm"]))


@register("sahn")
def build(args: dict, loss: dict, ctx: BuildContext) -> SAHN:
    a = resolve_args(args)
    teacher = lazy_teacher_for(ctx, a["teacher"], a["teacher_allow_download"])  # channels only, no weights
    generator = build_generator(a, teacher.channels)
    return SAHN(generator, teacher, build_discriminator(a), lazy_backbone(ctx.perceptual, ctx), loss)
