"""LaMa-Fourier (Suvorov et al. 2022, "Resolution-robust large mask inpainting with Fourier
convolutions"), arch ``lama_fourier``.

Generator (Sec. 3.1, Fig. 2): input is the masked image stacked with the mask (4 channels);
a 7×7 conv, ``n_down`` stride-2 3×3 downsampling convs (widths ×2 each), ``n_blocks`` residual
blocks of fast Fourier convolutions (layers/ffc.py; global ratio ``ratio_g`` = 0.75), and
``n_down`` stride-2 transposed convs back up, then a 7×7 conv to RGB and a sigmoid. Published
LaMa-Fourier: ngf 64, 3 downsamplings (512 channels at 1/8 resolution), 9 FFC blocks (27 M
parameters in the paper's Table; count measured by the tests). The last downsampling conv is an
FFC with global output ratio 0.75, which starts the local/global split; all convs are followed
by BN + ReLU except the output conv.

Losses (Sec. 3.2-3.3), final objective
    L_final = κ L_Adv + α L_HRFPL + β L_DiscPL + γ R1,   κ = 10, α = 30, β = 100, γ = 0.001:
* L_Adv (Sec. 3.3): non-saturating adversarial loss with a patch discriminator
  (layers/patch_discriminators.py NLayerPatchDiscriminator). Discriminator:
  L_D = −E[log D(x)] − E[log D(x̂) ⊙ (1 − m)] − E[log(1 − D(x̂)) ⊙ m]: only patches of the
  prediction that intersect the hole get the "fake" label (m = mask max-pooled to the
  discriminator's output grid); generator L_G = −E[log D(x̂)]. log σ terms are softplus.
* R1 = E_x ||∇_x D(x)||² on real images (Sec. 3.3), added to L_D with weight γ (``r1``; 0
  turns it off, the paper calls it optional in small setups).
* L_DiscPL (Sec. 3.3): feature matching between the discriminator's intermediate features of
  the real and the predicted image: per-layer MSE, averaged over layers, as the official code
  computes it (advimman/lama saicinpainting/training/losses/feature_matching.py).
* L_HRFPL (Sec. 3.2): per-layer MSE of φ_HRF(x) and φ_HRF(x̂), **summed** over layers as the
  official ResNetPL does (the paper's text says "inter-layer mean"; its code and the released
  weights use the sum, and no paper reproduced here states otherwise). **Substitute**: the paper's φ_HRF is a segmentation ResNet50 with dilated convs
  (ADE20k-pretrained) that is not available offline; φ here is the perceptual backbone
  chosen in params (``lazy_backbone(ctx.perceptual)``, or this model's ``loss.perceptual``
  block if given; offline default random-vgg16). The report must name the backbone used.
* ``l1`` (weight 10): L1 on the known pixels (weight_known 10, weight_missing 0 in the official
  configs lama-fourier.yaml / big-lama.yaml), averaged over all pixels like masked_l1_loss.

Choices where the paper is silent: the discriminator scores the raw prediction x̂ (not the
composite), so that known-region patches of x̂ are judged "real" as the paper describes; the
generator's output is a sigmoid (images in [0, 1]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..train.perceptual import lazy_backbone
from .base import BuildContext, InpaintModel, StepOutput
from .layers.ffc import FFCBNAct, FFCResBlock
from .layers.patch_discriminators import NLayerPatchDiscriminator
from .registry import register

DEFAULT_WEIGHTS = {"adv": 10.0, "hrf_perceptual": 30.0, "feature_matching": 100.0, "r1": 0.001, "l1": 10.0}
# built-in 64×64 CPU run (the constructor defaults) and LaMa-Fourier's published size
SMALL_ARGS = {"ngf": 8, "n_down": 3, "n_blocks": 3, "ratio_g": 0.75, "disc_ndf": 8, "disc_layers": 3}
PUBLISHED_ARGS = {"ngf": 64, "n_down": 3, "n_blocks": 9, "ratio_g": 0.75, "disc_ndf": 64, "disc_layers": 4}


class LamaGenerator(nn.Module):
    """Fig. 2 / Sec. 3.1: conv stem, downsampling, FFC residual blocks, upsampling, RGB head."""

    def __init__(self, ngf: int = 64, n_down: int = 3, n_blocks: int = 9, ratio_g: float = 0.75,
                 max_features: int = 1024):
        super().__init__()
        self.stem = FFCBNAct(4, ngf, 7, 0.0, 0.0, padding=3)  # reflect-padded 7×7, plain conv (α = 0)
        down, ch = [], ngf
        for i in range(n_down):
            out = min(max_features, ch * 2)
            last = i == n_down - 1
            down.append(FFCBNAct(ch, out, 3, 0.0, ratio_g if last else 0.0, stride=2, padding=1))
            ch = out
        self.down = nn.ModuleList(down)
        self.blocks = nn.ModuleList(FFCResBlock(ch, ratio_g) for _ in range(n_blocks))
        up = []
        for _ in range(n_down):
            out = max(ngf, ch // 2)
            up += [nn.ConvTranspose2d(ch, out, 3, stride=2, padding=1, output_padding=1),
                   nn.BatchNorm2d(out), nn.ReLU()]
            ch = out
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ch, 3, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.stem((x, None))
        for layer in self.down:
            feats = layer(feats)
        for block in self.blocks:
            feats = block(feats)
        x = torch.cat([f for f in feats if f is not None], dim=1)  # concatenate local ∥ global
        return torch.sigmoid(self.head(self.up(x)))


def hrf_perceptual_loss(backbone: nn.Module, pred: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2 as the official ResNetPL: per-layer MSE, summed over layers."""
    with torch.no_grad():
        target = [f.detach() for f in backbone(image)]
    return sum(F.mse_loss(a, b) for a, b in zip(backbone(pred), target))


def feature_matching_loss(fake_feats: list[torch.Tensor], real_feats: list[torch.Tensor]) -> torch.Tensor:
    """Sec. 3.3 L_DiscPL: MSE between discriminator features of real and predicted images,
    averaged over layers (official feature_matching_loss without a mask)."""
    layers = [F.mse_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats)]
    return sum(layers) / len(layers)


def fake_patch_labels(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """1 where a discriminator patch intersects the hole (max pooling of the mask)."""
    return F.adaptive_max_pool2d(mask, size)


class LamaFourier(InpaintModel):
    def __init__(self, ngf: int = 8, n_down: int = 3, n_blocks: int = 3, ratio_g: float = 0.75,
                 disc_ndf: int = 8, disc_layers: int = 3, backbone: nn.Module | None = None,
                 loss_weights: dict | None = None):
        super().__init__()
        unknown = set(loss_weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise TypeError(f"unknown lama_fourier loss weights {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        self.generator = LamaGenerator(ngf, n_down, n_blocks, ratio_g)
        self.discriminator = NLayerPatchDiscriminator(3, disc_ndf, disc_layers)
        self.set_backbone(backbone)  # lazy: built on first training use only (models/base.py)
        self.weights = {**DEFAULT_WEIGHTS, **(loss_weights or {})}

    @property
    def discriminator(self) -> nn.Module:
        # InpaintModel's class attribute `discriminator = None` would shadow the registered
        # sub-module on plain attribute lookup; read it from the module registry instead.
        return self._modules["discriminator"]

    def generator_parameters(self):
        return [p for p in self.generator.parameters() if p.requires_grad]

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.generator(torch.cat([image_in * (1 - mask), mask], dim=1))

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        w = self.weights
        pred = self(image * (1 - mask), mask)
        terms: dict[str, torch.Tensor] = {}
        if w["adv"] > 0 or w["feature_matching"] > 0:
            d_params = list(self.discriminator.parameters())
            flags = [p.requires_grad for p in d_params]
            for p in d_params:  # gradients flow through D into G, not into D's weights
                p.requires_grad_(False)
            try:
                fake_logits, fake_feats = self.discriminator(pred)
                with torch.no_grad():
                    _, real_feats = self.discriminator(image)
            finally:
                for p, f in zip(d_params, flags):
                    p.requires_grad_(f)
            terms["adv"] = F.softplus(-fake_logits).mean()  # non-saturating −log D(x̂)
            terms["feature_matching"] = feature_matching_loss(fake_feats, real_feats)
        if self.backbone is not None and w["hrf_perceptual"] > 0:
            terms["hrf_perceptual"] = hrf_perceptual_loss(self.backbone, pred, image)
        if w["l1"] > 0:
            terms["l1"] = F.l1_loss(pred * (1 - mask), image * (1 - mask))
        total = sum(w[k] * v for k, v in terms.items())
        return StepOutput(total, {k: v.detach() for k, v in terms.items()}, pred)

    def discriminator_losses(self, image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> StepOutput:
        use_r1 = self.weights["r1"] > 0
        real = image.detach().requires_grad_(use_r1)
        real_logits, _ = self.discriminator(real)
        fake_logits, _ = self.discriminator(pred.detach())
        fake = fake_patch_labels(mask, fake_logits.shape[-2:])
        loss_real = F.softplus(-real_logits).mean()
        loss_fake = (F.softplus(fake_logits) * fake + F.softplus(-fake_logits) * (1 - fake)).mean()
        total = loss_real + loss_fake
        logs = {"real": loss_real.detach(), "fake": loss_fake.detach()}  # trainer adds "d_"
        if use_r1:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            total = total + self.weights["r1"] * r1
            logs["r1"] = r1.detach()
        return StepOutput(total, logs)


@register("lama_fourier")
def build(args: dict, loss: dict, ctx: BuildContext) -> LamaFourier:
    perceptual = loss.get("perceptual", ctx.perceptual)
    backbone = lazy_backbone(perceptual, ctx)
    return LamaFourier(backbone=backbone, loss_weights=loss.get("weights"), **args)


# --- official checkpoints (advimman/lama, saicinpainting/training/modules/ffc.py FFCResNetGenerator) ---
# The official generator is one nn.Sequential `model`: [0] ReflectionPad2d(3), [1] the 7×7 stem,
# [2 .. 1+n_down] the downsampling FFCs, then n_blocks FFCResnetBlocks, a ConcatTupleLayer, the
# (ConvTranspose2d, BN, ReLU) triples, ReflectionPad2d(3), the 7×7 RGB conv and the sigmoid.
_FFC_RENAMES = [("convl2l", "l2l"), ("convl2g", "l2g"), ("convg2l", "g2l"),
                ("convg2g.conv1.", "g2g.reduce."), ("convg2g.fu.conv_layer", "g2g.fu.conv"),
                ("convg2g.fu.bn", "g2g.fu.bn"), ("convg2g.conv2", "g2g.expand")]


def official_generator_args(state: dict) -> dict:
    """Our LamaGenerator args (ngf, n_down, n_blocks, ratio_g) read off an official state dict
    (keys ``model.N....``, the ``generator.`` prefix already removed)."""
    index = {}
    for key in state:
        parts = key.split(".")
        if parts[0] == "model":
            index.setdefault(int(parts[1]), set()).add(parts[2])
    blocks = sorted(i for i, names in index.items() if "conv1" in names)
    ffcs = sorted(i for i, names in index.items() if "ffc" in names)
    last_down = state[f"model.{ffcs[-1]}.ffc.convl2g.weight"].shape[0]
    last_local = state[f"model.{ffcs[-1]}.ffc.convl2l.weight"].shape[0]
    return {"ngf": int(state["model.1.ffc.convl2l.weight"].shape[0]), "n_down": len(ffcs) - 1,
            "n_blocks": len(blocks), "ratio_g": last_down / (last_down + last_local)}


def convert_official_generator(state: dict) -> tuple[dict, dict]:
    """(args, state dict of our LamaGenerator) from the official FFCResNetGenerator's state dict."""
    args = official_generator_args(state)
    n_down, n_blocks = args["n_down"], args["n_blocks"]
    first_block, first_up = 2 + n_down, 3 + n_down + n_blocks
    head = first_up + 3 * n_down + 1
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "model":
            raise KeyError(f"unexpected key {key!r} in a LaMa generator state dict")
        i, rest = int(parts[1]), ".".join(parts[2:])
        for a, b in _FFC_RENAMES:
            rest = rest.replace(a, b)
        if i == 1:
            name = f"stem.{rest}"
        elif 2 <= i < first_block:
            name = f"down.{i - 2}.{rest}"
        elif first_block <= i < first_block + n_blocks:
            name = f"blocks.{i - first_block}.{rest}"
        elif first_up <= i < head - 1:
            name = f"up.{i - first_up}.{rest}"
        elif i == head:
            name = f"head.1.{rest}"
        else:
            raise KeyError(f"unexpected key {key!r} in a LaMa generator state dict")
        out[name] = value
    return args, out
