"""The frozen semantic teacher P shared by SAHN, SPL and SPN.

SAHN Sec. 3.1: {F_goal^n}_{n=1..N} = P(I'_full), N = 3. P is a multi-label classifier applied
to the ×2-upsampled full image; its feature maps at sizes h, h/2, h/4 of the original image are
the targets of the semantic prior loss. SPL (Zhang et al., IJCAI 2021, Sec. 3.1) distils the
stride-8 map of the same teacher (one scale, h/4); SPN (Pattern Recognition 2023, Sec. 3.1) all
three. P is never trained with the inpainting network (no gradients, always in eval mode).

The teacher is chosen per experiment in params.yaml (``teacher: {kind: ...}``; the global
``teacher:`` block is the default, an experiment's own block overlays it):

* ``asl-tresnet-l`` — the papers' teacher: ASL TResNet-L trained on OpenImages V6 (Ridnik et al.,
  ICCV 2021; the SPL/SPN/SAHN code loads ``Open_ImagesV6_TRresNet_L_448.pth``). The architecture
  is timm's ``tresnet_l`` (built with pretrained=False); the ASL release file, a dict
  ``{'model': state_dict, 'num_classes': 9605, ...}`` in the inplace_abn key layout, is read from
  the torch.hub cache and converted by `convert_asl_tresnet` (strict: every key of the file is
  used or named). Taps, following SPN's official code (TResNet ``body[1..3]``): the stem conv
  (stride 4 of its input, nearest-upsampled ×2 to stride 2 as SPN does), layer1 (stride 4) and
  layer2 (stride 8): 76, 76 and 152 channels.
* ``imagenet-resnet50`` (alias ``resnet50``) — torchvision's ImageNet ResNet-50
  (``resnet50-11ad3fa6.pth``) from the torch.hub cache; taps: stem ReLU (64 ch, stride 2),
  layer1 (256, stride 4), layer2 (512, stride 8). A single-label classifier: an offline-cacheable
  substitute for the paper's multi-label one.
* ``trained`` — a small multi-label CNN (`TeacherCNN`) that the workflow trains itself on the
  training set's own labels with `train_teacher` (BCE-with-logits), fully offline. Only for
  datasets with labels (CelebA attributes, DTD/Places categories, the built-in sets); Paris
  StreetView has none, and asking for it there is an error naming the alternatives.

A missing weight file is an `InpaintBenchError` naming the file, its URL and the folder, unless
``allow_download: true``.

The teacher only supervises training losses, so a model holds it as a `LazyTeacher`: the
generator is built from `teacher_channels` (a static table for the released teachers, the
checkpoint's saved args — or the params' ``teacher.widths`` when the file is absent — for
``trained``), and the weights are read only when training asks for the targets (evaluation and
inference never load them; the teacher is no sub-module, so it is in no state dict either).
Loading builds the network on the ``meta`` device (no random initialisation) and assigns the
memory-mapped file's tensors (`assign_state_dict`); the outputs equal those of the plain
build-then-copy path. `register_backbone("teacher")` also offers the trained teacher's three
feature maps as the perceptual-loss backbone (params ``perceptual: {backbone: teacher}``).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..io import atomic_path, load_image, read_csv
from .perceptual import _IMAGENET_MEAN, _IMAGENET_STD, cached_weights, like_model, on_device, register_backbone

TEACHER_FORMAT = "inpaintbench-teacher/1"
RESNET50_FILE = "resnet50-11ad3fa6.pth"
RESNET50_URL = f"https://download.pytorch.org/models/{RESNET50_FILE}"
ASL_TRESNET_L_FILE = "Open_ImagesV6_TRresNet_L_448.pth"
ASL_TRESNET_L_URL = f"https://miil-public-eu.oss-eu-central-1.aliyuncs.com/model-zoo/ASL/{ASL_TRESNET_L_FILE}"
TEACHER_KINDS = ("asl-tresnet-l", "imagenet-resnet50", "resnet50", "trained")
_ALIASES = {"resnet50": "imagenet-resnet50"}
# keys of a `teacher:` params block that choose the teacher; the rest configure `train_teacher`
TEACHER_CHOICE_KEYS = {"kind": str, "allow_download": bool}
DEFAULT_KIND = "trained"
ALTERNATIVES = (f"`teacher: {{kind: asl-tresnet-l}}` (the papers' teacher: put {ASL_TRESNET_L_FILE} from "
                f"{ASL_TRESNET_L_URL} into $TORCH_HOME/hub/checkpoints) or `teacher: {{kind: imagenet-resnet50}}` "
                f"(offline substitute: {RESNET50_FILE})")
DEFAULT_TEACHER_CFG = {
    "widths": [8, 16, 32, 64],  # stride-2, -4, -8 taps, then the stride-16 classifier stage
    "epochs": 10,
    "batch_size": 16,
    "lr": 1.0e-3,
    "weight_decay": 0.0,
    "input_scale": 2.0,  # train on ×2-upsampled images, the scale at which SAHN applies P
    "image_size": None,  # resize every image to this side; None: the first image's size
    "hflip": True,
    "num_workers": 0,
}
# channels of the three taps of the released teachers (ResNet50Taps, TResNetTaps): what the
# generator's prior heads need, known without loading any weights
STATIC_CHANNELS = {"imagenet-resnet50": [64, 256, 512], "asl-tresnet-l": [76, 76, 152]}


class _Normalize(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class TeacherCNN(nn.Module):
    """Small multi-label classifier: three tapped stages (strides 2, 4, 8), a stride-16 stage,
    global average pooling and a linear layer to one logit per label. Input RGB in [0, 1]."""

    def __init__(self, num_labels: int, widths: list[int] | tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"teacher widths must have 4 entries, got {list(widths)}")
        if num_labels < 1:
            raise ValueError("a multi-label teacher needs at least one label")
        w1, w2, w3, w4 = widths
        self.normalize = _Normalize()
        self.stage1 = nn.Sequential(*_conv_bn(3, w1, 2))
        self.stage2 = nn.Sequential(*_conv_bn(w1, w2, 2), *_conv_bn(w2, w2, 1))
        self.stage3 = nn.Sequential(*_conv_bn(w2, w3, 2), *_conv_bn(w3, w3, 1))
        self.stage4 = nn.Sequential(*_conv_bn(w3, w4, 2), *_conv_bn(w4, w4, 1))
        self.head = nn.Linear(w4, num_labels)
        self.channels = [w1, w2, w3]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stage1(self.normalize(x))
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        return [f1, f2, f3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f3 = self.features(x)[-1]
        return self.head(self.stage4(f3).mean(dim=(2, 3)))


class ResNet50Taps(nn.Module):
    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.normalize = _Normalize()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)
        self.pool = resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.channels = [64, 256, 512]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stem(self.normalize(x))
        f2 = self.layer1(self.pool(f1))
        f3 = self.layer2(f2)
        return [f1, f2, f3]


class TResNetTaps(nn.Module):
    """timm ``tresnet_l`` cut after layer2 (the part SPL/SPN keep, official ``tresnet.py``):
    space-to-depth, stem conv, layer1, layer2. Features [U×2(stem), layer1, layer2] at strides 2, 4
    and 8 of the input (SPN upsamples the stride-4 stem map to the next scale the same way,
    nearest). ASL inputs are RGB in [0, 1] without mean/std normalisation."""

    def __init__(self, tresnet: nn.Module):
        super().__init__()
        body = tresnet.body
        self.s2d, self.stem, self.layer1, self.layer2 = body.s2d, body.conv1, body.layer1, body.layer2
        self.channels = [self.stem.conv.out_channels, _out_channels(self.layer1), _out_channels(self.layer2)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise InpaintBenchError(f"the TResNet teacher needs input sides divisible by 8, got {w}x{h}")
        f1 = self.stem(self.s2d(x))
        f2 = self.layer1(f1)
        f3 = self.layer2(f2)
        return [F.interpolate(f1, scale_factor=2, mode="nearest"), f2, f3]


def _out_channels(layer: nn.Sequential) -> int:
    return [m for m in layer.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _tresnet_l(num_classes: int = 0) -> nn.Module:
    import timm

    return timm.create_model("tresnet_l", pretrained=False, num_classes=num_classes)


# ASL (inplace_abn) -> timm key layout. ASL's conv2d_ABN is Sequential(Conv2d, InPlaceABN), i.e.
# `conv1.0` / `conv1.1`; a strided block wraps it with the anti-alias layer, `conv1.0.0` /
# `conv1.0.1` (the blur filter is no parameter); downsample is Sequential(AvgPool, conv2d_ABN).
# timm names the same modules ConvNormAct `.conv` / `.bn`.
_ASL_RULES = [
    (re.compile(r"\.(conv\d)\.0\.0\."), r".\1.conv."),
    (re.compile(r"\.(conv\d)\.0\.1\."), r".\1.bn."),
    (re.compile(r"\.(conv\d)\.0\."), r".\1.conv."),
    (re.compile(r"\.(conv\d)\.1\."), r".\1.bn."),
    (re.compile(r"\.downsample\.(\d)\.0\."), r".downsample.\1.conv."),
    (re.compile(r"\.downsample\.(\d)\.1\."), r".downsample.\1.bn."),
]
# the OpenImages model's bottleneck head (ASL tresnet.py `bottleneck_head`): logits only, unused
# by a feature teacher; checked for presence, not loaded
ASL_HEAD_KEYS = ("head.fc.embedding_generator.0.weight", "head.fc.embedding_generator.0.bias",
                 "head.fc.FC.weight", "head.fc.FC.bias")


def convert_asl_tresnet(checkpoint: dict, target_keys: set[str], where: str = "the ASL checkpoint") -> dict:
    """ASL TResNet release dict -> a timm ``tresnet_l`` body state dict.

    Strict both ways: every body key of the file must map onto a timm key and every timm body key
    must come from the file (only BatchNorm's ``num_batches_tracked`` counters, which inplace_abn
    does not keep, are filled with 0), and the head must be the OpenImages bottleneck head
    (`ASL_HEAD_KEYS`). InPlaceABN keeps |γ| + ε as the effective scale, so γ is converted as
    ASL's own ``InplacABN_to_ABN`` does: γ ← |γ| + 1e-5."""
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise InpaintBenchError(f"{where} is not an ASL release file (a dict with 'model' and 'num_classes')")
    state = checkpoint["model"]
    out, unmapped = {}, []
    for key, value in state.items():
        if key in ASL_HEAD_KEYS:
            continue
        new = key
        for pattern, repl in _ASL_RULES:
            new = pattern.sub(repl, new)
        if new not in target_keys:
            unmapped.append(key)
            continue
        if new.endswith(".bn.weight"):
            value = value.abs() + 1e-5
        out[new] = value
    missing_head = [k for k in ASL_HEAD_KEYS if k not in state]
    missing = sorted(k for k in target_keys - set(out) if not k.endswith("num_batches_tracked"))
    if unmapped or missing or missing_head:
        raise InpaintBenchError(
            f"{where} does not match ASL TResNet-L: {len(unmapped)} unexpected keys {unmapped[:5]}, "
            f"{len(missing)} missing keys {missing[:5]}, missing head keys {missing_head}")
    for k in target_keys - set(out):
        out[k] = torch.zeros((), dtype=torch.long)
    return out


def load_weights(path: str | Path, what: str | None = None, url: str | None = None):
    """torch.load of a weight file, memory-mapped (only the pages used are read) where the file is
    in the zip format torch.save has written since 1.6; a legacy file is read whole. With `what`
    (and its download `url`), an unreadable file (corrupt or truncated download) is a clear error."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if what is None:
            raise
        raise InpaintBenchError(f"cannot read the {what} checkpoint {path}: {exc}. Delete it and put a "
                                f"fresh copy of {url} there.") from exc


def assign_state_dict(net: nn.Module, state: dict, where: str = "the state dict") -> nn.Module:
    """Load `state` (strict) into `net` built on the ``meta`` device: the file's tensors become the
    parameters and buffers (cast to the skeleton's dtype), so no random initialisation is ever
    computed nor copied over. Non-persistent buffers, which no state dict holds (timm's BlurPool2d
    filter), are filled by the module's own ``_init_buffers`` (timm's convention for meta builds)."""
    like = dict(net.state_dict(keep_vars=True))
    cast = {k: (v.to(like[k].dtype) if k in like and v.dtype != like[k].dtype and v.is_floating_point() else v)
            for k, v in state.items()}
    net.load_state_dict(cast, strict=True, assign=True)
    for module in net.modules():
        empty = [n for n, b in module._buffers.items() if b is not None and b.is_meta]
        if not empty:
            continue
        init = getattr(module, "_init_buffers", None)
        if init is None:
            raise InpaintBenchError(f"{where}: {type(module).__name__} keeps buffers {empty} outside its state dict "
                                    f"and has no _init_buffers to compute them")
        for n in empty:
            module._buffers[n] = torch.empty_like(module._buffers[n], device="cpu")
        init()
    left = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:
        raise InpaintBenchError(f"{where} leaves {len(left)} tensors of the network unset, e.g. {left[:3]}")
    return net


def load_asl_tresnet(path: str | Path) -> TResNetTaps:
    """The ASL OpenImages TResNet-L (file `path`) as the three-tap teacher."""
    checkpoint = load_weights(path, "ASL TResNet-L", ASL_TRESNET_L_URL)
    with torch.device("meta"):
        net = _tresnet_l(num_classes=0)
    body_keys = {k for k in net.state_dict() if k.startswith("body.")}
    assign_state_dict(net, convert_asl_tresnet(checkpoint, body_keys, str(path)), str(path))
    return TResNetTaps(net)


class FrozenTeacher(nn.Module):
    """A teacher's three feature maps; no gradients, always in eval mode, weights never change."""

    def __init__(self, net: nn.Module, kind: str, labels: list[str] | None = None):
        super().__init__()
        self.net = net
        self.kind = kind
        self.labels = list(labels or [])
        self.channels = list(net.channels)
        for p in self.net.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):  # frozen: BN statistics must never update
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.features(x)


# ---------------------------------------------------------------- checkpoints

def save_teacher(path: str | Path, model: TeacherCNN, labels: list[str], args: dict,
                 metrics: dict | None = None, extra: dict | None = None) -> None:
    """Atomic write of a teacher checkpoint (architecture args + label names + weights)."""
    state = {
        "format": TEACHER_FORMAT,
        "arch": "teacher_cnn",
        "args": {"num_labels": len(labels), "widths": [int(w) for w in args["widths"]]},
        "labels": list(labels),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
        **(extra or {}),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_teacher(path: str | Path) -> tuple[TeacherCNN, dict]:
    path = Path(path)
    if not path.exists():
        raise InpaintBenchError(f"teacher checkpoint {path} does not exist; run the teacher step "
                                f"(`inpaintbench teacher ...`) first.")
    state = _read_teacher_state(path)
    with torch.device("meta"):
        model = TeacherCNN(**state["args"])
    assign_state_dict(model, state["state_dict"], str(path))
    return model, state


def _read_teacher_state(path: Path) -> dict:
    try:
        state = load_weights(path)
    except Exception as exc:  # torch raises several types for corrupt files
        raise InpaintBenchError(f"cannot read teacher checkpoint {path}: {exc}. Delete it and re-run the teacher step.") from exc
    if not isinstance(state, dict) or state.get("format") != TEACHER_FORMAT:
        raise InpaintBenchError(f"{path} is not an inpaintbench teacher checkpoint ({TEACHER_FORMAT}); "
                                f"re-run the teacher step.")
    return state


def _trained_path(ctx=None, path: str | None = None) -> str:
    path = path or (getattr(ctx, "artifacts", None) or {}).get("teacher")
    if not path:
        raise InpaintBenchError(
            "the trained teacher is chosen but no teacher checkpoint was given: add "
            "`requires: [teacher]` to the model in params.yaml (the workflow then trains it), "
            f"or choose {ALTERNATIVES}.")
    return str(path)


def teacher_channels(kind: str, ctx=None, path: str | None = None) -> list[int]:
    """The channels of the teacher's three taps without loading its weights: a static table for
    the released teachers; for ``trained``, the widths saved in its checkpoint (its pickled args,
    read memory-mapped: no tensor data) or, when that file is absent (evaluation on a machine that
    has the model checkpoint only), the params' ``teacher.widths`` it is trained with."""
    kind = _ALIASES.get(kind, kind)
    if kind in STATIC_CHANNELS:
        return list(STATIC_CHANNELS[kind])
    if kind != "trained":
        raise InpaintBenchError(f"unknown teacher kind {kind!r}; choose one of {', '.join(TEACHER_KINDS)}")
    file = Path(_trained_path(ctx, path))
    if file.exists():
        widths = (_read_teacher_state(file).get("args") or {}).get("widths")
    else:
        widths = {**DEFAULT_TEACHER_CFG, **(getattr(ctx, "teacher", None) or {})}["widths"]
    if not isinstance(widths, (list, tuple)) or len(widths) != 4:
        raise InpaintBenchError(f"teacher widths must have 4 entries, got {widths!r} ({file})")
    return [int(w) for w in widths[:3]]


class LazyTeacher:
    """The frozen teacher a model's training losses need, built on first `get` (once) and never
    before: the generator needs only `channels`. Deliberately no nn.Module, so it is neither a
    sub-module of the model nor in its state dict (checkpoints hold no teacher weights), and
    ``model.to`` does not move it (`get(device)` does)."""

    def __init__(self, kind: str, ctx=None, allow_download: bool = False, path: str | None = None,
                 module: FrozenTeacher | None = None):
        self.kind = _ALIASES.get(kind, kind)
        self.allow_download = bool(allow_download)
        self.path = _trained_path(ctx, path) if self.kind == "trained" and module is None else path
        self.channels = list(module.channels) if module is not None else \
            teacher_channels(self.kind, ctx, self.path)
        self._module = module

    @classmethod
    def of(cls, module: nn.Module) -> "LazyTeacher":
        """An already built teacher (any module with ``channels`` returning three feature maps)."""
        return cls(getattr(module, "kind", "trained"), module=module)

    @property
    def loaded(self) -> bool:
        return self._module is not None

    def get(self, device: torch.device | str | None = None, like: nn.Module | None = None) -> nn.Module:
        """The teacher on `device`, built on the first call; `like` (the generator): a teacher built
        while it is in channels-last memory format (``training.channels_last``, applied before the
        first step) is converted too, as ``model.to(memory_format=...)`` converted a sub-module."""
        if self._module is None:
            module = build_teacher(self.kind, allow_download=self.allow_download, path=self.path)
            if list(module.channels) != self.channels:
                raise InpaintBenchError(
                    f"the {self.kind} teacher ({self.path or self.kind}) has tap channels {module.channels}, but the "
                    f"model was built for {self.channels} (the params' teacher.widths): re-run the teacher step")
            self._module = like_model(module, like)
        return on_device(self._module, device)


def drop_teacher_keys(module, state_dict, prefix, *_):
    """load_state_dict pre-hook of SAHN/SPL/SPN: checkpoints written while the teacher was a
    sub-module hold its weights under ``teacher.``; they are not the model's, so they are dropped
    (the teacher is always rebuilt from its own file)."""
    for key in [k for k in state_dict if k.startswith(prefix + "teacher.")]:
        del state_dict[key]


class TeacherModelMixin:
    """For models whose training losses use a frozen teacher held as ``self.teacher_source`` (a
    `LazyTeacher`) beside ``self.generator`` (SAHN, SPL, SPN): put it before InpaintModel."""

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher, loaded (once) on first access, on the generator's device."""
        return self.teacher_source.get(next(self.generator.parameters()).device, like=self.generator)

    def train(self, mode: bool = True):
        """Training mode loads the teacher first, so missing weights stop a run before its first step."""
        if mode:
            self.teacher  # noqa: B018 (loads it)
        return super().train(mode)

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self.teacher  # noqa: B018 (the trainer calls this before the first step: load the teacher there)


def lazy_teacher_for(ctx=None, override: str | None = None, allow_download: bool | None = None) -> LazyTeacher:
    """The teacher a model's BuildContext asks for (SAHN, SPL and SPN), not loaded yet."""
    choice = teacher_choice(ctx, override)
    allow = choice["allow_download"] if allow_download is None else bool(allow_download)
    return LazyTeacher(choice["kind"], ctx, allow_download=allow)


def build_teacher(kind: str, ctx=None, allow_download: bool = False, path: str | None = None) -> FrozenTeacher:
    """The frozen teacher P of `kind` (see the module docstring)."""
    kind = _ALIASES.get(kind, kind)
    if kind == "trained":
        model, state = load_teacher(_trained_path(ctx, path))
        return FrozenTeacher(model, "trained", state["labels"])
    if kind == "imagenet-resnet50":
        from torchvision.models import resnet50

        file = cached_weights(RESNET50_FILE, RESNET50_URL, allow_download, "ResNet-50 (ImageNet) teacher")
        state = load_weights(file, "ResNet-50", RESNET50_URL)
        with torch.device("meta"):
            net = resnet50(weights=None)
        assign_state_dict(net, state, str(file))
        return FrozenTeacher(ResNet50Taps(net), "imagenet-resnet50")
    if kind == "asl-tresnet-l":
        file = cached_weights(ASL_TRESNET_L_FILE, ASL_TRESNET_L_URL, allow_download,
                              "ASL TResNet-L (OpenImages V6) teacher")
        return FrozenTeacher(load_asl_tresnet(file), "asl-tresnet-l")
    raise InpaintBenchError(f"unknown teacher kind {kind!r}; choose one of {', '.join(TEACHER_KINDS)}")


def teacher_choice(ctx=None, override: str | None = None) -> dict:
    """{'kind', 'allow_download'} for a model: a model-level `override` (args ``teacher``), else the
    experiment's ``teacher`` params block carried by the BuildContext, else the default."""
    cfg = dict(getattr(ctx, "teacher", None) or {})
    kind = override or cfg.get("kind", DEFAULT_KIND)
    if _ALIASES.get(kind, kind) not in TEACHER_KINDS:
        raise InpaintBenchError(f"unknown teacher kind {kind!r}; choose one of {', '.join(TEACHER_KINDS)}")
    return {"kind": _ALIASES.get(kind, kind), "allow_download": bool(cfg.get("allow_download", False))}


def teacher_for(ctx=None, override: str | None = None, allow_download: bool | None = None) -> FrozenTeacher:
    """Build the teacher a model's BuildContext asks for (SAHN, SPL and SPN call this)."""
    choice = teacher_choice(ctx, override)
    allow = choice["allow_download"] if allow_download is None else bool(allow_download)
    return build_teacher(choice["kind"], ctx, allow_download=allow)


def needs_trained_teacher(teacher_cfg: dict | None) -> bool:
    """Whether the workflow must train the teacher (the `teacher` rule) for this params block."""
    return (teacher_cfg or {}).get("kind", DEFAULT_KIND) == "trained"


@register_backbone("teacher")
def _teacher_backbone(cfg: dict, ctx) -> nn.Module:
    """Perceptual backbone = the trained teacher's three feature maps (cfg `path` or the
    `teacher` artifact of the model being built)."""
    return build_teacher("trained", ctx, path=cfg.get("path"))


# ---------------------------------------------------------------- training

class _ManifestImages(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict], root: Path, label_index: dict[str, int], size: int, scale: float):
        self.rows, self.root, self.label_index = rows, root, label_index
        self.size, self.out = size, max(1, int(round(size * scale)))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        img = torch.from_numpy(load_image(self.root / row["path"])).permute(2, 0, 1).unsqueeze(0)
        if img.shape[-2:] != (self.out, self.out):
            img = F.interpolate(img, size=(self.out, self.out), mode="bilinear", align_corners=False,
                                antialias=img.shape[-1] > self.out)
        target = torch.zeros(len(self.label_index))
        for name in _split_labels(row.get("labels", "")):
            target[self.label_index[name]] = 1.0
        return img[0].clamp(0, 1), target


def _split_labels(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(";") if t.strip()]


def _read_manifest(manifest_csv: Path) -> tuple[list[dict], list[str]]:
    rows = read_csv(manifest_csv)
    labels_file = manifest_csv.parent / "labels.txt"
    if not labels_file.exists():
        raise InpaintBenchError(f"{labels_file} is missing: the teacher needs the label list beside the "
                                f"manifest; re-run the prepare step.")
    labels = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not labels:
        raise InpaintBenchError(f"{labels_file} lists no labels, so the `trained` teacher cannot be trained "
                                f"on this dataset (e.g. Paris StreetView has none). In params.yaml set the "
                                f"experiment's {ALTERNATIVES}.")
    missing = {c for c in ("path", "split", "labels") if rows and c not in rows[0]}
    if missing:
        raise InpaintBenchError(f"{manifest_csv} lacks columns {sorted(missing)}; re-run the prepare step.")
    known = set(labels)
    for row in rows:
        unknown = [n for n in _split_labels(row["labels"]) if n not in known]
        if unknown:
            raise InpaintBenchError(f"{manifest_csv}: row {row.get('id', '?')} has labels {unknown} that "
                                    f"are not in {labels_file}; re-run the prepare step.")
    train = [r for r in rows if r["split"] == "train"]
    if not train:
        raise InpaintBenchError(f"{manifest_csv} has no rows with split == train.")
    return train, labels


def _evaluate(model: nn.Module, loader, device: str) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, count, n_img = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for img, target in loader:
            img, target = img.to(device), target.to(device)
            logits = model(img)
            loss_sum += float(F.binary_cross_entropy_with_logits(logits, target, reduction="sum")) / target.shape[1]
            correct += float(((logits > 0).float() == target).float().sum())
            count += target.numel()
            n_img += target.shape[0]
    return loss_sum / n_img, correct / count


def train_teacher(manifest_csv, out_path, cfg: dict, seed: int, device: str) -> dict:
    """Train the multi-label teacher on the manifest's train split and write its checkpoint.

    manifest_csv: prepared-dataset manifest (`id,path,split,source,sha256,labels`, paths relative
    to its folder, `labels` ';'-joined, `labels.txt` beside it). cfg: keys of DEFAULT_TEACHER_CFG.
    Returns the metrics (also stored in the checkpoint): `train_loss` and `train_accuracy`
    (per-label accuracy at logit 0) of the final model over the whole train split in eval mode,
    `initial_loss` (the same for the untrained model), `epoch_losses` (running mean per epoch),
    `num_images`, `num_labels`, `epochs`.
    """
    cfg = {k: v for k, v in cfg.items() if k not in TEACHER_CHOICE_KEYS}  # which teacher, not how to train it
    unknown = set(cfg) - set(DEFAULT_TEACHER_CFG)
    if unknown:
        raise InpaintBenchError(f"unknown teacher params {sorted(unknown)}; known: {sorted(DEFAULT_TEACHER_CFG)}")
    cfg = {**DEFAULT_TEACHER_CFG, **cfg}
    manifest_csv = Path(manifest_csv)
    rows, labels = _read_manifest(manifest_csv)
    size = cfg["image_size"]
    if size is None:
        size = load_image(manifest_csv.parent / rows[0]["path"]).shape[0]
    data = _ManifestImages(rows, manifest_csv.parent, {n: i for i, n in enumerate(labels)}, int(size),
                           float(cfg["input_scale"]))

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    bs = int(cfg["batch_size"])
    loader = torch.utils.data.DataLoader(data, batch_size=bs, shuffle=True, generator=gen,
                                         drop_last=len(data) > bs, num_workers=int(cfg["num_workers"]))
    eval_loader = torch.utils.data.DataLoader(data, batch_size=bs, shuffle=False, num_workers=int(cfg["num_workers"]))
    model = TeacherCNN(len(labels), cfg["widths"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    initial_loss, _ = _evaluate(model, eval_loader, device)

    epoch_losses = []
    for _ in range(int(cfg["epochs"])):
        model.train()
        total, n = 0.0, 0
        for img, target in loader:
            img, target = img.to(device), target.to(device)
            if cfg["hflip"]:
                flip = torch.rand(img.shape[0], generator=gen) < 0.5
                img = torch.where(flip.view(-1, 1, 1, 1).to(device), img.flip(-1), img)
            loss = F.binary_cross_entropy_with_logits(model(img), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * img.shape[0]
            n += img.shape[0]
        epoch_losses.append(total / max(n, 1))
        if not math.isfinite(epoch_losses[-1]):
            raise InpaintBenchError(f"teacher training diverged (loss {epoch_losses[-1]}); lower teacher.lr")

    train_loss, train_acc = _evaluate(model, eval_loader, device)
    metrics = {
        "train_loss": train_loss, "train_accuracy": train_acc, "initial_loss": initial_loss,
        "epoch_losses": [float(x) for x in epoch_losses], "num_images": len(data),
        "num_labels": len(labels), "epochs": int(cfg["epochs"]),
    }
    save_teacher(out_path, model.cpu(), labels, {"widths": cfg["widths"]}, metrics,
                 extra={"seed": int(seed), "train_cfg": {k: v for k, v in cfg.items()}, "image_size": int(size)})
    return metrics
