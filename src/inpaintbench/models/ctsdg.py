"""CTSDG (Guo, Chen, Huang, ICCV 2021, "Image inpainting via conditional texture and structure
dual generation"), a comparison system of SAHN's Tables 1-3. Written from the paper, following
the official PyTorch code (Xiefan-Guo/CTSDG) where the paper leaves details open.

Generator (Sec. 3.1-3.3, Fig. 2; blocks in layers/ctsdg_blocks.py):
* Two partial-convolution U-Nets (multi-channel masks, `depth` levels, kernels 7, 5, 5, 3, ...,
  widths b, 2b, 4b, 8b, 8b, ... capped at `max_width`):
  the texture encoder sees the masked image Ĩ (3 channels, mask per channel), the structure
  encoder the masked edge map and masked grey image [C̃, Ĩ_gray] (2 channels).
  Conditional dual generation: the *texture* decoder starts from the structure encoder's deepest
  feature and the *structure* decoder from the texture encoder's ("structure-constrained
  texture synthesis" and "texture-guided structure reconstruction"), each with skips from its own
  encoder (bilinear ×2 features, nearest ×2 masks, 3×3 PConv-BN-LeakyReLU).
* Projections P_t, P_s of the decoders' last features to an intermediate image / edge map.
* Bi-GFF (Sec. 3.2) fuses the two decoders' last features; a stride-2 3×3 conv (fusion_layer1),
  CFA (Sec. 3.3: region affinity learning + multi-scale aggregation) as self-attention at half
  resolution, a 3×3 conv over [features, CFA output] (fusion_layer2), bilinear ×2, and a 1×1 conv
  over [that, Bi-GFF output] with tanh (out_layer).
Discriminator (Sec. 3.4): texture stream on the image, structure stream on [edges, grey]; the
fake sample's edges come from the discriminator's learned edge detector.

Losses (Sec. 3.5; weights of the official train_options): with M the hole mask,
    L = 60 L_hole + 10 L_valid + 0.1 L_perc + 250 L_style + 0.1 L_adv + 1 L_inter
  L_hole / L_valid: mean |M ⊙ (I_out - I_gt)| / mean |(1-M) ⊙ (I_out - I_gt)|;
  L_perc, L_style: L1 of feature maps and Gram matrices of I_out and I_comp against I_gt
  (pool1-pool3 of the params' perceptual backbone);
  L_adv = BCE(D(I_out), 1) + BCE(E_D(I_out), C_gt)   (E_D the discriminator's edge detector);
  L_inter = BCE(P_s, C_gt) + |P_t - I_gt|_1.
  Discriminator: BCE(D(I_gt), 1) + BCE(D(I_out), 0) + BCE(E_D(I_gt), C_gt) + BCE(E_D(I_out), C_gt).
  Optimizers (official): Adam lr 2e-4, the discriminator's lr 0.1× the generator's.

Our choices, where the official code differs from this project's conventions:
* The network works in [-1, 1] like the official (images are mapped 2x-1 on the way in and
  (y+1)/2 on the way out); the pixel L1 terms and the discriminator inputs are in [-1, 1] too, so
  the official weights keep their meaning. The perceptual backbone gets [0, 1] images (the
  params' backbone convention).
* Edges: C_gt is Canny (sigma 2) of the full ground-truth grey image; the structure encoder's
  input C̃ is Canny of the *known region only* (layers/edge_canny.py), the same at training and
  inference (the official test script masks the full image's edges, which needs the ground truth).
* Fine-tuning (official train.py ``--finetune``: lr 5e-5, discriminator 5e-6, new Adam
  optimizers, ``generator.freeze_ec_bn``): ``training.finetune`` (train/phases.py). The official
  ``Generator.train`` puts *every* generator BatchNorm2d in eval mode despite "ec" (encoder) in
  the flag's name, so ctsdg-pub uses ``freeze_bn: all``; `encoder_modules` (``freeze_bn:
  encoder``) names the two encoders ec_texture_* / ec_structure_*. (The official script never
  calls ``generator.train()`` after setting the flag, so as released the freeze is inert.)

Sizes: published (`base` 64, `depth` 7, `disc_base` 64, `edge_mid` 16): generator 52,147,789
parameters, discriminator 5,531,729 — exactly the official Generator() / Discriminator(3, 2)
(counted by building the official modules; ≈ 52.1 M / 5.5 M). The parameter names match the
official state dicts key for key, under `generator.` / `discriminator.` (the official checkpoint
is {"generator": ..., "discriminator": ...}); the official branches also register `conv1` as
`features`, so its discriminator state carries duplicate `features.*` keys to drop. With the
official weights loaded, `generator(...)` reproduces the official Generator's outputs
(tests/test_official_equivalence.py: seeded weights in the official layout through the released
converter, Xiefan-Guo/CTSDG@def0274, eval mode, 128 px: max difference 3.1e-6).
Small default for the built-in 64×64 run: `base` 4, `depth` 4, `disc_base` 4, `edge_mid` 4
(generator 39,313 + discriminator 23,285 parameters); sizes must be multiples of 2**depth.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.losses import masked_l1, out_comp_perceptual_style
from ..train.perceptual import lazy_backbone
from .base import BuildContext, InpaintModel, StepOutput
from .layers.ctsdg_blocks import (CFA, BiGFF, Discriminator, Feature2Structure, Feature2Texture,
                                  PConvBNActiv, init_weights)
from .layers.edge_canny import full_edges, known_region_edges, rgb_to_gray
from .registry import register

CTSDG_WEIGHTS = {"hole": 60.0, "valid": 10.0, "perceptual": 0.1, "style": 250.0,
                 "adversarial": 0.1, "intermediate": 1.0}


def bce(prob: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """nn.BCELoss on probabilities, in float32 (BCE on probabilities is unsafe under autocast);
    a float target is a constant map (1 real, 0 fake)."""
    with torch.autocast(device_type=prob.device.type, enabled=False):
        prob = prob.float().clamp(1e-7, 1 - 1e-7)
        target = torch.full_like(prob, target) if isinstance(target, float) else target.float().expand_as(prob)
        return F.binary_cross_entropy(prob, target)


def _samples(depth: int) -> list[str]:
    return ["down-7", "down-5", "down-5"][:depth] + ["down-3"] * max(0, depth - 3)


class CTSDGGenerator(nn.Module):
    """Sec. 3.1-3.3 (module names as in the official `Generator`)."""

    def __init__(self, base: int = 64, depth: int = 7, max_width: int | None = None, rate: int = 2,
                 softmax_scale: float = 10.0):
        super().__init__()
        if depth < 2:
            raise InpaintBenchError(f"ctsdg: depth must be >= 2 (got {depth}); fix models.<name>.args")
        cap = max_width or 8 * base
        widths = [min(base * 2 ** i, cap) for i in range(depth)]
        self.depth = depth
        for name, cin in (("texture", 3), ("structure", 2)):
            c = cin
            for i, (wd, sample) in enumerate(zip(widths, _samples(depth)), start=1):
                setattr(self, f"ec_{name}_{i}", PConvBNActiv(c, wd, bn=i > 1, sample=sample))
                c = wd
            for i in range(depth, 0, -1):
                skip = widths[i - 2] if i > 1 else cin
                out = widths[i - 2] if i > 1 else base
                setattr(self, f"dc_{name}_{i}", PConvBNActiv(widths[i - 1] + skip, out, activ="leaky"))
        self.structure_feature_projection = Feature2Structure(base, max(base // 4, 1))
        self.texture_feature_projection = Feature2Texture(base, max(base // 4, 1))
        self.bigff = BiGFF(base, base)
        self.fusion_layer1 = nn.Sequential(nn.Conv2d(2 * base, base, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.cfa = CFA(rate=rate, softmax_scale=softmax_scale, in_channels=base, out_channels=base)
        self.fusion_layer2 = nn.Sequential(nn.Conv2d(2 * base, base, 3, padding=1), nn.LeakyReLU(0.2))
        self.out_layer = nn.Sequential(nn.Conv2d(3 * base, 3, 1), nn.Tanh())
        init_weights(self)

    def _encode(self, name: str, x: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        feats = [(x, mask)]
        for i in range(1, self.depth + 1):
            feats.append(getattr(self, f"ec_{name}_{i}")(*feats[-1]))
        return feats

    def _decode(self, name: str, start: tuple[torch.Tensor, torch.Tensor],
                skips: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        x, m = start
        for i in range(self.depth, 0, -1):
            s, sm = skips[i - 1]
            x = F.interpolate(x, size=s.shape[-2:], mode="bilinear")
            m = F.interpolate(m, size=s.shape[-2:], mode="nearest")
            x, m = getattr(self, f"dc_{name}_{i}")(torch.cat([x, s], 1), torch.cat([m, sm], 1))
        return x

    def forward(self, input_image: torch.Tensor, input_edge: torch.Tensor, valid: torch.Tensor):
        """input_image: masked image in [-1, 1]; input_edge: [C̃, Ĩ_gray]; valid: N1HW, 1 = known.
        Returns (output, projected image, projected edge), images in [-1, 1]."""
        tex = self._encode("texture", input_image, valid.expand(-1, 3, -1, -1))
        struct = self._encode("structure", input_edge, valid.expand(-1, 2, -1, -1))
        dc_texture = self._decode("texture", struct[-1], tex)        # structure-constrained texture
        dc_structure = self._decode("structure", tex[-1], struct)    # texture-guided structure
        projected_image = self.texture_feature_projection(dc_texture)
        projected_edge = self.structure_feature_projection(dc_structure)
        fused = self.bigff(dc_texture, dc_structure)
        x = self.fusion_layer1(fused)
        x = self.fusion_layer2(torch.cat([x, self.cfa(x, x)], 1))
        x = F.interpolate(x, size=fused.shape[-2:], mode="bilinear")
        return self.out_layer(torch.cat([x, fused], 1)), projected_image, projected_edge


class _FrozenParams:
    """Build the graph through a module without accumulating gradients in its weights."""

    def __init__(self, module: nn.Module):
        self.flags = [(p, p.requires_grad) for p in module.parameters()]

    def __enter__(self):
        for p, _ in self.flags:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p, flag in self.flags:
            p.requires_grad_(flag)


class CTSDG(InpaintModel):
    def __init__(self, base: int = 4, depth: int = 4, max_width: int | None = None, disc_base: int = 4,
                 edge_mid: int = 4, sigma: float = 2.0, rate: int = 2, softmax_scale: float = 10.0,
                 backbone: nn.Module | None = None, loss_weights: dict | None = None):
        super().__init__()
        unknown = set(loss_weights or {}) - set(CTSDG_WEIGHTS)
        if unknown:
            raise InpaintBenchError(f"ctsdg: unknown loss weight(s) {sorted(unknown)}; known: {sorted(CTSDG_WEIGHTS)}")
        self.generator = CTSDGGenerator(base, depth, max_width, rate, softmax_scale)
        self.discriminator = Discriminator(3, 2, disc_base, edge_mid)
        init_weights(self.discriminator)
        self.set_backbone(backbone)  # lazy: built on first training use only (models/base.py)
        self.weights = {**CTSDG_WEIGHTS, **(loss_weights or {})}
        self.sigma = float(sigma)
        self.multiple = 2 ** depth
        self._cache: dict = {}

    def encoder_modules(self) -> list[nn.Module]:
        """The texture and structure encoders (official ec_texture_1.. / ec_structure_1..)."""
        g = self.generator
        return [getattr(g, f"ec_{name}_{i}") for name in ("texture", "structure") for i in range(1, g.depth + 1)]

    def _check_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise InpaintBenchError(f"ctsdg: image size {h}x{w} must be a multiple of 2**depth = {self.multiple}")

    def run(self, image_in: torch.Tensor, mask: torch.Tensor):
        """(output, projected image, projected edge) in [0, 1] from the masked image and hole mask."""
        self._check_size(image_in)
        valid = 1 - mask
        gray_in = rgb_to_gray(image_in) * valid
        edges_in = known_region_edges(gray_in, mask, self.sigma)
        out, proj_img, proj_edge = self.generator((image_in * 2 - 1) * valid, torch.cat([edges_in, gray_in], 1), valid)
        return (out + 1) / 2, (proj_img + 1) / 2, proj_edge

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.run(image_in * (1 - mask), mask)[0]

    def _disc(self, image01: torch.Tensor, gray: torch.Tensor, edges: torch.Tensor, real: bool):
        return self.discriminator(image01 * 2 - 1, gray, edges, is_real=real)

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        w = self.weights
        pred, proj_img, proj_edge = self.run(image * (1 - mask), mask)
        gray = rgb_to_gray(image)
        edges = full_edges(gray, self.sigma)
        comp = pred * mask + image * (1 - mask)
        t_pred, t_img = pred * 2 - 1, image * 2 - 1
        terms = {"hole": masked_l1(t_pred, t_img, mask), "valid": masked_l1(t_pred, t_img, 1 - mask)}
        with _FrozenParams(self.discriminator):
            d_fake, edge_fake = self._disc(pred, gray, edges, real=False)
        terms["adversarial"] = bce(d_fake, 1.0) + bce(edge_fake, edges)
        terms["intermediate"] = bce(proj_edge, edges) + F.l1_loss(proj_img * 2 - 1, t_img)
        if self.backbone is not None and (w["perceptual"] > 0 or w["style"] > 0):
            # one batched pass over [pred, comp], the target's features once (train/losses.py)
            terms["perceptual"], terms["style"] = out_comp_perceptual_style(self.backbone, pred, comp, image)
        total = sum(w[k] * v for k, v in terms.items())
        self._cache = {"image": image, "mask": mask, "gray": gray, "edges": edges}
        return StepOutput(total, {k: v.detach() for k, v in terms.items()}, pred)

    def discriminator_losses(self, image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> StepOutput:
        cache = self._cache
        if cache.get("image") is image and cache.get("mask") is mask:
            gray, edges = cache["gray"], cache["edges"]
        else:
            gray = rgb_to_gray(image)
            edges = full_edges(gray, self.sigma)
        d_real, edge_real = self._disc(image, gray, edges, real=True)
        d_fake, edge_fake = self._disc(pred.detach(), gray, edges, real=False)
        adv = bce(d_real, 1.0) + bce(d_fake, 0.0)
        edge = bce(edge_real, edges) + bce(edge_fake, edges)
        return StepOutput(adv + edge, {"adversarial": adv.detach(), "edge": edge.detach()})


@register("ctsdg")
def build(args: dict, loss: dict, ctx: BuildContext) -> CTSDG:
    backbone = lazy_backbone(ctx.perceptual, ctx)
    return CTSDG(backbone=backbone, loss_weights=loss.get("weights"), **args)
