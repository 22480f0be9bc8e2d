"""Loss terms shared by the models (each names the equation it implements).

Partial-convolution losses, Liu et al. 2018 Sec. 3.4 (mask M there = valid; here `mask` = hole):
    L_valid = ||(1-hole) ⊙ (I_out - I_gt)||_1 / N                      (Eq. 3)
    L_hole  = ||hole ⊙ (I_out - I_gt)||_1 / N                           (Eq. 3)
    L_perc  = Σ_p ||ψp(I_out)-ψp(I_gt)||_1/Nψp + ||ψp(I_comp)-ψp(I_gt)||_1/Nψp   (Eq. 4)
    L_style = Σ_p ||Kp (ψp^T ψp (I_x) - ψp^T ψp (I_gt))||_1 / Cp^2, x ∈ {out, comp}  (Eq. 5-6)
    L_tv    = total variation of I_comp on the 1-pixel dilated hole      (Eq. 7)
    L_total = L_valid + 6 L_hole + 0.05 L_perc + 120 (L_style_out + L_style_comp) + 0.1 L_tv  (Eq. 8)
N is the element count (mean), as in the paper's normalisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PCONV_WEIGHTS = {"valid": 1.0, "hole": 6.0, "perceptual": 0.05, "style": 120.0, "tv": 0.1}


def masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mean(|weight ⊙ (pred - target)|) over all elements (weight broadcast over channels)."""
    return (weight * (pred - target)).abs().mean()


def gram(feat: torch.Tensor) -> torch.Tensor:
    """Kp ψ^T ψ with Kp = 1/(C H W) (Eq. 5)."""
    n, c, h, w = feat.shape
    f = feat.reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def perceptual_loss(feats_x: list[torch.Tensor], feats_gt: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.l1_loss(a, b) for a, b in zip(feats_x, feats_gt))


def style_loss(feats_x: list[torch.Tensor], feats_gt: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.l1_loss(gram(a), gram(b)) for a, b in zip(feats_x, feats_gt))


def batched_features(backbone, *xs: torch.Tensor) -> list[list[torch.Tensor]]:
    """The backbone's features of each of `xs`, from ONE forward over them concatenated on the
    batch axis (the same math as one forward each: every layer acts per sample; batched convs
    may differ in the last bits). Returns one feature list per input, views of the batched maps."""
    if len(xs) == 1:
        return [list(backbone(xs[0]))]
    sizes = [x.shape[0] for x in xs]
    feats = backbone(torch.cat(xs))
    return [list(parts) for parts in zip(*(f.split(sizes) for f in feats))]


def target_features(backbone, *xs: torch.Tensor) -> list[list[torch.Tensor]]:
    """Features of target images (no gradient), once per step, batched like `batched_features`."""
    with torch.no_grad():
        return [[f.detach() for f in fs] for fs in batched_features(backbone, *xs)]


def out_comp_features(backbone, pred: torch.Tensor, comp: torch.Tensor, image: torch.Tensor,
                      grams: bool = False):
    """(ψ(I_out), ψ(I_comp), ψ(I_gt)) per layer: one forward with gradient over [I_out, I_comp]
    (concatenated on the batch axis), the target's features once under no_grad. With `grams`,
    also their gram matrices (Eq. 5) as (G_out, G_comp, G_gt): one bmm per layer for out and comp
    together, the target's computed once (not once per branch or per loss term)."""
    (f_gt,) = target_features(backbone, image)
    n = pred.shape[0]
    both = backbone(torch.cat([pred, comp]))
    f_out, f_comp = [f[:n] for f in both], [f[n:] for f in both]
    if not grams:
        return f_out, f_comp, f_gt
    g_both = [gram(f) for f in both]
    with torch.no_grad():
        g_gt = [gram(f) for f in f_gt]
    return (f_out, f_comp, f_gt), ([g[:n] for g in g_both], [g[n:] for g in g_both], g_gt)


def out_comp_perceptual_style(backbone, pred: torch.Tensor, comp: torch.Tensor,
                              image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4 and Eq. 6 (out + comp) of Liu et al. 2018 from one `out_comp_features` pass: the
    same sums as perceptual_loss(f_out, f_gt) + perceptual_loss(f_comp, f_gt) and
    style_loss(f_out, f_gt) + style_loss(f_comp, f_gt)."""
    (f_out, f_comp, f_gt), (g_out, g_comp, g_gt) = out_comp_features(backbone, pred, comp, image, grams=True)
    perc = perceptual_loss(f_out, f_gt) + perceptual_loss(f_comp, f_gt)
    style = (sum(F.l1_loss(a, b) for a, b in zip(g_out, g_gt))
             + sum(F.l1_loss(a, b) for a, b in zip(g_comp, g_gt)))
    return perc, style


def tv_loss(comp: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Total variation over the region P = hole dilated by one pixel (Eq. 7)."""
    region = F.max_pool2d(hole, kernel_size=3, stride=1, padding=1)
    dx = (comp[..., :, 1:] - comp[..., :, :-1]).abs() * region[..., :, 1:] * region[..., :, :-1]
    dy = (comp[..., 1:, :] - comp[..., :-1, :]).abs() * region[..., 1:, :] * region[..., :-1, :]
    return dx.mean() + dy.mean()


def pconv_losses(pred: torch.Tensor, image: torch.Tensor, hole: torch.Tensor, backbone=None,
                 weights: dict | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 8 of Liu et al. 2018; `backbone` None drops the perceptual and style terms."""
    w = {**PCONV_WEIGHTS, **(weights or {})}
    comp = pred * hole + image * (1 - hole)
    terms = {
        "valid": masked_l1(pred, image, 1 - hole),
        "hole": masked_l1(pred, image, hole),
        "tv": tv_loss(comp, hole),
    }
    if backbone is not None and (w["perceptual"] > 0 or w["style"] > 0):
        terms["perceptual"], terms["style"] = out_comp_perceptual_style(backbone, pred, comp, image)
    total = sum(w[k] * v for k, v in terms.items())
    # detached tensors, not floats: a float() per term would be a host-device sync every step on
    # CUDA; the trainer reads the logs back every `log_every` steps
    return total, {k: v.detach() for k, v in terms.items()}
