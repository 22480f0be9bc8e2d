"""Partial-convolution U-Net (Liu et al. 2018, Sec. 3.3 "Network design"): the learned baseline.

Encoder: `depth` stride-2 partial convolutions with kernels 7, 5, 5, 3, 3, ... (ReLU; BN on all but
the first). Decoder: nearest ×2 upsampling of features *and* mask, concatenation with the encoder
skip (features and masks), partial conv 3×3 with LeakyReLU(0.2); the last layer sees the input
image and has no BN/activation. Width doubles per level up to 8× `base` (512 at published size:
base 64, depth 8, ~32.9 M parameters at 512×512 input). Losses: Eq. 8 (train/losses.py).

The decoder's mask is the concatenation of the up-sampled mask and the skip's mask, one channel
per feature channel (NVIDIA's multi-channel partial conv, as Liu et al. concatenate masks and as
MMagic's PConvDecoder does): sum(1)/sum(M) then counts channels too. NVIDIA released no
inpainting weights; MMagic's PConv checkpoints (7 layers, images in [-1, 1]) load through
`convert_mmagic` with ``depth: 7, value_range: pm1`` and reproduce MMagic's output.

Fine-tuning (Sec. 5, training procedure: lr 5e-5, the encoder's batch norm frozen, the decoder's
kept on): ``training.finetune`` with ``freeze_bn: encoder`` (train/phases.py); the encoder is
`enc`, as naoto0804/pytorch-inpainting-with-partial-conv freezes the BN of the modules named enc_*.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..train.perceptual import lazy_backbone
from .base import BuildContext, PConvLossModel
from .layers.partial_conv import PartialConvBlock
from .registry import register


class PConvUNet(PConvLossModel):
    def __init__(self, base: int = 16, depth: int = 4, backbone: nn.Module | None = None,
                 loss_weights: dict | None = None, value_range: str = "01"):
        super().__init__()
        if value_range not in ("01", "pm1"):
            raise ValueError(f"value_range must be '01' or 'pm1' (MMagic's [-1, 1]), got {value_range!r}")
        self.value_range = value_range
        kernels = [7, 5, 5] + [3] * max(0, depth - 3)
        widths = [min(base * 2 ** i, base * 8) for i in range(depth)]
        self.enc = nn.ModuleList()
        cin = 3
        for i in range(depth):
            self.enc.append(PartialConvBlock(cin, widths[i], kernels[i], stride=2, bn=i > 0, act="relu"))
            cin = widths[i]
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            skip = widths[i - 1] if i > 0 else 3
            cout = widths[i - 1] if i > 0 else 3
            last = i == 0
            self.dec.append(PartialConvBlock(cin + skip, cout, 3, bn=not last, act="none" if last else "leaky"))
            cin = cout
        self.set_backbone(backbone)  # lazy: built on first training use only (models/base.py)
        self.loss_weights = loss_weights or {}

    def encoder_modules(self) -> list[nn.Module]:
        """The encoder, whose batch norm the fine-tune phase freezes (Sec. 5; naoto0804 net.py
        PConvUNet.train: BatchNorm2d named enc_*)."""
        return [self.enc]

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, valid = image_in, 1 - mask  # partial conv wants 1 = known
        if self.value_range == "pm1":
            x = x * 2 - 1
        skips = [(x, valid)]
        for block in self.enc:
            x, valid = block(x, valid)
            skips.append((x, valid))
        skips.pop()
        for block in self.dec:
            s, sv = skips.pop()
            x = F.interpolate(x, size=s.shape[-2:], mode="nearest")
            valid = F.interpolate(valid, size=s.shape[-2:], mode="nearest")
            # the concatenated mask has one channel per concatenated feature channel
            masks = torch.cat([valid.expand(-1, x.shape[1], -1, -1), sv.expand(-1, s.shape[1], -1, -1)], 1)
            x, valid = block(torch.cat([x, s], 1), masks)
        return (x + 1) / 2 if self.value_range == "pm1" else x


@register("pconv_unet")
def build(args: dict, loss: dict, ctx: BuildContext) -> PConvUNet:
    backbone = lazy_backbone(ctx.perceptual, ctx)
    return PConvUNet(backbone=backbone, loss_weights=loss.get("weights"), **args)


# --- MMagic checkpoints (open-mmlab/mmagic mmagic/models/editors/pconv: PConvEncoder/Decoder) ---
def convert_mmagic(state: dict) -> tuple[dict, dict]:
    """(args, our state dict) from an MMagic/mmediting PConv state dict (``state_dict`` of the
    mmengine checkpoint; ``generator.`` keys). encoder.enc{i} -> enc.{i-1}, decoder.dec{i} ->
    dec.{depth-i}; ConvModule's ``conv``/``bn`` names are ours; the constant all-ones
    ``weight_mask_updater`` buffers are checked and dropped."""
    state = {k[len("generator."):] if k.startswith("generator.") else k: v for k, v in state.items()
             if not k.startswith(("disc.", "discriminator."))}
    depth = len({k.split(".")[1] for k in state if k.startswith("encoder.enc")})
    out = {}
    for key, value in state.items():
        part, layer, rest = key.split(".", 2)
        if rest.endswith("weight_mask_updater"):
            if not bool((value == 1).all()):
                raise KeyError(f"{key} is not all ones: not a partial-conv mask updater")
            continue
        i = int(layer[3:])
        if part == "encoder" and layer.startswith("enc"):
            out[f"enc.{i - 1}.{rest}"] = value
        elif part == "decoder" and layer.startswith("dec"):
            out[f"dec.{depth - i}.{rest}"] = value
        else:
            raise KeyError(f"unexpected key {key!r} in an MMagic PConv state dict")
    base = int(out["enc.0.conv.weight"].shape[0])
    return {"base": base, "depth": depth, "value_range": "pm1"}, out
