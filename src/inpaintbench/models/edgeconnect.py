"""EdgeConnect (Nazeri et al. 2019, "EdgeConnect: generative image inpainting with adversarial
edge learning"): a baseline of the benchmark, written from the paper's description.

Two stages (Sec. 3, Fig. 2; equation numbers as in the arXiv version, 1901.00212):

* G1, the edge generator (Sec. 3.1): input the masked greyscale image Ĩ_gray = I_gray ⊙ (1-M),
  the masked Canny edge map C̃_gt (here: Canny on the known region only, layers/edge_canny.py)
  and the mask M; output C_pred = G1(Ĩ_gray, C̃_gt, M), the edge map completed in the hole (Eq. 1).
  Trained with
      min_G1 max_D1  λ_adv,1 L_adv,1 + λ_FM L_FM,   λ_adv,1 = 1, λ_FM = 10        (Eq. 2)
      L_adv,1 = E[log D1(C_gt, I_gray)] + E[log(1 - D1(C_pred, I_gray))]          (Eq. 3)
      L_FM = E[Σ_i 1/N_i ||D1^(i)(C_gt) - D1^(i)(C_pred)||_1]                     (Eq. 4)
* G2, the image generator (Sec. 3.2): input the masked colour image Ĩ_gt and the composite edge
  map C_comp = C_gt ⊙ (1-M) + C_pred ⊙ M (the known-region edges stand in for C_gt ⊙ (1-M),
  exactly as at inference); output I_pred = G2(Ĩ_gt, C_comp) (Eq. 5). As in the official code
  (knazeri/edge-connect src/models.py), the holes of both generators' image inputs are filled
  with 1 (white): Ĩ = I ⊙ (1-M) + M. Trained with
      λ_ℓ1 L_ℓ1 + λ_adv,2 L_adv,2 + λ_p L_perc + λ_s L_style,
      λ_ℓ1 = 1, λ_adv,2 = λ_p = 0.1, λ_s = 250                                   (Eq. 9)
  L_adv,2 (Eq. 6): D2 sees the RGB image only (3 channels), as the official InpaintingModel does
  (Eq. 6 writes D2(I, C_comp); the official code and its released D2 weights take RGB alone).
  D1 sees [I_gray, C] in that channel order (official EdgeModel). L_ℓ1 is normalised by the
  mask size (mean |I_pred - I_gt| / mean(M), the official code). L_perc (Eq. 7, L1 between
  feature maps) is taken on the whole images; L_style (Eq. 8, L1 between Gram matrices) on the
  hole only, style(I_pred ⊙ M, I_gt ⊙ M), as the official code does. Both use the perceptual
  backbone chosen in params (`lazy_backbone(ctx.perceptual, ctx)`, built for training only; the
  paper uses ImageNet VGG-19 relu1_1..relu5_1 / relu2_2..relu5_2, the offline default is a
  random VGG16 to pool3 — the report names it).

Adversarial terms use the non-saturating log loss (BCE on logits); the generators minimise
-log D(fake). Training schedule (Sec. 4 "Training"): the paper trains G1, then G2, then
optionally fine-tunes both end-to-end with D1 removed. Here `on_epoch_start` selects the stage:
the first ``g1_fraction`` of the epochs train G1 + D1 only ("edge"), the rest train G2 + D2 with
G1 frozen ("image"), and the last ``joint_fraction`` of the epochs (0 by default) train G1 and G2
end-to-end through C_comp with G2's losses and D2 only ("joint"). The inactive parts run under
no_grad (frozen parts in eval mode, so spectral norm's power iteration does not move either) and
their gradients are cleared, so the trainer's single generator optimizer and single
discriminator optimizer (over the ModuleDict {edge: D1, image: D2}) never move them.

Sizes: the small default for the built-in 64×64 run (``base`` 4, ``disc_base`` 8, still 8
residual blocks) has 175,168 parameters (G1 + G2: 86,464); the published size (``base`` 64,
``disc_base`` 64) has 27,062,212 (each generator 10.8 M, each discriminator 2.76 M).

Log keys (generator): edge stage `edge_adv`, `edge_fm`; image/joint stages `img_l1`, `img_adv`,
`img_perceptual`, `img_style`; every stage `stage` (1 edge, 2 image, 3 joint). Discriminator:
`edge` (D1) or `image` (D2), which the trainer prefixes with `d_`.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.losses import batched_features, perceptual_loss, style_loss, target_features
from ..train.perceptual import lazy_backbone
from .base import BuildContext, InpaintModel, StepOutput
from .layers.edge_blocks import EdgeConnectGenerator, PatchDiscriminator
from .layers.edge_canny import full_edges, known_region_edges, rgb_to_gray
from .registry import register

EDGECONNECT_WEIGHTS = {"adv1": 1.0, "fm": 10.0, "l1": 1.0, "adv2": 0.1, "perceptual": 0.1, "style": 250.0}
STAGES = ("edge", "image", "joint")
STAGE_CODE = {"edge": 1.0, "image": 2.0, "joint": 3.0}


def _bce_logits(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


@contextlib.contextmanager
def _no_param_grads(module: nn.Module):
    """Build the graph through `module` without accumulating gradients in its weights (the
    generator step only needs d loss / d input; the discriminator step computes its own)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _clear_grads(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def stage_for_epoch(epoch: int, num_epochs: int, g1_fraction: float, joint_fraction: float) -> str:
    """Stage of a 0-based epoch: the first round(g1_fraction·E) epochs "edge", the last
    round(joint_fraction·E) "joint", the rest "image". With E >= 2 and both fractions in (0, 1)
    each of "edge" and "image" gets at least one epoch."""
    n = max(int(num_epochs), 1)
    n_edge = int(round(g1_fraction * n))
    n_joint = int(round(joint_fraction * n))
    if n >= 2 and 0 < g1_fraction < 1:
        n_edge = min(max(n_edge, 1), n - 1)
    if n_joint > 0:
        n_joint = min(n_joint, max(n - n_edge - 1, 0))
    if epoch < n_edge:
        return "edge"
    if epoch >= n - n_joint:
        return "joint"
    return "image"


class EdgeConnect(InpaintModel):
    def __init__(self, base: int = 4, res_blocks: int = 8, disc_base: int = 8, sigma: float = 2.0,
                 low_threshold: float | None = None, high_threshold: float | None = None,
                 g1_fraction: float = 0.5, joint_fraction: float = 0.0,
                 backbone: nn.Module | None = None, loss_weights: dict | None = None):
        super().__init__()
        if not 0.0 <= g1_fraction <= 1.0 or not 0.0 <= joint_fraction < 1.0:
            raise InpaintBenchError(
                f"edgeconnect: g1_fraction must be in [0, 1] and joint_fraction in [0, 1) "
                f"(got {g1_fraction}, {joint_fraction}); fix models.<name>.args in params.yaml")
        unknown = set(loss_weights or {}) - set(EDGECONNECT_WEIGHTS)
        if unknown:
            raise InpaintBenchError(
                f"edgeconnect: unknown loss weight(s) {sorted(unknown)}; known: {sorted(EDGECONNECT_WEIGHTS)}")
        self.g1 = EdgeConnectGenerator(3, 1, base, res_blocks, sn=True, out="sigmoid")     # Sec. 3.1
        self.g2 = EdgeConnectGenerator(4, 3, base, res_blocks, sn=False, out="tanh01")     # Sec. 3.2
        self.discriminator = nn.ModuleDict({
            "edge": PatchDiscriminator(2, disc_base),    # D1(C, I_gray), Eq. 3
            "image": PatchDiscriminator(3, disc_base),   # D2(I): RGB only, as the official code
        })
        self.set_backbone(backbone)  # lazy: built on first training use only (models/base.py)
        self.weights = {**EDGECONNECT_WEIGHTS, **(loss_weights or {})}
        self.canny = {"sigma": float(sigma), "low": low_threshold, "high": high_threshold}
        self.g1_fraction = float(g1_fraction)
        self.joint_fraction = float(joint_fraction)
        self.stage = "edge"
        self._cache: dict = {}

    @property
    def discriminator(self) -> nn.ModuleDict:
        # InpaintModel declares `discriminator = None` as a class attribute, which would shadow the
        # registered sub-module on attribute lookup; read it from the registered modules instead.
        return self._modules["discriminator"]

    # ---- staging ---------------------------------------------------------------------------
    def set_stage(self, stage: str) -> None:
        if stage not in STAGES:
            raise InpaintBenchError(f"edgeconnect: unknown stage {stage!r}; known: {', '.join(STAGES)}")
        self.stage = stage
        self._cache = {}
        self.train(self.training)

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.set_stage(stage_for_epoch(epoch, num_epochs, self.g1_fraction, self.joint_fraction))

    def _frozen_modules(self) -> list[nn.Module]:
        if self.stage == "edge":
            return [self.g2, self.discriminator["image"]]
        if self.stage == "image":
            return [self.g1, self.discriminator["edge"]]
        return [self.discriminator["edge"]]  # joint: D1 removed

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen_modules() if hasattr(self, "stage") else []:
            m.train(False)
        return self

    # ---- the two stages --------------------------------------------------------------------
    def edge_inputs(self, image_in: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """G1's input [Ĩ_gray, C̃, M] and C̃ (Canny on the known region only; Sec. 3.1)."""
        gray_in = rgb_to_gray(image_in) * (1 - mask)
        edges_in = known_region_edges(gray_in, mask, self.canny["sigma"], self.canny["low"], self.canny["high"])
        return torch.cat([gray_in + mask, edges_in, mask], 1), edges_in  # holes filled with 1 (official)

    @staticmethod
    def composite_edges(edges_in: torch.Tensor, edges_pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """C_comp = C ⊙ (1-M) + C_pred ⊙ M (Sec. 3.2, the input of Eq. 5)."""
        return edges_in * (1 - mask) + edges_pred * mask

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gray_in = rgb_to_gray(image_in) * (1 - mask)
        edges_in = known_region_edges(gray_in, mask, self.canny["sigma"], self.canny["low"], self.canny["high"])
        return self.complete(image_in, gray_in, edges_in, mask)

    def complete(self, image_in: torch.Tensor, gray_in: torch.Tensor, edges_in: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
        """G1 then G2 from given known-region edges (the official EdgeModel.forward, the merge
        C_pred ⊙ M + C ⊙ (1-M) of its training loop, then InpaintingModel.forward)."""
        edges_pred = self.g1(torch.cat([gray_in * (1 - mask) + mask, edges_in * (1 - mask), mask], 1))
        edges_comp = self.composite_edges(edges_in, edges_pred, mask)
        return self.g2(torch.cat([image_in * (1 - mask) + mask, edges_comp], 1))   # Eq. 5, holes = 1

    def _run_g1(self, image: torch.Tensor, mask: torch.Tensor, grad: bool) -> dict:
        g1_in, edges_in = self.edge_inputs(image * (1 - mask), mask)
        with torch.set_grad_enabled(grad):
            edges_pred = self.g1(g1_in)
        return {"image": image, "mask": mask, "gray": rgb_to_gray(image), "edges_in": edges_in,
                "edges_pred": edges_pred, "edges_comp": self.composite_edges(edges_in, edges_pred, mask)}

    def _edge_losses(self, run: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 2-4: non-saturating adversarial term + feature matching against C_gt."""
        d1 = self.discriminator["edge"]
        edges_gt = full_edges(run["gray"], self.canny["sigma"], self.canny["low"], self.canny["high"])
        run["edges_gt"] = edges_gt
        with _no_param_grads(d1):
            with torch.no_grad():
                _, feats_real = d1(torch.cat([run["gray"], edges_gt], 1))
            logits_fake, feats_fake = d1(torch.cat([run["gray"], run["edges_pred"]], 1))
        adv = _bce_logits(logits_fake, real=True)
        fm = sum(F.l1_loss(f, r) for f, r in zip(feats_fake, feats_real))
        total = self.weights["adv1"] * adv + self.weights["fm"] * fm
        return total, {"edge_adv": adv.detach(), "edge_fm": fm.detach()}

    def _image_losses(self, image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor,
                      edges_comp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 6-9: L1 (mask-size normalised) + adversarial + perceptual + style on I_pred."""
        d2 = self.discriminator["image"]
        w = self.weights
        l1 = (pred - image).abs().mean() / mask.mean().clamp(min=1e-3)
        with _no_param_grads(d2):
            logits_fake, _ = d2(pred)
        adv = _bce_logits(logits_fake, real=True)
        terms = {"img_l1": l1, "img_adv": adv}
        total = w["l1"] * l1 + w["adv2"] * adv
        if self.backbone is not None and (w["perceptual"] > 0 or w["style"] > 0):
            # one batched pass each for the targets (no grad) and for [pred, pred ⊙ M] (train/losses.py)
            f_gt, f_gt_hole = target_features(self.backbone, image, image * mask)
            f_pred, f_pred_hole = batched_features(self.backbone, pred, pred * mask)
            terms["img_perceptual"] = perceptual_loss(f_pred, f_gt)
            terms["img_style"] = style_loss(f_pred_hole, f_gt_hole)  # hole only (official)
            total = total + w["perceptual"] * terms["img_perceptual"] + w["style"] * terms["img_style"]
        return total, {k: v.detach() for k, v in terms.items()}

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        for m in self._frozen_modules():
            _clear_grads(m)
        if self.stage == "edge":
            run = self._run_g1(image, mask, grad=True)
            total, logs = self._edge_losses(run)
            # G2 is neither trained nor run in this stage (it would only cost time): the returned
            # "prediction" is the masked input; D2 is not stepped, so nothing consumes it.
            pred = image * (1 - mask)
        else:
            run = self._run_g1(image, mask, grad=self.stage == "joint")
            pred = self.g2(torch.cat([image * (1 - mask) + mask, run["edges_comp"]], 1))
            total, logs = self._image_losses(image, mask, pred, run["edges_comp"])
        run = {k: (v.detach() if torch.is_tensor(v) and k not in ("image", "mask") else v) for k, v in run.items()}
        self._cache = run
        logs["stage"] = STAGE_CODE[self.stage]
        return StepOutput(total, logs, pred)

    def _cached_run(self, image: torch.Tensor, mask: torch.Tensor) -> dict:
        run = self._cache
        if run.get("image") is image and run.get("mask") is mask:
            return run
        with torch.no_grad():
            run = self._run_g1(image, mask, grad=False)
        return run

    @staticmethod
    def _real_fake_logits(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One discriminator pass over [real; fake] (no batch statistics in D, so this equals two)."""
        logits, _ = disc(torch.cat([real, fake], 0))
        return logits[: real.shape[0]], logits[real.shape[0]:]

    def discriminator_losses(self, image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> StepOutput:
        for m in self._frozen_modules():
            _clear_grads(m)
        run = self._cached_run(image, mask)
        if self.stage == "edge":
            d1 = self.discriminator["edge"]
            edges_gt = run.get("edges_gt")
            if edges_gt is None:
                edges_gt = full_edges(run["gray"], self.canny["sigma"], self.canny["low"], self.canny["high"])
            gray = run["gray"]
            real, fake = self._real_fake_logits(d1, torch.cat([gray, edges_gt], 1),
                                                torch.cat([gray, run["edges_pred"].detach()], 1))
            loss = (_bce_logits(real, True) + _bce_logits(fake, False)) / 2   # max_D1 of Eq. 2-3
            return StepOutput(loss, {"edge": loss.detach()})
        d2 = self.discriminator["image"]
        real, fake = self._real_fake_logits(d2, image, pred.detach())
        loss = (_bce_logits(real, True) + _bce_logits(fake, False)) / 2       # max_D2 of Eq. 6
        return StepOutput(loss, {"image": loss.detach()})


@register("edgeconnect")
def build(args: dict, loss: dict, ctx: BuildContext) -> EdgeConnect:
    backbone = lazy_backbone(ctx.perceptual, ctx)
    return EdgeConnect(backbone=backbone, loss_weights=loss.get("weights"), **args)
