"""RFR-Net (Li et al. 2020, "Recurrent feature reasoning for image inpainting", CVPR), a baseline
of the benchmark, written from the paper's description (section numbers of the CVPR paper) and
matched to the official code (jingyuanli001/RFR-Inpainting modules/RFRNet.py, Attention.py):
a state dict of the official RFRNet loads through `convert_official` and gives the same output.

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
   The attention scores of each recurrence are passed to the next (Sec. 3.2); the attention's
   validity mask is the recurrence's mask resized by nearest neighbour (official).
3. Adaptive feature merging (Sec. 3.1.3): F̄ = Σ_i F^i M^i / (Σ_i M^i + 7·1e-7) over the head
   features F⁰ (with its mask M⁰) and the recurrences' outputs, as the official code merges
   (feature_group starts with the head output); positions never filled stay 0.
4. Decoding (Sec. 3.3): a 4×4 transposed conv back to full resolution, concatenation with the
   masked input image, a 3×3 partial conv (no bias) whose mask is [M_image (3 channels), M̄ (c
   channels)] in NVIDIA's multi-channel form, a residual bottleneck block, and a 3×3 conv to
   RGB without bias (linear output). Activations outside the reasoning module are LeakyReLU with
   PyTorch's default slope 0.01 (official F.leaky_relu); inside it 0.2 (official nn.LeakyReLU(0.2)).
Losses (Sec. 3.3): λ_valid L_valid + λ_hole L_hole + λ_perc L_perc + λ_style L_style + λ_tv L_tv
with 1, 6, 0.05, 120, 0.1 — the official weights (model.py get_g_loss), Liu et al.'s losses
(train/losses.py `pconv_losses`), perceptual backbone from
`lazy_backbone(ctx.perceptual, ctx)` (built for training only).
Fine-tuning (official model.py ``train(finetune=True)``, RFRNet.train): lr 5e-5 with a new Adam
and *every* BatchNorm2d of the network in eval mode: ``training.finetune`` with ``freeze_bn: all``,
``reset_optimizer: true`` (train/phases.py). `encoder_modules` (for ``freeze_bn: encoder``) names
the reasoning module's encoder, the official enc_1-enc_6.

Published size: ``base`` 64 (reasoning widths 128-256-512), 6 recurrences: 31,224,065 parameters
(the official RFRNet's count). Small default for the built-in 64×64 run: ``base`` 4, 2
recurrences: 123,252 parameters (the
recurrence count shares weights and does not change the count; at 64×64 the head plus two
recurrences reach about 34 pixels into a hole, 12 more per recurrence).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.perceptual import lazy_backbone
from .base import BuildContext, PConvLossModel
from .layers.kca import KnowledgeConsistentAttention
from .layers.partial_conv import PartialConv2d, PartialConvBlock
from .registry import register

RFR_WEIGHTS = {"valid": 1.0, "hole": 6.0, "perceptual": 0.05, "style": 120.0, "tv": 0.1}
LEAKY = 0.01  # F.leaky_relu's default slope, used by the official RFRNet outside the module


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1, act: str = "relu") -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
              nn.BatchNorm2d(cout)]
    layers.append(nn.ReLU(inplace=True) if act == "relu" else nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _up_bn(cin: int, cout: int, slope: float = 0.2) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(slope, inplace=True))


def coarse_valid(valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The validity mask at the attention's resolution: nearest-neighbour resize (official)."""
    return F.interpolate(valid, size=size, mode="nearest")


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
        self.size_multiple = 2 ** (levels + 1)  # the head's stride 2 and the module's `levels` stride-2 convs
        # 1. feature mapping
        self.head = nn.ModuleList([PartialConvBlock(3, c, 7, stride=2, bn=True, act="relu"),
                                   PartialConvBlock(c, c, 7, stride=1, bn=True, act="relu")])
        # 2a. area identification (Sec. 3.1.1)
        self.area = nn.ModuleList([PartialConv2d(c, c, 7, padding=3, bias=False),
                                   PartialConv2d(c, c, 7, padding=3, bias=False)])
        self.area_norm = nn.BatchNorm2d(c)   # official bn2, then F.leaky_relu (slope 0.01)
        # 2b. feature reasoning with KCA (Sec. 3.1.2, 3.2)
        self.reason = FeatureReasoning(c, levels, dilated, propagate)
        # 4. decoding (Sec. 3.3)
        tail = max(c // 2, 1)
        self.up = _up_bn(c, c, slope=LEAKY)
        self.tail = PartialConvBlock(3 + c, tail, 3, bn=False, act="leaky", bias=False, slope=LEAKY)
        self.refine = ResidualBottleneck(tail)
        self.to_rgb = nn.Conv2d(2 * tail, 3, 3, padding=1, bias=False)
        self.set_backbone(backbone)  # lazy: built on first training use only (models/base.py)
        unknown = set(loss_weights or {}) - set(RFR_WEIGHTS)
        if unknown:
            raise InpaintBenchError(f"rfr: unknown loss weight(s) {sorted(unknown)}; known: {sorted(RFR_WEIGHTS)}")
        self.loss_weights = {**RFR_WEIGHTS, **(loss_weights or {})}

    def encoder_modules(self) -> list[nn.Module]:
        """The reasoning module's encoder: the official RFRModule enc_1-enc_3 (stride 2) and
        enc_4-enc_6 (dilated). The official fine-tune freezes every BN instead (freeze_bn: all)."""
        return [self.reason.down, self.reason.bottom]

    def recurrent_features(self, image_in: torch.Tensor, mask: torch.Tensor,
                           recurrences: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Steps 1-2: the head's F⁰, M⁰ and the feature map F^i and validity mask M^i of every
        recurrence."""
        x, valid = image_in, 1 - mask   # partial conv wants 1 = known
        for block in self.head:
            x, valid = block(x, valid)
        feats, masks, prev = [x], [valid], None   # F⁰, M⁰: the head output enters the merge
        for _ in range(self.recurrences if recurrences is None else recurrences):
            for conv in self.area:
                x, valid = conv(x, valid)
            x = F.leaky_relu(self.area_norm(x), LEAKY)
            x, prev = self.reason(x, valid, prev)
            x = x * valid
            feats.append(x)
            masks.append(valid)
        return feats, masks

    @staticmethod
    def merge(feats: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sec. 3.1.3 adaptive merging as the official code: mean(F^i M^i) / (mean(M^i) + 1e-7),
        and the last (largest) mask."""
        m = torch.stack(masks)
        merged = (torch.stack(feats) * m).mean(0) / (m.mean(0) + 1e-7)
        return merged, masks[-1]

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor, recurrences: int | None = None) -> torch.Tensor:
        feats, masks = self.recurrent_features(image_in, mask, recurrences)
        merged, valid = self.merge(feats, masks)
        x = self.up(merged)
        valid = F.interpolate(valid, size=x.shape[-2:], mode="nearest")
        # official m5 = [mask ×3 channels, m4 × c channels]: NVIDIA's multi-channel partial conv
        tail_valid = torch.cat([(1 - mask).expand(-1, 3, -1, -1), valid.expand(-1, x.shape[1], -1, -1)], 1)
        x, _ = self.tail(torch.cat([image_in, x], 1), tail_valid)
        return self.to_rgb(torch.cat([x, self.refine(x)], 1))


@register("rfr")
def build(args: dict, loss: dict, ctx: BuildContext) -> RFRNet:
    backbone = lazy_backbone(ctx.perceptual, ctx)
    return RFRNet(backbone=backbone, loss_weights=loss.get("weights"), **args)


# --- official checkpoints (jingyuanli001/RFR-Inpainting modules/RFRNet.py RFRNet) --------------
_RFR_RENAMES = {
    "Pconv1.": "head.0.conv.", "bn1.": "head.0.bn.", "Pconv2.": "head.1.conv.", "bn20.": "head.1.bn.",
    "Pconv21.": "area.0.", "Pconv22.": "area.1.", "bn2.": "area_norm.",
    "RFRModule.enc_1.": "reason.down.0.", "RFRModule.enc_2.": "reason.down.1.", "RFRModule.enc_3.": "reason.down.2.",
    "RFRModule.enc_4.": "reason.bottom.0.", "RFRModule.enc_5.": "reason.bottom.1.", "RFRModule.enc_6.": "reason.bottom.2.",
    "RFRModule.dec_5.": "reason.bottom_dec.0.", "RFRModule.dec_4.": "reason.bottom_dec.1.",
    "RFRModule.dec_3.": "reason.up.0.", "RFRModule.dec_2.": "reason.up.1.", "RFRModule.dec_1.": "reason.up.2.",
    "RFRModule.att.combiner.": "reason.kca.combine.", "RFRModule.att.att.ratio": "reason.kca.ratio",
    "Tconv.": "up.0.", "bn3.": "up.1.", "tail1.": "tail.conv.",
    "tail2.conv1.": "refine.body.0.", "tail2.bn1.": "refine.body.1.", "tail2.conv2.": "refine.body.3.",
    "tail2.bn2.": "refine.body.4.", "tail2.conv3.": "refine.body.6.", "tail2.bn3.": "refine.body.7.",
    "out.": "to_rgb.",
}


def convert_official(state: dict) -> tuple[dict, dict]:
    """(args, our state dict) from the official RFRNet's state dict (the ``generator`` entry of
    its checkpoints; a ``module.`` prefix from nn.DataParallel is removed). The official network
    has 3 levels and 3 dilated convs; its width is read off Pconv1."""
    out = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        for prefix in sorted(_RFR_RENAMES, key=len, reverse=True):   # "tail2.bn1." before "bn1."
            if name.startswith(prefix):
                name = _RFR_RENAMES[prefix] + name[len(prefix):]
                break
        else:
            raise KeyError(f"unexpected key {key!r} in an RFR-Net state dict")
        if name == "reason.kca.ratio":
            value = value.reshape(())
        out[name] = value
    base = int(out["head.0.conv.weight"].shape[0])
    return {"base": base, "levels": 3, "dilated": 3, "propagate": 3, "recurrences": 6}, out
