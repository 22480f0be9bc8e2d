"""Feature extractors for perceptual and style losses, chosen in params (``perceptual.backbone``).

* ``vgg16``: torchvision VGG16 with ImageNet weights (``vgg16-397923af.pth``) read from the
  torch.hub cache ($TORCH_HOME/hub/checkpoints). Nothing is downloaded unless
  ``perceptual.allow_download`` is true; a missing file offline is a clear error naming the file
  and the folder.
* ``random-vgg16``: the same layers with a fixed, seeded random initialisation, frozen. This is
  the offline substitute used by the built-in run: random convolutional features still measure
  local structure and texture statistics (He, Wang & Hopcroft 2016, "A powerful generative model
  using random weights for the deep image representation"), but they are *not* the paper's
  loss; the report names the backbone used.

Other modules may register more backbones (e.g. SAHN's trained teacher) with
``register_backbone``. Every backbone returns a list of feature maps (pool1, pool2, pool3 for
VGG16, as in Liu et al. 2018) and is frozen.

The backbone only serves training losses, so a model holds it as a `LazyBackbone`
(`lazy_backbone`): built on first training use (``model.train()``, which the trainer calls
right after building the model, or the loss) and never for evaluation, inference or a forward
pass — a checkpoint is scored without the VGG16 file. It is no sub-module, so no state dict
holds it (`drop_backbone_keys` drops the ``backbone.*`` entries of checkpoints written while it
was one). ``vgg16`` is built on the ``meta`` device (no random initialisation) and assigned the
memory-mapped file's ``features.0``-``features.16`` tensors (only those pages are read), in
torchvision's own layer layout (`_vgg16_layers_scaled(1.0)` equals ``vgg16().features[:17]``,
tests/test_perceptual_lazy.py), so torchvision is not imported. ``random-vgg16``'s weights come
from its own seeded generator as before; building the model still draws from the global RNG
exactly what the old eager construction drew (`_replay_global_draws`), so a generator built
after it starts from the same weights.
"""
from __future__ import annotations

import copy
import importlib
import itertools
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import InpaintBenchError

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_BACKBONES: dict[str, Callable[[dict, object], nn.Module]] = {}
_PROVIDERS = {"teacher": "inpaintbench.train.teacher"}  # backbones registered by other modules


def register_backbone(name: str):
    def deco(fn):
        _BACKBONES[name] = fn
        return fn

    return deco


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_weights(file_name: str, url: str, allow_download: bool, what: str) -> Path:
    """Path of a torch.hub-cached weight file; a clear error if it is missing offline."""
    path = hub_checkpoint_dir() / file_name
    if path.exists():
        return path
    if allow_download:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
        return path
    raise InpaintBenchError(
        f"{what} weights are not in the torch.hub cache: put {file_name} (from {url}) into "
        f"{path.parent} (set TORCH_HOME to move the cache), or set allow_download: true where the "
        f"machine has internet, or choose an offline substitute in params.yaml."
    )


class _ToChannelsLast(torch.autograd.Function):
    """x in NHWC for the loss network; its gradient goes back in x's own layout, so a model that
    runs NCHW does not receive NHWC gradients (which would switch its convolutions' backward to
    NHWC at a cost). The values are a copy: the math is unchanged."""

    @staticmethod
    def forward(ctx, x):
        ctx.cl_input = x.is_contiguous(memory_format=torch.channels_last)
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last if ctx.cl_input else torch.contiguous_format)


class VGG16Features(nn.Module):
    """VGG16 layers up to pool3; returns [pool1, pool2, pool3]. Input: RGB in [0, 1]."""

    def __init__(self, vgg_features: nn.Sequential):
        super().__init__()
        self.slices = nn.ModuleList([vgg_features[:5], vgg_features[5:10], vgg_features[10:17]])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        # NHWC on CPU (see forward): the weights too, so oneDNN does not reorder them every call
        self.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True):  # frozen: always in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.device.type == "cpu":
            # channels_last: the same math, ~25 % less CPU time for this stack (oneDNN convs and
            # max-pooling are faster in NHWC; the features come back NHWC, values equal to rounding)
            x = _ToChannelsLast.apply(x)
        x = (x - self.mean) / self.std
        feats = []
        for block in self.slices:
            x = block(x)
            feats.append(x)
        return feats


# torchvision's vgg16().features up to pool3 (indices 0-16): what VGG16Features keeps
VGG16_POOL3_LAYERS = 17


def _read_vgg16_features(path: Path) -> dict[str, torch.Tensor]:
    """``features.0``-``features.16`` of the torchvision VGG16 file, keys without the prefix; read
    memory-mapped (only these tensors' pages, ~7 MB of the 528 MB file) where the file is in the
    zip format torch.save has written since 1.6, a legacy file whole."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or truncated download
        raise InpaintBenchError(f"cannot read the VGG16 (ImageNet) weights {path}: {exc}. Delete it and put a "
                                f"fresh copy of {VGG16_URL} there.") from exc
    out = {}
    for key, value in state.items():
        if key.startswith("features."):
            index = key.split(".")[1]
            if index.isdigit() and int(index) < VGG16_POOL3_LAYERS:
                out[key[len("features."):]] = value
    return out


def _assign(net: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Strict load of `state` into `net` built on the meta device: the file's tensors become the
    parameters (float32 as the skeleton), so no random initialisation is computed nor copied."""
    like = net.state_dict(keep_vars=True)
    try:
        net.load_state_dict({k: v.to(like[k].dtype) if k in like else v for k, v in state.items()},
                            strict=True, assign=True)
    except RuntimeError as exc:
        raise InpaintBenchError(f"{where} does not hold torchvision's VGG16 features up to pool3: {exc}") from None
    left = [n for n, t in itertools.chain(net.named_parameters(), net.named_buffers()) if t.is_meta]
    if left:
        raise InpaintBenchError(f"{where} leaves {len(left)} tensors of VGG16 unset, e.g. {left[:3]}")
    return net


@register_backbone("vgg16")
def _vgg16_imagenet(cfg: dict, ctx) -> nn.Module:
    path = cached_weights(VGG16_FILE, VGG16_URL, bool(cfg.get("allow_download", False)), "VGG16 (ImageNet)")
    with torch.device("meta"):
        layers = _vgg16_layers_scaled(1.0)  # torchvision's vgg16().features[:17], same keys
    return VGG16Features(_assign(layers, _read_vgg16_features(path), str(path)))


def _vgg16_layers_scaled(width: float) -> nn.Sequential:
    """VGG16's layers up to pool3 with every channel count scaled by `width` (1.0 = VGG16)."""
    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            cout = max(4, int(round(v * width)))
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            cin = cout
    return nn.Sequential(*layers)


def _conv_shapes(layers: nn.Sequential) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    return [(tuple(m.weight.shape), tuple(m.bias.shape)) for m in layers if isinstance(m, nn.Conv2d)]


@register_backbone("random-vgg16")
def _vgg16_random(cfg: dict, ctx) -> nn.Module:
    """Seeded random VGG16 (to pool3). ``width`` < 1 thins every layer: the built-in CPU run uses
    0.25, which cuts the loss network's cost 16-fold; 1.0 is VGG16's own shape. He-normal weights
    from a generator seeded with ``seed`` (default the run's), zero biases; built on the meta
    device and assigned, so no global random number is drawn here (see `_replay_global_draws`)."""
    seed = int(cfg.get("seed", getattr(ctx, "seed", 0)))
    with torch.device("meta"):
        layers = _vgg16_layers_scaled(float(cfg.get("width", 1.0)))
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, m in enumerate(layers):
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            state[f"{i}.weight"] = torch.randn(m.weight.shape, generator=gen, device="cpu") * (2.0 / fan_in) ** 0.5
            state[f"{i}.bias"] = torch.zeros(m.bias.shape, device="cpu")
    return VGG16Features(_assign(layers, state, "the random-vgg16 stand-in"))


def _replay_global_draws(cfg: dict) -> None:
    """What building ``random-vgg16`` eagerly drew from the global RNG (nn.Conv2d's default
    initialisation, overwritten by the seeded weights, drew each weight's and bias's elements
    with uniform_), drawn again in the same order on the current default device: a model that
    builds its generator after the backbone starts from the same weights as before the backbone
    was lazy. Costs what filling the thin stack costs (~0.1 M numbers at width 0.25)."""
    with torch.device("meta"):
        shapes = _conv_shapes(_vgg16_layers_scaled(float(cfg.get("width", 1.0))))
    with torch.no_grad():
        for w, b in shapes:
            torch.empty(w).uniform_()
            torch.empty(b).uniform_()


# Backbones whose eager build drew from the global RNG, replayed by `lazy_backbone` so that what
# a factory builds after them starts the same. ``teacher`` drew nothing (meta build). ``vgg16`` is
# not replayed: its eager build ran torchvision's init of the whole network (138 M normal draws,
# ~1 s) only to overwrite it, so a fresh training of a model that builds its generator after the
# backbone (all but SAHN) starts from other, equally seeded, initial weights than before the
# backbone was lazy; the checkpoints trained before load and score as they did.
_REPLAY = {"random-vgg16": _replay_global_draws}


def _channels_last(module: nn.Module) -> bool:
    w = next((p for p in module.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1), None)
    return w is not None and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)


def like_model(module: nn.Module, like: nn.Module | None) -> nn.Module:
    """A training-only network just built lazily (LazyBackbone here, train/teacher.LazyTeacher):
    in `like`'s memory format when that model was converted to channels_last before it was built,
    as ``model.to(memory_format=...)`` converted it while it was a sub-module."""
    return module.to(memory_format=torch.channels_last) if like is not None and _channels_last(like) else module


def on_device(module: nn.Module, device) -> nn.Module:
    """Move a lazily built network to `device` (None: leave it) when it is elsewhere."""
    if device is not None:
        current = next(itertools.chain(module.parameters(), module.buffers()), None)
        if current is not None and current.device != torch.device(device):
            module.to(device)
    return module


class LazyBackbone:
    """The perceptual/style-loss network a model's training losses need, built on the first `get`
    (once) and never before. Deliberately no nn.Module: it is no sub-module of the model, in no
    state dict, and ``model.to`` does not move it (`get(device)` does)."""

    def __init__(self, cfg: dict | None = None, ctx=None, module: nn.Module | None = None):
        self.cfg = dict(cfg or {})
        self.name = self.cfg.get("backbone", "random-vgg16") if module is None else type(module).__name__
        self.ctx = copy.copy(ctx)  # what the factory reads (seed, artifacts) as it was at build time
        self._module = module

    @classmethod
    def of(cls, module: nn.Module) -> "LazyBackbone":
        """An already built backbone."""
        return cls(module=module)

    @property
    def loaded(self) -> bool:
        return self._module is not None

    def get(self, device: torch.device | str | None = None, like: nn.Module | None = None) -> nn.Module:
        """The backbone on `device`, built on the first call; `like` (the model): a backbone built
        while the model is in channels-last memory format is converted too, as
        ``model.to(memory_format=...)`` converted it while it was a sub-module."""
        if self._module is None:
            name = self.name
            if name not in _BACKBONES and name in _PROVIDERS:
                importlib.import_module(_PROVIDERS[name])  # registers it
            self._module = like_model(_BACKBONES[name](self.cfg, self.ctx).train(False), like)
        return on_device(self._module, device)


def drop_backbone_keys(module: nn.Module, state_dict, prefix, *_):
    """load_state_dict pre-hook of models with a lazy backbone: checkpoints written while the
    backbone was a sub-module hold its frozen weights under ``backbone.``; they are not the
    model's (the backbone is rebuilt from params), so they are dropped."""
    if "backbone" in module._modules:  # a model that (still) keeps a sub-module of that name
        return
    for key in [k for k in state_dict if k.startswith(prefix + "backbone.")]:
        del state_dict[key]


def _check_name(name) -> None:
    if name not in _BACKBONES and name not in _PROVIDERS:
        known = ", ".join(sorted({*_BACKBONES, *_PROVIDERS}))
        raise InpaintBenchError(f"unknown perceptual backbone {name!r}; known: {known}, none")


def lazy_backbone(cfg: dict | None, ctx=None) -> LazyBackbone | None:
    """The backbone params ask for (``perceptual`` block), not built yet; None for ``none``.
    Reads no file and imports nothing: evaluation never needs the backbone's weights."""
    cfg = dict(cfg or {"backbone": "random-vgg16"})
    name = cfg.get("backbone", "random-vgg16")
    if name in (None, "none"):
        return None
    _check_name(name)
    if name in _REPLAY:
        _REPLAY[name](cfg)
    return LazyBackbone(cfg, ctx)


def build_backbone(cfg: dict | None, ctx=None) -> nn.Module | None:
    """The backbone params ask for, built now (frozen, eval mode); None for ``none``."""
    cfg = dict(cfg or {"backbone": "random-vgg16"})
    name = cfg.get("backbone", "random-vgg16")
    if name in (None, "none"):
        return None
    _check_name(name)
    return LazyBackbone(cfg, ctx).get()
