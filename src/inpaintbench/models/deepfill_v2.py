"""DeepFill v2 (Yu et al. 2019, "Free-form image inpainting with gated convolution"), arch
``deepfill_v2``.

Generator (Sec. 3.1 and Fig. 3): every convolution is a gated convolution
(layers/gated_conv.py). A *coarse network* (encoder with two stride-2 steps, four dilated gated
convs with rates 2-4-8-16, decoder with resize-convolutions) produces a first estimate; its
composite with the known pixels enters a *refinement network* with two parallel encoders: a
dilated-conv branch and a branch with *contextual attention* (DeepFill v1, Yu et al. 2018,
Sec. 3; layers/contextual_attention.py, per-sample masks), whose features are concatenated
and decoded. Layer list as in the DeepFill v1/v2 networks; ``width`` is the number of *feature*
channels of the first level (24 at published size: the released code's cnum = 48 conv outputs
split into 24 features and 24 gates), doubled twice.

Discriminator (Sec. 3.2): SN-PatchGAN on the composite image with the mask as an input channel
(layers/patch_discriminators.py), hinge loss.

Objective (Sec. 3.2, "Our final objective function for the inpainting network is only composed
of pixel-wise ℓ1 reconstruction loss and SN-PatchGAN loss, with default loss balancing
hyper-parameter as 1:1"): ℓ1 on the coarse and on the refined output plus the generator hinge
loss, balanced 1:1. The network works on [-1, 1] images as in the released code,
the ℓ1 terms are computed on [0, 1] (half the value), so their default weight is 2 — the paper's
1:1 balance on its own pixel scale.

Choices where the paper is silent:
* the network works in [-1, 1] (input ``2x − 1``, holes set to 0, tanh outputs, as in the
  released code); predictions are mapped back to [0, 1], the project convention, and the ℓ1
  terms are computed in [0, 1] (half the [-1, 1] value, hence weight 2, see above);
* stage inputs as the released code (JiahuiYu/generative_inpainting inpaint_model.py
  build_inpaint_net): the coarse network sees [x, 1, mask] (5 channels: the masked image, a
  constant channel of ones, the mask), the refinement network only the composite x (3 channels);
  the optional user-sketch channel of the paper is not used by this benchmark;
* each stage's output layer is a plain convolution (the released gen_conv returns before
  gating when it has 3 outputs), then tanh;
* the discriminator scores the composite ``pred·mask + image·(1 − mask)``, the image the
  generator delivers, as in the released code.

Variants (``variant``): ``tf`` follows the released TF code (inpaint_ops.py gen_conv /
contextual_attention, neuralgym's resize): TF 'SAME' zero padding (`TFSameGatedConv2d`: stride-2
convs pad only bottom/right), nearest resizing with align_corners (`tf_resize_nearest`) for the
attention's mask and features, and its contextual attention (`TFContextualAttention`); its
checkpoints' variables convert with `convert_tf`. ``mmagic`` follows MMagic's PyTorch port
(`convert_mmagic`). Both are checked against the official code in tests/test_official_equivalence.py
(with seeded weights; the symmetric padding and MMagic's attention used for ``tf`` before differed
from the TF graph by 0.53 at the output).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BuildContext, InpaintModel, StepOutput, composite
from .layers.contextual_attention import ContextualAttention, propagate_scores_flat
from .layers.gated_conv import GatedConv2d, GatedUpConv2d
from .layers.patch_discriminators import SNPatchGAN, hinge_d_loss, hinge_g_loss
from .registry import register

# 1:1 on the paper's [-1, 1] pixel scale; the ℓ1 terms here are computed (and logged) on the
# project's [0, 1] scale, half as large, so their weight is 2 to keep the paper's balance
DEFAULT_WEIGHTS = {"l1_coarse": 2.0, "l1_refine": 2.0, "adv": 1.0}
# built-in 64×64 CPU run (the constructor defaults) and the published widths (Sec. 4 / released code)
SMALL_ARGS = {"width": 4, "disc_width": 8}
PUBLISHED_ARGS = {"width": 24, "disc_width": 64}


# --- the released TF code's conventions (JiahuiYu/generative_inpainting inpaint_ops.py, TF 1) -----
def tf_same_pad(x: torch.Tensor, kernel: int, stride: int, dilation: int) -> torch.Tensor:
    """Zero padding of TF's padding='SAME': out = ceil(in / stride), the extra pixel of an odd
    total at the bottom/right (a stride-2 3×3 conv on an even size pads 0 above, 1 below; PyTorch's
    symmetric padding=1 would sample the grid shifted by one pixel)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class TFSameGatedConv2d(GatedConv2d):
    """inpaint_ops.py gen_conv with padding='SAME' (tf.layers.conv2d, TF's asymmetric 'SAME')."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv.padding = (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        feature, gating = c(tf_same_pad(x, c.kernel_size[0], c.stride[0], c.dilation[0])).split(self.out_channels, dim=1)
        return self.act(feature) * torch.sigmoid(gating)


def tf_resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """neuralgym ops/layers.py resize(func=tf.image.resize_nearest_neighbor), align_corners=True
    (its default): source index round(j · (in − 1) / (out − 1)) in float32 as TF's legacy kernel
    (PyTorch's nearest takes floor(j · in / out): for a ×½ downsampling TF takes 0, 2, …, in − 1
    with the last step 3, PyTorch 0, 2, …, in − 2)."""
    idx = []
    for n_in, n_out in zip(x.shape[-2:], size):
        scale = torch.tensor((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0, dtype=torch.float32)
        j = torch.arange(n_out, dtype=torch.float32) * scale
        idx.append(torch.floor(j + 0.5).long().clamp(max=n_in - 1).to(x.device))  # roundf: half away from 0
    return x[..., idx[0][:, None], idx[1][None, :]]


class TFContextualAttention(ContextualAttention):
    """inpaint_ops.py contextual_attention(f, b, mask_s, ksize 3, stride 1, rate 2, fuse_k 3,
    softmax_scale 10, fuse=True) as the released TF code computes it, where it differs from the
    parent (MMagic's conventions): features and mask downsampled by `tf_resize_nearest`, the mask in
    two steps (build_inpaint_net's resize_mask_like to the feature size, then by `rate`); scores of
    background patches that touch the hole are multiplied by 0 (not -inf) before the softmax over
    *all* positions and the weights multiplied by the patch validity again (so they sum to less
    than 1); the pasted patches are divided by the constant 4. Per-sample masks as the parent (the
    TF code uses the first sample's mask for the batch: the same for batch 1)."""

    def forward(self, fg: torch.Tensor, bg: torch.Tensor, mask: torch.Tensor, return_attention: bool = False):
        n, c, h, w = bg.shape
        r, k = self.rate, self.ksize
        hd, wd = h // r, w // r
        fg_d = tf_resize_nearest(fg, (hd, wd))
        bg_d = fg_d if bg is fg else tf_resize_nearest(bg, (hd, wd))
        hole = mask.to(bg.dtype)
        if hole.shape[-2:] != (h, w):
            hole = tf_resize_nearest(hole, (h, w))
        hole_d = tf_resize_nearest(hole, (hd, wd))
        fg_p = F.unfold(fg_d, k, padding=k // 2)
        bg_p = F.normalize(fg_p if bg is fg else F.unfold(bg_d, k, padding=k // 2), dim=1, eps=1e-4)
        scores = torch.bmm(bg_p.transpose(1, 2), fg_p)                       # (n, L_bg, L_fg)
        mm = (F.unfold(hole_d, k, padding=k // 2).mean(dim=1) == 0).to(scores.dtype)[:, :, None]
        if self.fuse and self.fuse_k > 1:
            scores = propagate_scores_flat(scores, hd, wd, self.fuse_k)
        attn = torch.softmax(scores * mm * self.softmax_scale, dim=1) * mm
        raw = F.unfold(bg, 2 * r, stride=r, padding=r // 2)                  # extract_image_patches 'SAME'
        out = F.fold(torch.bmm(raw, attn), (h, w), 2 * r, stride=r, padding=r // 2) / 4.0  # conv2d_transpose / 4
        return (out, attn) if return_attention else out


def _dilated_stack(ch: int, pm: str = "zeros") -> list[nn.Module]:
    """Four dilated gated convs with rates 2, 4, 8, 16 (Fig. 3, both stages)."""
    return [GatedConv2d(ch, ch, 3, dilation=d, padding_mode=pm) for d in (2, 4, 8, 16)]


def _decoder(cin: int, c: int, pm: str = "zeros", gated_output: bool = False) -> nn.Sequential:
    """Decoder of both stages: two gated convs, two ×2 resize-convs, output layer (Fig. 3): a plain
    conv (released TF code) or a gated conv without feature activation (MMagic)."""
    half = max(1, c // 2)
    out = (GatedConv2d(half, 3, 3, activation="none", padding_mode=pm) if gated_output
           else nn.Conv2d(half, 3, 3, padding=1, padding_mode=pm))
    return nn.Sequential(
        GatedConv2d(cin, 4 * c, 3, padding_mode=pm), GatedConv2d(4 * c, 4 * c, 3, padding_mode=pm),
        GatedUpConv2d(4 * c, 2 * c, padding_mode=pm), GatedConv2d(2 * c, 2 * c, 3, padding_mode=pm),
        GatedUpConv2d(2 * c, c, padding_mode=pm), GatedConv2d(c, half, 3, padding_mode=pm),
        out,
    )


class CoarseNetwork(nn.Module):
    """Stage 1 of Fig. 3: encoder (5×5, two stride-2 steps), dilated middle, decoder."""

    def __init__(self, cin: int, c: int, pm: str = "zeros", gated_output: bool = False, conv=GatedConv2d):
        super().__init__()
        g = lambda a, b, k, **kw: conv(a, b, k, padding_mode=pm, **kw)
        self.encoder = nn.Sequential(
            g(cin, c, 5), g(c, 2 * c, 3, stride=2), g(2 * c, 2 * c, 3),
            g(2 * c, 4 * c, 3, stride=2), g(4 * c, 4 * c, 3), g(4 * c, 4 * c, 3),
            *_dilated_stack(4 * c, pm),
        )
        self.decoder = _decoder(4 * c, c, pm, gated_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(self.encoder(x)))


class RefinementNetwork(nn.Module):
    """Stage 2 of Fig. 3: dilated-conv branch ∥ contextual-attention branch, merged decoder."""

    def __init__(self, cin: int, c: int, attention: ContextualAttention, pm: str = "zeros",
                 gated_output: bool = False, attention_act: str = "relu", decoder_width: int | None = None,
                 conv=GatedConv2d):
        super().__init__()
        g = lambda a, b, k, **kw: conv(a, b, k, padding_mode=pm, **kw)
        self.conv_branch = nn.Sequential(
            g(cin, c, 5), g(c, c, 3, stride=2), g(c, 2 * c, 3),
            g(2 * c, 2 * c, 3, stride=2), g(2 * c, 4 * c, 3), g(4 * c, 4 * c, 3),
            *_dilated_stack(4 * c, pm),
        )
        self.attention_encoder = nn.Sequential(
            g(cin, c, 5), g(c, c, 3, stride=2), g(c, 2 * c, 3),
            g(2 * c, 4 * c, 3, stride=2), g(4 * c, 4 * c, 3),
            g(4 * c, 4 * c, 3, activation=attention_act),
        )
        self.attention = attention
        self.attention_decoder = nn.Sequential(g(4 * c, 4 * c, 3), g(4 * c, 4 * c, 3))
        self.decoder = _decoder(8 * c, decoder_width or c, pm, gated_output)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        conv_feats = self.conv_branch(x)
        att = self.attention_encoder(x)
        att = self.attention(att, att, mask)  # foreground and background: the same feature map
        att = self.attention_decoder(att)
        return torch.tanh(self.decoder(torch.cat([conv_feats, att], dim=1)))


class DeepFillV2(InpaintModel):
    def __init__(self, width: int = 4, disc_width: int = 8, disc_layers: int = 6, attention_rate: int = 2,
                 softmax_scale: float = 10.0, fuse_k: int = 3, loss_weights: dict | None = None,
                 variant: str = "tf", refine_decoder_width: int | None = None):
        super().__init__()
        if variant not in ("tf", "mmagic"):
            raise TypeError(f"deepfill_v2 variant must be 'tf' or 'mmagic', got {variant!r}")
        # MMagic's port (deepfillv2_8xb2_*-256x256 configs): reflect padding, refinement input
        # [x, 1, mask], gated output layers, ELU after the last attention-encoder conv, and a
        # wider refinement decoder (128/64/32/16: refine_decoder_width 32)
        mm = variant == "mmagic"
        self.variant = variant
        pm = "reflect" if mm else "zeros"
        unknown = set(loss_weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise TypeError(f"unknown deepfill_v2 loss weights {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        # released TF code: TF 'SAME' padding (stride-2 convs pad bottom/right) and its contextual attention
        conv = GatedConv2d if mm else TFSameGatedConv2d
        self.coarse = CoarseNetwork(5, width, pm, gated_output=mm, conv=conv)      # [x, ones, mask]
        attention = (ContextualAttention if mm else TFContextualAttention)(
            ksize=3, rate=attention_rate, fuse_k=fuse_k, softmax_scale=softmax_scale)
        self.refine = RefinementNetwork(5 if mm else 3, width, attention, pm, gated_output=mm,  # TF: x only
                                        attention_act="elu" if mm else "relu", decoder_width=refine_decoder_width,
                                        conv=conv)
        self.discriminator = SNPatchGAN(in_channels=4, base=disc_width, n_layers=disc_layers)
        self.weights = {**DEFAULT_WEIGHTS, **(loss_weights or {})}

    @property
    def discriminator(self) -> nn.Module:
        # InpaintModel's class attribute `discriminator = None` would shadow the registered
        # sub-module on plain attribute lookup; read it from the module registry instead.
        return self._modules["discriminator"]

    def stages(self, image_in: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(coarse, refined) outputs in [0, 1]."""
        x = (image_in * 2 - 1) * (1 - mask)
        coarse = self.coarse(torch.cat([x, torch.ones_like(mask), mask], dim=1))
        x2 = coarse * mask + x * (1 - mask)  # the coarse result fills the hole (Fig. 3)
        if self.variant == "mmagic":
            x2 = torch.cat([x2, torch.ones_like(mask), mask], dim=1)
        refined = self.refine(x2, mask)
        return (coarse + 1) / 2, (refined + 1) / 2

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.stages(image_in, mask)[1]

    def _scores(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.discriminator(torch.cat([img * 2 - 1, mask], dim=1))

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        coarse, pred = self.stages(image * (1 - mask), mask)
        terms = {"l1_coarse": F.l1_loss(coarse, image), "l1_refine": F.l1_loss(pred, image)}
        if self.weights["adv"] > 0:
            # the generator term backprops *through* D; D's own weights need no gradient here
            d_params = list(self.discriminator.parameters())
            flags = [p.requires_grad for p in d_params]
            for p in d_params:
                p.requires_grad_(False)
            try:
                terms["adv"] = hinge_g_loss(self._scores(composite(pred, image, mask), mask))
            finally:
                for p, f in zip(d_params, flags):
                    p.requires_grad_(f)
        total = sum(self.weights[k] * v for k, v in terms.items())
        return StepOutput(total, {k: v.detach() for k, v in terms.items()}, pred)

    def discriminator_losses(self, image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> StepOutput:
        real, fake = hinge_d_loss(self._scores(image, mask), self._scores(composite(pred.detach(), image, mask), mask))
        # the trainer prefixes these keys with "d_"
        return StepOutput(real + fake, {"hinge_real": real.detach(), "hinge_fake": fake.detach()})


@register("deepfill_v2")
def build(args: dict, loss: dict, ctx: BuildContext) -> DeepFillV2:
    return DeepFillV2(loss_weights=loss.get("weights"), **args)


# --- MMagic checkpoints (open-mmlab/mmagic DeepFillEncoderDecoder, deepfillv2_8xb2_*-256x256) ----
def _mmagic_target(key: str) -> str | None:
    """Our key for an MMagic generator key (``generator.`` removed), None for constant buffers."""
    parts = key.split(".")
    if parts[-1] == "fuse_kernel":
        return None
    stage, module = parts[0], parts[1]
    rest = ".".join(parts[-2:])            # conv.weight / conv.bias of the innermost nn.Conv2d
    if stage == "stage1":
        root, enc, dec = "coarse", "encoder", "decoder"
    else:
        root, dec = "refine", "decoder"
        enc = {"encoder_conv": "conv_branch", "encoder_attention": "attention_encoder",
               "dilation_neck": "conv_branch", "contextual_attention_neck": "attention_decoder",
               "decoder": "decoder"}[module]
    if module in ("encoder", "encoder_conv", "encoder_attention"):
        return f"{root}.{enc}.{int(parts[2][3:]) - 1}.{rest}"
    if module == "dilation_neck":
        return f"{root}.{enc}.{6 + int(parts[3])}.{rest}"
    if module == "contextual_attention_neck":
        return f"{root}.{enc}.{int(parts[2][-1]) - 1}.{rest}"
    if module == "decoder":
        i = int(parts[2][3:]) - 1          # dec1..dec7 -> Sequential 0..6; up-convs wrap a GatedConv2d
        return f"{root}.{dec}.{i}.conv.{rest}" if i in (2, 4) else f"{root}.{dec}.{i}.{rest}"
    raise KeyError(key)


def convert_mmagic(state: dict) -> tuple[dict, dict]:
    """(args, our state dict of the generator modules) from an MMagic DeepFill v2 state dict
    (``state_dict`` of the mmengine checkpoint; ``generator.`` keys; ``disc.`` keys ignored)."""
    gen = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")} or \
        {k: v for k, v in state.items() if k.startswith(("stage1.", "stage2."))}
    out = {}
    for key, value in gen.items():
        try:
            name = _mmagic_target(key)
        except (KeyError, ValueError, IndexError):
            raise KeyError(f"unexpected key {key!r} in an MMagic DeepFill v2 state dict") from None
        if name is not None:
            out[name] = value
    width = int(out["coarse.encoder.0.conv.weight"].shape[0]) // 2
    refine_width = int(out["refine.decoder.4.conv.conv.weight"].shape[0]) // 2
    args = {"width": width, "variant": "mmagic"}
    if refine_width != width:
        args["refine_decoder_width"] = refine_width
    return args, out


# --- released TF checkpoints (JiahuiYu/generative_inpainting, inpaint_model.py build_inpaint_net) ----
_TF_STAGES = (
    ("coarse.encoder", ["conv1", "conv2_downsample", "conv3", "conv4_downsample", "conv5", "conv6",
                        "conv7_atrous", "conv8_atrous", "conv9_atrous", "conv10_atrous"]),
    ("coarse.decoder", ["conv11", "conv12", "conv13_upsample", "conv14", "conv15_upsample", "conv16", "conv17"]),
    ("refine.conv_branch", ["xconv1", "xconv2_downsample", "xconv3", "xconv4_downsample", "xconv5", "xconv6",
                            "xconv7_atrous", "xconv8_atrous", "xconv9_atrous", "xconv10_atrous"]),
    ("refine.attention_encoder", ["pmconv1", "pmconv2_downsample", "pmconv3", "pmconv4_downsample", "pmconv5",
                                  "pmconv6"]),
    ("refine.attention_decoder", ["pmconv9", "pmconv10"]),
    ("refine.decoder", ["allconv11", "allconv12", "allconv13_upsample", "allconv14", "allconv15_upsample",
                        "allconv16", "allconv17"]),
)


def _tf_target(layer: str) -> str:
    """Our module path of a build_inpaint_net layer name."""
    for root, names in _TF_STAGES:
        if layer in names:
            i = names.index(layer)
            if layer.endswith("_upsample"):            # gen_deconv: resize + gen_conv: GatedUpConv2d.conv.conv
                return f"{root}.{i}.conv.conv"
            if layer.endswith("17"):                   # the plain output conv (gen_conv returns before gating)
                return f"{root}.{i}"
            return f"{root}.{i}.conv"
    raise KeyError(layer)


def convert_tf(variables: dict) -> tuple[dict, dict]:
    """(args, our generator state dict) from the variables of a released TF checkpoint (name ->
    array, e.g. tf.train.load_checkpoint(...).get_tensor for every name of the `inpaint_net/`
    scope; the discriminator's and optimizer's variables are ignored). Kernels are HWIO (kh, kw,
    cin, 2·cout) with the feature half first (gen_conv's tf.split): transposed to OIHW."""
    out = {}
    for name, value in variables.items():
        parts = name.split("/")
        if parts[0] != "inpaint_net" or (len(parts) > 3 and parts[-2] in ("kernel", "bias")):
            continue                                   # discriminator, global step, optimizer slots (…/kernel/Adam)
        if len(parts) not in (3, 4) or parts[-1] not in ("kernel", "bias"):
            raise KeyError(f"unexpected variable {name!r} in a DeepFill v2 TF checkpoint")
        try:
            target = _tf_target(parts[1])
        except KeyError:
            raise KeyError(f"unexpected variable {name!r} in a DeepFill v2 TF checkpoint") from None
        t = torch.as_tensor(value, dtype=torch.float32)
        if parts[-1] == "kernel":
            out[f"{target}.weight"] = t.permute(3, 2, 0, 1).contiguous()
        else:
            out[f"{target}.bias"] = t.clone()
    if "coarse.encoder.0.conv.weight" not in out:
        raise KeyError("no inpaint_net/conv1/kernel: not a DeepFill v2 TF checkpoint")
    width = int(out["coarse.encoder.0.conv.weight"].shape[0]) // 2
    return {"width": width, "variant": "tf"}, out
