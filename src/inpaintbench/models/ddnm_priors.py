"""The two released diffusion priors DDNM uses, as diffusers ``UNet2DModel``s, and converters from
their official state-dict layouts (issue 12).

* ``released-adm``: OpenAI guided-diffusion ``256x256_diffusion_uncond.pt`` (Dhariwal & Nichol
  2021, "ADM"; official ``guided_diffusion/unet.py`` UNetModel; DDNM's configs/imagenet_256.yml):
  image 256, num_channels 256, channel_mult 1,1,2,2,4,4 (guided-diffusion's default for 256),
  num_res_blocks 2, attention at 32,16,8 px (downsampling factors 8, 16, 32), num_head_channels
  64, learn_sigma (6 output channels: ε, then the variance interpolation v), resblock_updown,
  use_scale_shift_norm, class_cond False. diffusers expresses it exactly:
  sinusoidal embedding [cos, sin] with exponent /half (``flip_sin_to_cos=True, freq_shift=0``),
  ResBlock = ``ResnetBlock2D`` with ``time_embedding_norm="scale_shift"`` (norm2(h)·(1+s)+b),
  up/down ResBlocks = ``downsample_type/upsample_type="resnet"`` (nearest ×2 / 2×2 average pool on
  both paths between norm1+SiLU and conv1), 1×1 skip convs when widths change, GroupNorm(32,
  eps 1e-5) everywhere including the middle attention (``attn_norm_num_groups=32``: diffusers'
  default gives the scale-shift mid-block attention no norm), attention heads of 64 channels with
  q·k/√64 (guided-diffusion scales q and k by 64^-¼ each). The qkv Conv1d of QKVAttentionLegacy
  is split heads-first (its channels are [q_h, k_h, v_h] per head h), see ``_qkv_legacy``.
  guided-diffusion's use_fp16 only casts the blocks at run time (the file holds float32): we run in
  float32. Only ε (channels 0-2) is used: DDNM samples with DDIM (η), which takes the variance
  from the schedule, so the learned variance (channels 3-5) is unused, as in the official DDNM
  (``if et.size(1) == 6: et = et[:, :3]``, guided_diffusion/diffusion.py).
* ``released-celebahq``: the CelebA-HQ DDPM ``celeba_hq.ckpt`` of the SDEdit release; the DDPM
  "Model" of ermongroup/ddim (copied in wyhuai/DDNM guided_diffusion/models.py; DDNM's
  configs/celeba_hq.yml): ch 128, ch_mult 1,1,2,2,4,4, num_res_blocks 2, attention at 16 px,
  resamp_with_conv, out_ch 3 (ε). diffusers expresses it exactly, as its own google/ddpm-*
  conversions of the same network: embedding [sin, cos] with exponent /(half − 1)
  (``flip_sin_to_cos=False, freq_shift=1``), GroupNorm(32, eps 1e-6), downsampling conv 3×3
  stride 2 after a (0, 1, 0, 1) zero pad (``downsample_padding=0``), single-head attention
  (``attention_head_dim=None``: one head of the block's width, scale c^-½), nearest ×2 + conv 3×3.

Both priors take images in [−1, 1] at 256×256 (they run at other sizes divisible by 32, off their
training distribution) and t ∈ {0, …, 999} of the linear β schedule 1e-4 … 0.02.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import InpaintBenchError

# the released architectures (official configs, see above)
ADM_256_UNCOND = {"image_size": 256, "model_channels": 256, "channel_mult": (1, 1, 2, 2, 4, 4), "num_res_blocks": 2,
                  "attention_ds": (8, 16, 32), "num_head_channels": 64, "out_channels": 6}
DDPM_CELEBAHQ = {"resolution": 256, "ch": 128, "ch_mult": (1, 1, 2, 2, 4, 4), "num_res_blocks": 2,
                 "attn_resolutions": (16,), "out_ch": 3}
# parameter counts of the official models at these configs (counted once with the official code:
# guided_diffusion.unet.UNetModel at openai/guided-diffusion 22e0df81, DDNM's guided_diffusion/models.py
# Model at wyhuai/DDNM 00b58eac)
OFFICIAL_PARAMS = {"released-adm": 552_814_086, "released-celebahq": 113_673_219}


# ---------------------------------------------------------------------------- architectures

def adm_unet(cfg: dict = ADM_256_UNCOND) -> nn.Module:
    """guided-diffusion's UNetModel (use_scale_shift_norm, resblock_updown) as a UNet2DModel."""
    from diffusers import UNet2DModel

    mult = tuple(cfg["channel_mult"])
    attn = [2 ** level in tuple(cfg["attention_ds"]) for level in range(len(mult))]
    return UNet2DModel(
        sample_size=int(cfg["image_size"]), in_channels=3, out_channels=int(cfg["out_channels"]),
        flip_sin_to_cos=True, freq_shift=0,
        down_block_types=tuple("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(int(cfg["model_channels"]) * m for m in mult),
        layers_per_block=int(cfg["num_res_blocks"]), downsample_type="resnet", upsample_type="resnet",
        act_fn="silu", attention_head_dim=int(cfg["num_head_channels"]), norm_num_groups=32,
        attn_norm_num_groups=32, norm_eps=1e-5, resnet_time_scale_shift="scale_shift")


def ddpm_unet(cfg: dict = DDPM_CELEBAHQ) -> nn.Module:
    """ermongroup/ddim's DDPM Model as a UNet2DModel."""
    from diffusers import UNet2DModel

    mult = tuple(cfg["ch_mult"])
    res = [int(cfg["resolution"]) // 2 ** level for level in range(len(mult))]
    attn = [r in tuple(cfg["attn_resolutions"]) for r in res]
    return UNet2DModel(
        sample_size=int(cfg["resolution"]), in_channels=3, out_channels=int(cfg["out_ch"]),
        flip_sin_to_cos=False, freq_shift=1,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(int(cfg["ch"]) * m for m in mult), layers_per_block=int(cfg["num_res_blocks"]),
        downsample_padding=0, act_fn="silu", attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6,
        resnet_time_scale_shift="default")


# ---------------------------------------------------------------------------- converters

def _squeeze(w: torch.Tensor) -> torch.Tensor:
    """A 1×1 Conv1d/Conv2d weight as a Linear weight."""
    return w.reshape(w.shape[0], w.shape[1])


def _qkv_legacy(w: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QKVAttentionLegacy: qkv.reshape(b·H, 3·d, T).split(d): output channel h·3d + i·d + j is
    (q, k, v)[i] of head h, channel j. diffusers' to_q/to_k/to_v hold head h at rows h·d … h·d + d."""
    c3 = w.shape[0]
    d = c3 // (3 * heads)
    parts = w.reshape(heads, 3, d, *w.shape[1:])
    return tuple(parts[:, i].reshape(heads * d, *w.shape[1:]) for i in range(3))


class _Filler:
    """Fills our state dict from the official one: every official key used once, every one of our
    keys filled once, shapes equal (the strict part of each converter)."""

    def __init__(self, official: dict, ours: dict, what: str):
        self.official, self.ours, self.what = official, ours, what
        self.used: set[str] = set()
        self.out: dict[str, torch.Tensor] = {}

    def take(self, key: str) -> torch.Tensor:
        if key not in self.official:
            raise InpaintBenchError(f"{self.what}: the checkpoint has no {key!r}; is it the named release?")
        if key in self.used:
            raise InpaintBenchError(f"{self.what}: {key!r} used twice (converter bug)")
        self.used.add(key)
        return self.official[key]

    def put(self, key: str, value: torch.Tensor) -> None:
        if key not in self.ours:
            raise InpaintBenchError(f"{self.what}: our model has no {key!r} (converter bug)")
        if key in self.out:
            raise InpaintBenchError(f"{self.what}: {key!r} filled twice (converter bug)")
        if tuple(value.shape) != tuple(self.ours[key].shape):
            raise InpaintBenchError(f"{self.what}: {key!r} has shape {tuple(value.shape)} in the checkpoint, "
                                    f"{tuple(self.ours[key].shape)} in our model; the architecture config does not fit")
        self.out[key] = value.detach().to(torch.float32).contiguous()

    def copy(self, src: str, dst: str, squeeze: bool = False) -> None:
        for p in ("weight", "bias"):
            if f"{src}.{p}" in self.official or p == "weight":
                v = self.take(f"{src}.{p}")
                self.put(f"{dst}.{p}", _squeeze(v) if squeeze and p == "weight" else v)

    def done(self) -> dict:
        unused = sorted(set(self.official) - self.used)
        unfilled = sorted(set(self.ours) - set(self.out))
        if unused or unfilled:
            raise InpaintBenchError(f"{self.what}: the checkpoint does not fit the architecture (unused "
                                    f"{unused[:5]}{' …' if len(unused) > 5 else ''}, unfilled {unfilled[:5]}"
                                    f"{' …' if len(unfilled) > 5 else ''}); is it the named release?")
        return self.out


def _shape_dict(model: nn.Module) -> dict:
    return dict(model.state_dict())


def convert_adm(state: dict, cfg: dict = ADM_256_UNCOND, ours: dict | None = None) -> dict:
    """guided-diffusion UNetModel state dict → our ``adm_unet(cfg)`` state dict (strict)."""
    if ours is None:
        with torch.device("meta"):
            ours = _shape_dict(adm_unet(cfg))
    f = _Filler(state, ours, "ADM (guided-diffusion) checkpoint")
    mult, nrb = tuple(cfg["channel_mult"]), int(cfg["num_res_blocks"])
    head_ch = int(cfg["num_head_channels"])

    def res(src: str, dst: str) -> None:  # guided-diffusion ResBlock → ResnetBlock2D
        f.copy(f"{src}.in_layers.0", f"{dst}.norm1")
        f.copy(f"{src}.in_layers.2", f"{dst}.conv1")
        f.copy(f"{src}.emb_layers.1", f"{dst}.time_emb_proj")
        f.copy(f"{src}.out_layers.0", f"{dst}.norm2")
        f.copy(f"{src}.out_layers.3", f"{dst}.conv2")
        if f"{src}.skip_connection.weight" in state:
            f.copy(f"{src}.skip_connection", f"{dst}.conv_shortcut")

    def attn(src: str, dst: str) -> None:  # AttentionBlock (QKVAttentionLegacy) → Attention
        f.copy(f"{src}.norm", f"{dst}.group_norm")
        w, b = f.take(f"{src}.qkv.weight"), f.take(f"{src}.qkv.bias")
        heads = w.shape[1] // head_ch
        for name, wi, bi in zip(("to_q", "to_k", "to_v"), _qkv_legacy(w, heads), _qkv_legacy(b, heads)):
            f.put(f"{dst}.{name}.weight", _squeeze(wi))
            f.put(f"{dst}.{name}.bias", bi)
        f.copy(f"{src}.proj_out", f"{dst}.to_out.0", squeeze=True)

    def has_attn(level: int) -> bool:
        return 2 ** level in tuple(cfg["attention_ds"])

    f.copy("time_embed.0", "time_embedding.linear_1")
    f.copy("time_embed.2", "time_embedding.linear_2")
    f.copy("input_blocks.0.0", "conv_in")
    i = 1
    for level in range(len(mult)):
        for j in range(nrb):
            res(f"input_blocks.{i}.0", f"down_blocks.{level}.resnets.{j}")
            if has_attn(level):
                attn(f"input_blocks.{i}.1", f"down_blocks.{level}.attentions.{j}")
            i += 1
        if level != len(mult) - 1:
            res(f"input_blocks.{i}.0", f"down_blocks.{level}.downsamplers.0")
            i += 1
    res("middle_block.0", "mid_block.resnets.0")
    attn("middle_block.1", "mid_block.attentions.0")
    res("middle_block.2", "mid_block.resnets.1")
    i = 0
    for u, level in enumerate(reversed(range(len(mult)))):
        for j in range(nrb + 1):
            res(f"output_blocks.{i}.0", f"up_blocks.{u}.resnets.{j}")
            k = 1
            if has_attn(level):
                attn(f"output_blocks.{i}.1", f"up_blocks.{u}.attentions.{j}")
                k = 2
            if level and j == nrb:
                res(f"output_blocks.{i}.{k}", f"up_blocks.{u}.upsamplers.0")
            i += 1
    f.copy("out.0", "conv_norm_out")
    f.copy("out.2", "conv_out")
    return f.done()


def convert_ddpm(state: dict, cfg: dict = DDPM_CELEBAHQ, ours: dict | None = None) -> dict:
    """ermongroup/ddim DDPM Model state dict → our ``ddpm_unet(cfg)`` state dict (strict)."""
    if ours is None:
        with torch.device("meta"):
            ours = _shape_dict(ddpm_unet(cfg))
    f = _Filler(state, ours, "DDPM (ermongroup/ddim) checkpoint")
    n, nrb = len(tuple(cfg["ch_mult"])), int(cfg["num_res_blocks"])

    def res(src: str, dst: str) -> None:  # ResnetBlock → ResnetBlock2D
        for a, b in (("norm1", "norm1"), ("conv1", "conv1"), ("temb_proj", "time_emb_proj"), ("norm2", "norm2"),
                     ("conv2", "conv2")):
            f.copy(f"{src}.{a}", f"{dst}.{b}")
        if f"{src}.nin_shortcut.weight" in state:
            f.copy(f"{src}.nin_shortcut", f"{dst}.conv_shortcut")

    def attn(src: str, dst: str) -> None:  # AttnBlock → Attention (one head)
        f.copy(f"{src}.norm", f"{dst}.group_norm")
        for a, b in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
            f.copy(f"{src}.{a}", f"{dst}.{b}", squeeze=True)

    f.copy("temb.dense.0", "time_embedding.linear_1")
    f.copy("temb.dense.1", "time_embedding.linear_2")
    f.copy("conv_in", "conv_in")
    for level in range(n):
        for j in range(nrb):
            res(f"down.{level}.block.{j}", f"down_blocks.{level}.resnets.{j}")
            if f"down.{level}.attn.{j}.q.weight" in state:
                attn(f"down.{level}.attn.{j}", f"down_blocks.{level}.attentions.{j}")
        if level != n - 1:
            f.copy(f"down.{level}.downsample.conv", f"down_blocks.{level}.downsamplers.0.conv")
    res("mid.block_1", "mid_block.resnets.0")
    attn("mid.attn_1", "mid_block.attentions.0")
    res("mid.block_2", "mid_block.resnets.1")
    for level in range(n):
        u = n - 1 - level
        for j in range(nrb + 1):
            res(f"up.{level}.block.{j}", f"up_blocks.{u}.resnets.{j}")
            if f"up.{level}.attn.{j}.q.weight" in state:
                attn(f"up.{level}.attn.{j}", f"up_blocks.{u}.attentions.{j}")
        if level != 0:
            f.copy(f"up.{level}.upsample.conv", f"up_blocks.{u}.upsamplers.0.conv")
    f.copy("norm_out", "conv_norm_out")
    f.copy("conv_out", "conv_out")
    return f.done()


# ---------------------------------------------------------------------------- released files

def unwrap_ddpm(obj) -> dict:
    """The Model state dict inside a DDPM checkpoint: SDEdit's celeba_hq.ckpt is the state dict
    itself; ermongroup/ddim's own checkpoints are [state, optimizer, epoch, step(, ema)];
    a DataParallel save prefixes ``module.``."""
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], dict):
        obj = obj[0]
    return _plain(obj, "celeba_hq.ckpt")


def unwrap_adm(obj) -> dict:
    return _plain(obj, "256x256_diffusion_uncond.pt")


def _plain(obj, what: str) -> dict:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise InpaintBenchError(f"{what}: not a state dict of tensors; is it the named release?")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


PRIOR_FORMATS = {  # prior name → (architecture builder, converter, unwrap, config)
    "released-adm": (adm_unet, convert_adm, unwrap_adm, ADM_256_UNCOND),
    "released-celebahq": (ddpm_unet, convert_ddpm, unwrap_ddpm, DDPM_CELEBAHQ),
}


def build_prior(name: str, official_state: dict | None = None, cfg: dict | None = None) -> nn.Module:
    """Our UNet of released prior `name` (config `cfg`, default the release's); with
    `official_state` (the official layout, e.g. ``safe_load`` of the file) its converted weights,
    loaded strictly without a second copy in memory (the model is built on the meta device)."""
    make, convert, unwrap, default = PRIOR_FORMATS[name]
    cfg = default if cfg is None else cfg
    if official_state is None:
        return make(cfg)
    with torch.device("meta"):
        net = make(cfg)
    state = convert(unwrap(official_state), cfg, ours=dict(net.state_dict()))
    net.load_state_dict(state, strict=True, assign=True)
    return net
