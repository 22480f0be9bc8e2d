"""PSR-Net (Jin, Hu, He, Peng, Liu, Yang, WWW '21 Companion, "Progressive semantic reasoning for
image inpainting"), a comparison system of CCSA's Tables 2-3.

The paper's text is not in our repository; this follows the structure of the official TF2 code
(sfwyly/PSR-Net, model/psr.py and model/cfr.py), written anew in PyTorch. What we chose is said
where we chose it.

Pipeline (`PSRNet.forward`; widths for `base` b, published b = 64):
1. Head: multi-channel partial convs 7×7/2 (3→b, ReLU) and 7×7 (b→b, BN + LeakyReLU) map the
   masked image to half resolution (layers/pconv_multichannel.py, PSR's variant: the input is not
   pre-multiplied by the mask; `rescale` False is the official ``mul=False``).
2. Progressive semantic reasoning: three stages that share their partial-conv layers (the
   official "three share parameters modules"); each stage goes one level deeper than the one
   before (stage 1 to 1/8 of the input, stage 2 to 1/32, stage 3 to 1/128), decodes back to half
   resolution with U-Net skips, and its output, multiplied by its mask, is the next stage's input.
3. Cross feature reconstruction (CFR, `CrossFeatureReconstruction`, official `AtnConv` +
   `AttentionModule`): in stages 2 and 3, at the 1/8 level, attention scores computed on the
   current stage's (higher-level) feature x_hi are used to reconstruct the previous stage's
   (lower-level) feature x_lo at that level:
       s(q, l)  = Σ_{3×3 window around q} <x_hi patch at q', x_hi patch l / ||x_hi patch l||>
                  (3×3 patches, zero padding; the window sum is the official avg-pool × 9, whose
                  SAME padding averages over the in-image positions only)
       a(q, ·)  = softmax_l(10 · s(q, l));   stage 3 blends in stage 2's scores for the keys l
                  that were valid there: a ← (a_prev · v_prev + a · 1) / (v_prev + 1)
       y        = Σ_q Σ_l a(q, l) · (x_lo patch l placed at q)   (a transposed conv, no /9)
   then four dilated 3×3 convs (1, 2, 4, 8, ReLU) of y are mixed by a channel attention
   (global avg- and max-pooled sum -> shared 2-layer MLP -> softmax over the 4 branches), and a
   1×1 conv fuses [mixed, x_hi].
4. Merge and decode: [stage-2 input, stage-3 input, stage-3 output] -> 1×1 conv to b channels,
   gated by a sigmoid 1×1 conv of [features, masks]; 4×4 transposed conv /2 (BN, LeakyReLU) to
   full resolution; a 3×3 partial conv over [masked image, features] (b/2, LeakyReLU), a
   bottleneck residual block, and a 3×3 conv to RGB with a sigmoid.
Loss (official model/loss.py, images in [0, 1], M the hole mask):
   L = mean|I_out - I_gt| + 5 mean(M ⊙ |I_out - I_gt|) + 0.01 L_tv(I_comp)
       + 0.05 Σ_p (mean|ψp(I_out) - ψp(I_gt)| + mean|ψp(I_comp) - ψp(I_gt)|)
       + 120 Σ_p (mean (G_p(I_out) - G_p(I_gt))² + mean (G_p(I_comp) - G_p(I_gt))²)
   ψp = pool1..pool3 of the perceptual backbone (VGG16 block1-3_pool in the official), G_p the
   Gram matrix / (C H W); L_tv: mean absolute horizontal + vertical differences of I_comp
   multiplied by the hole dilated by one pixel. Adam betas (0.5, 0.999); the official config does
   not set the learning rate (ours: 1e-4 for the published setting).

Our choices: PyTorch's symmetric padding instead of TF's SAME (same output sizes); features are
upsampled (nearest, like Keras' UpSampling2D) to the skip's size, so inputs whose side is not a
multiple of 128 work (at 64 px the deepest levels are 1×1); the official decoder at 1/4 of stages
2-3 takes its mask from the encoder's 1/8 level instead of the decoder's (we follow the code).

Sizes: published (`base` 64): 28,825,123 parameters (the official layers' trainable weights;
BN running statistics, which Keras' count_params adds, are buffers here). CCSA's Table 3 lists
"110" for PSR — which is 28.8 M float32 weights in MiB (28,825,123 · 4 / 2^20 = 109.96), as RFR's
"119" is its 31,224,100 in MiB (119.1): for these two the column reads as MiB of weights (e.g.
checkpoint size), while CCSA's own "100" matches its 99,989,877 parameters (ccsa-res1att1-pub). Small default for the built-in run: `base` 4 (114,446 parameters).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.losses import out_comp_features
from ..train.perceptual import lazy_backbone
from .base import BuildContext, InpaintModel, StepOutput
from .layers.pconv_multichannel import MultiChannelPartialConv2d
from .registry import register

PSR_WEIGHTS = {"l1": 1.0, "hole": 5.0, "tv": 0.01, "perceptual": 0.05, "style": 120.0}


class PartialConv(nn.Module):
    """The official `PartialConv`: multi-channel partial conv without bias; `flag` adds BN +
    LeakyReLU(0.2); `mul` False keeps the raw convolution (the mask is still updated)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 2, flag: bool = True, mul: bool = True):
        super().__init__()
        self.conv = MultiChannelPartialConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                                              premultiply=False, rescale=mul)
        self.bn = nn.BatchNorm2d(cout) if flag else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = self.conv(x, mask)
        if self.bn is not None:
            x = F.leaky_relu(self.bn(x), 0.2)
        return x, mask


class Bottleneck(nn.Module):
    """1×1 (c/4) -> 3×3 (c/4) -> 1×1 (c), BN each, identity skip, ReLU (official `Bottleneck`)."""

    def __init__(self, ch: int):
        super().__init__()
        mid = max(ch // 4, 1)
        self.body = nn.Sequential(
            nn.Conv2d(ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, ch, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


def key_validity(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, L]: 1 where the 3×3 patch (zero padded) of the bilinearly resized mask is all valid."""
    m = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    mean = F.unfold(m, 3, padding=1).mean(1)
    return (mean >= 1.0 - 1e-6).to(mask.dtype)


def cross_attention_scores(x_hi: torch.Tensor, softmax_scale: float = 10.0) -> torch.Tensor:
    """[N, L keys, h, w queries]: step 3's a(q, l) before the blend with the previous stage."""
    n, _, h, w = x_hi.shape
    cols = F.unfold(x_hi, 3, padding=1)                                    # [N, C*9, L]
    keys = cols / cols.pow(2).sum(1, keepdim=True).sqrt().clamp(min=1e-4)
    scores = torch.bmm(keys.transpose(1, 2), cols).view(n, h * w, h, w)    # correlation per query
    scores = F.avg_pool2d(scores, 3, 1, 1, count_include_pad=False) * 9    # 3×3 window sum
    return F.softmax(scores * softmax_scale, dim=1)


def reconstruct(x_lo: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """y = Σ_q Σ_l a(q, l) · (3×3 patch l of x_lo placed at q): the transposed conv of step 3."""
    n, c, h, w = x_lo.shape
    patches = F.unfold(x_lo, 3, padding=1)                                 # [N, C*9, L]
    cols = torch.bmm(patches, attention.reshape(n, h * w, h * w))         # [N, C*9, P]
    return F.fold(cols, (h, w), 3, padding=1)


class CrossFeatureReconstruction(nn.Module):
    """Step 3 (official `AttentionModule` around `AtnConv`)."""

    def __init__(self, ch: int, rates=(1, 2, 4, 8), softmax_scale: float = 10.0):
        super().__init__()
        self.softmax_scale = softmax_scale
        self.blocks = nn.ModuleList(nn.Conv2d(ch, ch, 3, padding=r, dilation=r) for r in rates)
        self.mlp1 = nn.Linear(ch, max(ch // 8, 8))
        self.mlp2 = nn.Linear(max(ch // 8, 8), ch * len(rates))
        self.combiner = nn.Conv2d(2 * ch, ch, 1)

    def attend(self, x_lo: torch.Tensor, x_hi: torch.Tensor, mask: torch.Tensor,
               prev: dict | None = None) -> tuple[torch.Tensor, dict]:
        att = cross_attention_scores(x_hi, self.softmax_scale)
        if prev is not None:
            v = prev["valid"][:, :, None, None]
            eps = 1.0 + 1e-7   # |ratio| + 1e-7 with the official constant ratio 1
            att = (prev["scores"] * v + att * eps) / (v + eps)
        state = {"scores": att, "valid": key_validity(mask, x_hi.shape[-2:])}
        return reconstruct(x_lo, att), state

    def forward(self, x_lo: torch.Tensor, x_hi: torch.Tensor, mask: torch.Tensor,
                prev: dict | None = None) -> tuple[torch.Tensor, dict]:
        y, state = self.attend(x_lo, x_hi, mask, prev)
        branches = torch.stack([F.relu(b(y)) for b in self.blocks])       # [4, N, C, h, w]
        total = branches.sum(0)
        mix = self.mlp2(F.relu(self.mlp1(total.mean((2, 3))))) + self.mlp2(F.relu(self.mlp1(total.amax((2, 3)))))
        weights = F.softmax(mix.view(total.shape[0], total.shape[1], len(self.blocks)), dim=-1)
        mixed = (branches * weights.permute(2, 0, 1)[..., None, None]).sum(0)
        return self.combiner(torch.cat([mixed, x_hi], 1)), state


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class PSRNet(InpaintModel):
    def __init__(self, base: int = 4, backbone: nn.Module | None = None, loss_weights: dict | None = None,
                 softmax_scale: float = 10.0):
        super().__init__()
        unknown = set(loss_weights or {}) - set(PSR_WEIGHTS)
        if unknown:
            raise InpaintBenchError(f"psr: unknown loss weight(s) {sorted(unknown)}; known: {sorted(PSR_WEIGHTS)}")
        if base < 2:
            raise InpaintBenchError(f"psr: base must be >= 2 (got {base}); fix models.<name>.args")
        b = base
        self.pconv01 = PartialConv(3, b, 7, 2, flag=False)
        self.pconv02 = PartialConv(b, b, 7, 1)
        self.pconv11 = PartialConv(b, 2 * b, 7, 2)
        self.pconv12 = PartialConv(2 * b, 4 * b, 5, 2, flag=False)
        self.u_pconv11 = PartialConv(6 * b, 2 * b, 3, 1)
        self.u_pconv10 = PartialConv(3 * b, b, 3, 1)
        self.pconv23 = PartialConv(4 * b, 8 * b, 3, 2, mul=False)
        self.pconv24 = PartialConv(8 * b, 8 * b, 3, 2, mul=False)
        self.u_pconv22 = PartialConv(12 * b, 4 * b, 3, 1, mul=False)
        self.u_pconv23 = PartialConv(16 * b, 8 * b, 3, 1, mul=False)
        self.pconv35 = PartialConv(8 * b, 8 * b, 3, 2, mul=False)
        self.pconv36 = PartialConv(8 * b, 8 * b, 3, 2, mul=False)
        self.u_pconv34 = PartialConv(16 * b, 8 * b, 3, 1, mul=False)
        self.u_pconv35 = PartialConv(16 * b, 8 * b, 3, 1, mul=False)
        self.cfr = CrossFeatureReconstruction(4 * b, softmax_scale=softmax_scale)
        self.merge = nn.Conv2d(3 * b, b, 1, bias=False)
        self.merge_gate = nn.Conv2d(4 * b, b, 1, bias=False)
        self.tconv = nn.ConvTranspose2d(b, b, 4, stride=2, padding=1, bias=False)
        self.tconv_bn = nn.BatchNorm2d(b)
        self.tail1 = PartialConv(3 + b, b // 2, 3, 1, flag=False)
        self.tail2 = Bottleneck(b // 2)
        self.out = nn.Conv2d(b, 3, 3, padding=1)
        self.set_backbone(backbone)  # lazy: built on first training use only (models/base.py)
        self.loss_weights = {**PSR_WEIGHTS, **(loss_weights or {})}

    @staticmethod
    def _dec(layer: PartialConv, x: torch.Tensor, m: torch.Tensor, skip: torch.Tensor, skip_m: torch.Tensor):
        return layer(torch.cat([_up(x, skip), skip], 1), torch.cat([_up(m, skip), skip_m], 1))

    def _down(self, x: torch.Tensor, m: torch.Tensor):
        """Shared levels 1/4 and 1/8 of every stage."""
        x1, m1 = self.pconv11(x, m)
        x1 = F.relu(x1)
        x2, m2 = self.pconv12(x1, m1)
        return x1, m1, F.relu(x2), m2

    def stages(self, image_in: torch.Tensor, mask: torch.Tensor):
        """Steps 1-3: the stage inputs x2_0, x3_0, the stage-3 output x3 and their masks."""
        valid = (1 - mask).expand(-1, 3, -1, -1)
        x, m = self.pconv01(image_in * valid, valid)
        x, m = self.pconv02(F.relu(x), m)
        # stage 1 (to 1/8)
        x1_0, m1_0 = x, m
        x1_1, m1_1, x1_2, m1_2 = self._down(x1_0, m1_0)
        u, um = self._dec(self.u_pconv11, x1_2, m1_2, x1_1, m1_1)
        u, um = self._dec(self.u_pconv10, u, um, x1_0, m1_0)
        # stage 2 (to 1/32), CFR from stage 1's 1/8 feature
        x2_0, m2_0 = u * um, um
        x2_1, m2_1, x2_2, m2_2 = self._down(x2_0, m2_0)
        x2_3, state = self.cfr(x1_2, x2_2, m2_2)
        x2_3, m2_3 = self.pconv23(x2_3, m2_2)
        x2_3 = F.relu(x2_3)
        x2_4, m2_4 = self.pconv24(x2_3, m2_3)
        u, um = self._dec(self.u_pconv23, F.relu(x2_4), m2_4, x2_3, m2_3)
        u, um = self._dec(self.u_pconv22, u, um, x2_2, m2_2)
        u, um = self.u_pconv11(torch.cat([_up(u, x2_1), x2_1], 1), torch.cat([_up(m2_2, x2_1), m2_1], 1))
        u, um = self._dec(self.u_pconv10, u, um, x2_0, m2_0)
        # stage 3 (to 1/128), CFR from stage 2's 1/8 feature, blended with stage 2's scores
        x3_0, m3_0 = u * um, um
        x3_1, m3_1, x3_2, m3_2 = self._down(x3_0, m3_0)
        x3_3, _ = self.cfr(x2_2, x3_2, m3_2, state)
        x3_3, m3_3 = self.pconv23(x3_3, m3_2)
        x3_3 = F.relu(x3_3)
        x3_4, m3_4 = self.pconv24(x3_3, m3_3)
        x3_4 = F.relu(x3_4)
        x3_5, m3_5 = self.pconv35(x3_4, m3_4)
        x3_5 = F.relu(x3_5)
        x3_6, m3_6 = self.pconv36(x3_5, m3_5)
        u, um = self._dec(self.u_pconv35, F.relu(x3_6), m3_6, x3_5, m3_5)
        u, um = self._dec(self.u_pconv34, u, um, x3_4, m3_4)
        u, um = self._dec(self.u_pconv23, u, um, x3_3, m3_3)
        u, um = self._dec(self.u_pconv22, u, um, x3_2, m3_2)
        u, um = self.u_pconv11(torch.cat([_up(u, x3_1), x3_1], 1), torch.cat([_up(m3_2, x3_1), m3_1], 1))
        u, um = self._dec(self.u_pconv10, u, um, x3_0, m3_0)
        return (x2_0, m2_0), (x3_0, m3_0), (u * um, um)

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        (x2, m2), (x3, m3), (y, my) = self.stages(image_in, mask)
        c = self.merge(torch.cat([x2, x3, y], 1))                                # step 4
        gate = torch.sigmoid(self.merge_gate(torch.cat([c, m2, m3, my], 1)))
        c = c * gate
        x = F.leaky_relu(self.tconv_bn(self.tconv(c)), 0.2)
        x = F.interpolate(x, size=image_in.shape[-2:], mode="bilinear") if x.shape[-2:] != image_in.shape[-2:] else x
        g = F.interpolate(gate, size=image_in.shape[-2:], mode="bilinear")
        valid = (1 - mask).expand(-1, 3, -1, -1)
        x, _ = self.tail1(torch.cat([image_in * valid, x], 1), torch.cat([valid, g], 1))
        x = F.leaky_relu(x, 0.2)
        return torch.sigmoid(self.out(torch.cat([x, self.tail2(x)], 1)))

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        w = self.loss_weights
        pred = self(image * (1 - mask), mask)
        comp = pred * mask + image * (1 - mask)
        err = (pred - image).abs()
        terms = {"l1": err.mean(), "hole": (err * mask).mean(), "tv": psr_tv_loss(comp, mask)}
        if self.backbone is not None and (w["perceptual"] > 0 or w["style"] > 0):
            # one batched pass over [pred, comp], target features and grams once (train/losses.py)
            (f_out, f_comp, f_gt), (g_out, g_comp, g_gt) = out_comp_features(self.backbone, pred, comp, image,
                                                                             grams=True)
            terms["perceptual"] = sum((a - g).abs().mean() + (b - g).abs().mean() for a, b, g in zip(f_out, f_comp, f_gt))
            terms["style"] = sum((a - g).pow(2).mean() + (b - g).pow(2).mean() for a, b, g in zip(g_out, g_comp, g_gt))
        total = sum(w[k] * v for k, v in terms.items())
        return StepOutput(total, {k: v.detach() for k, v in terms.items()}, pred)


def psr_tv_loss(comp: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Official total_variation_loss: differences of comp ⊙ (hole dilated by a 3×3 box)."""
    region = (F.max_pool2d(hole, 3, 1, 1) > 0).to(comp.dtype)
    x = comp * region
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


@register("psr")
def build(args: dict, loss: dict, ctx: BuildContext) -> PSRNet:
    backbone = lazy_backbone(ctx.perceptual, ctx)
    return PSRNet(backbone=backbone, loss_weights=loss.get("weights"), **args)
