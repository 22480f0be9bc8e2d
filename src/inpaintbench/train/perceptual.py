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
"""
from __future__ import annotations

import importlib
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


def _vgg16_layers() -> nn.Sequential:
    from torchvision.models import vgg16

    return vgg16(weights=None).features


@register_backbone("vgg16")
def _vgg16_imagenet(cfg: dict, ctx) -> nn.Module:
    path = cached_weights(VGG16_FILE, VGG16_URL, bool(cfg.get("allow_download", False)), "VGG16 (ImageNet)")
    layers = _vgg16_layers()
    state = torch.load(path, map_location="cpu", weights_only=True)
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    layers.load_state_dict(feats)
    return VGG16Features(layers)


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


@register_backbone("random-vgg16")
def _vgg16_random(cfg: dict, ctx) -> nn.Module:
    """Seeded random VGG16 (to pool3). ``width`` < 1 thins every layer: the built-in CPU run uses
    0.25, which cuts the loss network's cost 16-fold; 1.0 is VGG16's own shape."""
    seed = int(cfg.get("seed", getattr(ctx, "seed", 0)))
    layers = _vgg16_layers_scaled(float(cfg.get("width", 1.0)))
    gen = torch.Generator().manual_seed(seed)
    for m in layers.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    return VGG16Features(layers)


def build_backbone(cfg: dict | None, ctx=None) -> nn.Module | None:
    cfg = dict(cfg or {"backbone": "random-vgg16"})
    name = cfg.get("backbone", "random-vgg16")
    if name in (None, "none"):
        return None
    if name not in _BACKBONES and name in _PROVIDERS:
        importlib.import_module(_PROVIDERS[name])  # registers it
    if name not in _BACKBONES:
        raise InpaintBenchError(f"unknown perceptual backbone {name!r}; known: {', '.join(sorted(_BACKBONES))}, none")
    return _BACKBONES[name](cfg, ctx)
