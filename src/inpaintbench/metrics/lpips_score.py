"""LPIPS (Zhang et al. 2018, "The unreasonable effectiveness of deep features") via the `lpips`
package.

The package ships its calibrated linear layers (``lpips/weights/v0.1/<net>.pth``); the backbone
(AlexNet or VGG16, ImageNet) is torchvision's, which would download itself. Here the backbone is
built untrained (``pnet_rand=True``: no network access) and its weights are read from the torch.hub
cache file torchvision uses (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``), mapped onto
the package's slices (``net.slice{k}.{i}.*`` <- torchvision ``features.{i}.*``). A missing file is
an ``InpaintBenchError`` that names it (``lpips.enabled: true``) or "not computed" with that reason
(``auto``). Inputs are the composite and the ground truth scaled from [0, 1] to [-1, 1], as the
package expects; lower is better. Package version and backbone are named in ``lpips_status``.
"""
from __future__ import annotations

import importlib.metadata
import pickle
import warnings
from typing import Mapping

import numpy as np
import torch

from ..errors import InpaintBenchError

BACKBONES = {  # lpips net name -> torchvision cache file, url
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}
VERSION = "0.1"


def package_version() -> str:
    try:
        return importlib.metadata.version("lpips")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - the dependency is locked
        return "unknown"


def _settings(cfg: Mapping | None) -> tuple[str, bool]:
    cfg = dict(cfg or {})
    net = str(cfg.get("net", "alex"))
    if net not in BACKBONES:
        raise InpaintBenchError(f"params.yaml: lpips.net must be one of {sorted(BACKBONES)}, got {net!r}")
    return net, bool(cfg.get("allow_download", False))


def backbone_path(cfg: Mapping | None = None):
    from ..train.perceptual import cached_weights

    net, allow = _settings(cfg)
    file, url = BACKBONES[net]
    return cached_weights(file, url, allow, f"LPIPS backbone ({'AlexNet' if net == 'alex' else 'VGG16'}, torchvision ImageNet)")


def backbone_state_from_lpips(model) -> dict:
    """The backbone of an ``lpips.LPIPS`` in torchvision's key layout (``features.{i}.*``); the
    inverse of the mapping used when loading (tests write seeded backbones with it)."""
    out = {}
    for name, value in model.net.state_dict().items():
        _, idx, rest = name.split(".", 2)  # slice{k}.{i}.{weight|bias}
        out[f"features.{idx}.{rest}"] = value.clone()
    return out


def build_lpips(cfg: Mapping | None = None, *, random_backbone_seed: int | None = None):
    """An ``lpips.LPIPS`` (eval, frozen) with the cached torchvision backbone, or, for tests only,
    a backbone from ``torch.manual_seed(random_backbone_seed)``-style seeded init (no file)."""
    import lpips

    net, _ = _settings(cfg)

    def untrained():  # the package asks torchvision with the deprecated `pretrained=False`
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
            return lpips.LPIPS(net=net, version=VERSION, pnet_rand=True, verbose=False)

    if random_backbone_seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(int(random_backbone_seed))
            return untrained().eval()
    path = backbone_path(cfg)
    model = untrained()  # untrained trunk: no download
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise InpaintBenchError(f"cannot load the LPIPS backbone from {path}: {exc}. Delete it and put a fresh copy there.") from exc
    mapped = {}
    for name in model.net.state_dict():
        _, idx, rest = name.split(".", 2)
        key = f"features.{idx}.{rest}"
        if key not in state:
            raise InpaintBenchError(f"{path} is not a torchvision {net} checkpoint: it lacks {key}")
        mapped[name] = state[key]
    model.net.load_state_dict(mapped)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def lpips_status(cfg: Mapping | None) -> tuple[bool, str]:
    """(compute?, sentence for the report). ``lpips.enabled``: auto | true | false."""
    cfg = dict(cfg or {})
    enabled = cfg.get("enabled", "auto")
    if enabled is False:
        return False, "LPIPS not computed: disabled in params.yaml (lpips.enabled: false)."
    net, allow = _settings(cfg)
    what = f"LPIPS v{VERSION} (lpips package {package_version()}, {'AlexNet' if net == 'alex' else 'VGG16'} backbone"
    if allow:
        return True, what + ", torchvision ImageNet weights, downloaded if missing)."
    try:
        path = backbone_path(cfg)
    except InpaintBenchError as exc:
        if enabled is True:
            raise
        return False, f"LPIPS not computed: {exc}"
    return True, what + f" from {path})."


@torch.no_grad()
def lpips_batch(model, out: np.ndarray, gt: np.ndarray, device: str = "cpu") -> np.ndarray:
    """LPIPS of each composite against its ground truth: N x H x W x 3 arrays in [0, 1]."""
    a = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).permute(0, 3, 1, 2).to(device)
    b = torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32)).permute(0, 3, 1, 2).to(device)
    model = model.to(device)
    return model(a * 2 - 1, b * 2 - 1).flatten().double().cpu().numpy()
