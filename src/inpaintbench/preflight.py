"""Before any job runs: are the pretrained weights the chosen settings need on this machine?

The papers' experiments ask for the papers' parts (ImageNet VGG16 for the perceptual/style
losses, the paper's teacher for SAHN's prior). Offline, those weights are missing; rather than
letting the data steps run for hours and the first training job fail, the workflow stops before
it starts (Snakefile ``onstart``, workflow/rules/common.smk) with one message naming each missing
file, where to put it, and the offline substitute a user may choose explicitly. Nothing is
substituted silently: a substitute runs only when params choose it, and the report names it.
"""
from __future__ import annotations

from pathlib import Path

from .config import Params, TrainJob

#: perceptual backbones that need a weight file: name -> (file, url, what)
PERCEPTUAL_WEIGHTS = {"vgg16": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
                                "ImageNet VGG16 (the papers' perceptual/style-loss network)")}
#: offline substitutes and what each replaces (the report names them per table)
SUBSTITUTES = {
    ("perceptual", "random-vgg16"): "a seeded, untrained VGG16-shaped network in place of ImageNet VGG16",
    ("perceptual", "teacher"): "the self-trained teacher's features in place of ImageNet VGG16",
    ("perceptual", "none"): "no perceptual/style loss",
    ("teacher", "imagenet-resnet50"): "an ImageNet ResNet-50 in place of the paper's ASL TResNet-L (OpenImages) teacher",
    ("teacher", "resnet50"): "an ImageNet ResNet-50 in place of the paper's ASL TResNet-L (OpenImages) teacher",
    ("teacher", "trained"): "a small CNN trained on the training set's own labels in place of the paper's ASL TResNet-L teacher",
}


def _hub_dir() -> Path:
    from .train.perceptual import hub_checkpoint_dir

    return hub_checkpoint_dir()


def _teacher_files(kind: str) -> list[tuple[str, str, str]]:
    """(file, url, what) a teacher kind loads from the torch.hub cache (train/teacher.py)."""
    from .train import teacher as t

    files = {"asl-tresnet-l": ("ASL_TRESNET_L_FILE", "ASL_TRESNET_L_URL", "ASL TResNet-L (OpenImages), the SAHN paper's teacher"),
             "imagenet-resnet50": ("RESNET50_FILE", "RESNET50_URL", "ImageNet ResNet-50 teacher"),
             "resnet50": ("RESNET50_FILE", "RESNET50_URL", "ImageNet ResNet-50 teacher")}
    if kind not in files or not hasattr(t, files[kind][0]):
        return []
    name, url, what = files[kind]
    return [(getattr(t, name), getattr(t, url, ""), what)]


def missing_weights(params: Params, jobs: list[TrainJob]) -> list[str]:
    """One line per missing weight file the training `jobs` need (empty: all present)."""
    hub = _hub_dir()
    problems: list[str] = []
    for e in sorted({j.experiment for j in jobs}):
        models = [j.model for j in jobs if j.experiment == e]
        cfg = params.perceptual(e)
        backbone = cfg.get("backbone", "random-vgg16")
        if backbone in PERCEPTUAL_WEIGHTS and not cfg.get("allow_download"):
            file, url, what = PERCEPTUAL_WEIGHTS[backbone]
            if not (hub / file).is_file():
                problems.append(
                    f"experiment {e}: perceptual backbone {backbone} ({what}) needs {hub / file} "
                    f"(download {url}; set TORCH_HOME to move the cache), or choose the offline substitute "
                    f"explicitly: experiments.{e}.perceptual.backbone: random-vgg16")
        if any("teacher" in params.model(m).get("requires", []) for m in models):
            tcfg = params.teacher(e)
            kind = tcfg.get("kind", "trained")
            if not tcfg.get("allow_download"):
                for file, url, what in _teacher_files(kind):
                    if not (hub / file).is_file():
                        problems.append(
                            f"experiment {e}: teacher {kind} ({what}) needs {hub / file} (download {url}), "
                            f"or choose an offline substitute explicitly: experiments.{e}.teacher.kind: "
                            f"imagenet-resnet50 (needs resnet50-11ad3fa6.pth) or trained (datasets with labels only)")
    return problems


def substitutes_used(perceptual: dict | None, teacher: dict | None) -> list[str]:
    """Plain-language names of the offline substitutes a run used (for the report)."""
    out = []
    backbone = (perceptual or {}).get("backbone", "random-vgg16")
    if ("perceptual", backbone) in SUBSTITUTES:
        text = SUBSTITUTES[("perceptual", backbone)]
        if backbone == "random-vgg16":
            text += f" (width {(perceptual or {}).get('width', 1.0)})"
        out.append(f"perceptual backbone {backbone}: {text}")
    if teacher is not None:
        kind = teacher.get("kind", "trained")
        if ("teacher", kind) in SUBSTITUTES:
            out.append(f"teacher {kind}: {SUBSTITUTES[('teacher', kind)]}")
    return out
