"""SAHN's frozen semantic teacher P (SAHN Sec. 3.1: {F_goal^n}_{n=1..N} = P(I'_full), N = 3).

P is a multi-label classifier applied to the ×2-upsampled full image; its feature maps at strides
2, 4 and 8 of that input (sizes h, h/2, h/4 of the original image, as the paper states) are the
targets of the semantic prior loss. P is never trained with the inpainting network. Options:

* ``trained`` — a small multi-label CNN (`TeacherCNN`) that the workflow trains itself on the
  training set's own labels with `train_teacher` (BCE-with-logits), fully offline. Its checkpoint
  records the architecture args and the label names.
* ``resnet50`` — torchvision's ImageNet ResNet-50 (``resnet50-11ad3fa6.pth``) read from the
  torch.hub cache; taps: stem ReLU (64 ch, stride 2), layer1 (256, stride 4), layer2 (512,
  stride 8). It is a single-label ImageNet classifier, a stand-in for the paper's multi-label one.
* The paper's teacher, ASL TResNet-L trained on OpenImages (Ridnik et al. 2021), is *not*
  offered: TResNet is not in torchvision, the ASL checkpoints are built on the `inplace_abn`
  compiled extension (and `timm` for the TResNet definition), neither of which is a dependency
  here, and the checkpoints are hosted outside torch.hub. Adding it would need those extra
  compiled dependencies, which the project avoids.

`register_backbone("teacher")` also offers the trained teacher's three feature maps as the
perceptual-loss backbone (params ``perceptual: {backbone: teacher}``), an offline substitute for
the paper's VGG16 when its ImageNet weights are not cached.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..io import atomic_path, load_image, read_csv
from .perceptual import _IMAGENET_MEAN, _IMAGENET_STD, cached_weights, register_backbone

TEACHER_FORMAT = "inpaintbench-teacher/1"
RESNET50_FILE = "resnet50-11ad3fa6.pth"
RESNET50_URL = f"https://download.pytorch.org/models/{RESNET50_FILE}"
TEACHER_KINDS = ("trained", "resnet50")
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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise InpaintBenchError(f"cannot read teacher checkpoint {path}: {exc}. Delete it and re-run the teacher step.") from exc
    if not isinstance(state, dict) or state.get("format") != TEACHER_FORMAT:
        raise InpaintBenchError(f"{path} is not an inpaintbench teacher checkpoint ({TEACHER_FORMAT}); "
                                f"re-run the teacher step.")
    model = TeacherCNN(**state["args"])
    model.load_state_dict(state["state_dict"])
    return model, state


def build_teacher(kind: str, ctx=None, allow_download: bool = False, path: str | None = None) -> FrozenTeacher:
    """The frozen teacher P chosen in params (`teacher: trained | resnet50`)."""
    if kind == "trained":
        path = path or (getattr(ctx, "artifacts", None) or {}).get("teacher")
        if not path:
            raise InpaintBenchError(
                "the trained SAHN teacher is chosen but no teacher checkpoint was given: add "
                "`requires: [teacher]` to the model in params.yaml (the workflow then trains it), "
                "or choose `teacher: resnet50`.")
        model, state = load_teacher(path)
        return FrozenTeacher(model, "trained", state["labels"])
    if kind == "resnet50":
        from torchvision.models import resnet50

        file = cached_weights(RESNET50_FILE, RESNET50_URL, allow_download, "ResNet-50 (ImageNet) teacher")
        net = resnet50(weights=None)
        net.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        return FrozenTeacher(ResNet50Taps(net), "resnet50")
    raise InpaintBenchError(f"unknown SAHN teacher {kind!r}; choose one of {', '.join(TEACHER_KINDS)}")


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
        raise InpaintBenchError(f"{labels_file} lists no labels; a multi-label teacher cannot be trained "
                                f"on this dataset (choose `teacher: resnet50`).")
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
