"""`inpaintbench inpaint`: inpaint a user's own images with a trained, released or classical model.

    inpaintbench inpaint --model lama-fourier --image a.png --mask a_mask.png -o out.png
    inpaintbench inpaint --model big-lama-released --image photos/ --mask masks/ -o filled/

Conventions are the benchmark's (DESIGN.md): the mask is white (1) in the hole and black (0)
where the image is kept; the output is the composite ``pred·mask + image·(1 − mask)``, so every
known pixel is returned unchanged. A mask must be binary (only 0 and the maximum value) unless
``--threshold`` says how to binarise it, and must have the image's size.

Folder mode: every image in the ``--image`` folder is paired with the mask of the same name in
the ``--mask`` folder, ``<stem>.<ext>`` or ``<stem>_mask.<ext>``; an image without a mask is an
error naming it. Outputs are PNGs named ``<stem>.png`` in the ``-o`` folder.

Which weights: a released entry (``weights:`` in params.yaml) uses its checkpoint; a classical
method needs none; a trained model uses the checkpoint of ``--experiment``/``--train`` (default:
the first run of the active experiments that has a checkpoint of the model). The networks are
fully convolutional; an image whose sides are not a multiple of ``--pad-to`` (default 8, what
the down-sampling models need; more where a model says so, e.g. RFR 16) is reflect-padded for
the network and cropped back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import paths
from .errors import InpaintBenchError
from .io import load_grey, load_image, save_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_mask(path: Path, threshold: float | None = None, invert: bool = False) -> np.ndarray:
    """HxW float32, 1 = hole. Not binary and no threshold: a clear error."""
    grey = load_grey(path)
    if threshold is None:
        values = np.unique(grey)
        if not np.all(np.isin(values, (0.0, 1.0))):
            inner = int(((grey > 0) & (grey < 1)).sum())
            raise InpaintBenchError(
                f"mask {path} is not binary: {inner} pixels are neither black nor white (values "
                f"{values.min():.3f}..{values.max():.3f}). Save it as a black/white PNG (white = hole), or pass "
                f"--threshold 0.5 to treat pixels above 0.5 as hole.")
        mask = grey
    else:
        mask = (grey > threshold).astype(np.float32)
    return (1.0 - mask if invert else mask).astype(np.float32)


def pair_folders(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by name: <stem>.<ext> or <stem>_mask.<ext> in the mask folder
    (both may be one folder: then <stem>_mask.<ext> files are the masks)."""
    same = images.resolve() == masks.resolve()
    by_stem = {}
    for p in sorted(masks.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(p.stem, p)
    found, missing = [], []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if same and img.stem.endswith("_mask"):
            continue
        mask = by_stem.get(f"{img.stem}_mask") or (None if same else by_stem.get(img.stem))
        (found.append((img, mask)) if mask else missing.append(img.name))
    if missing:
        raise InpaintBenchError(
            f"no mask in {masks} for {len(missing)} image(s): {', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}; name each mask <stem>.png or <stem>_mask.png")
    if not found:
        raise InpaintBenchError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {images}")
    return found


def _trained_checkpoint(params, model: str, experiment: str | None, train: str | None) -> tuple[str, str]:
    exps = [experiment] if experiment else params.active_experiments() + [
        e for e in params.raw["experiments"] if e not in params.active_experiments()]
    tried = []
    for e in exps:
        exp = params.experiment(e)
        for run in exp["runs"]:
            if train and run["train"] != train:
                continue
            if model in exp["models"]:
                ckpt = paths.checkpoint(e, run["train"], model)
                if ckpt.exists():
                    return e, run["train"]
                tried.append(str(ckpt))
    raise InpaintBenchError(
        f"model {model!r} has no trained checkpoint ({', '.join(tried) or 'no experiment lists it'}); train it first "
        f"(uv run snakemake --cores all, or inpaintbench train EXPERIMENT TRAIN {model}), or choose a released model")


def load_model(params, model: str, experiment: str | None = None, train: str | None = None, device: str = "cpu"):
    """The method to run: released, classical or trained (see the module docstring)."""
    from .evaluate import load_method
    from .models import registry
    from .models.base import BuildContext

    spec = params.model(model)
    if "weights" in spec:
        from .models.released import build_released

        return build_released(model, spec, device)
    if not registry.is_learned(spec["arch"]):
        return registry.build(spec["arch"], spec.get("args"), spec.get("loss"), BuildContext())
    e, t = _trained_checkpoint(params, model, experiment, train)
    print(f"{model}: weights of {paths.checkpoint(e, t, model)}")
    return load_method(params, e, t, model, device)


def inpaint_array(method, image: np.ndarray, mask: np.ndarray, device: str = "cpu", pad_to: int = 8) -> np.ndarray:
    """Composite HxWx3 in [0, 1] for one image and its HxW hole mask."""
    from .models.base import ClassicalModel

    if isinstance(method, ClassicalModel):
        out = method.inpaint_numpy(image, mask)
    else:
        h, w = mask.shape
        # a model may need sides of a multiple of more than pad_to (RFR 16, CTSDG 2**depth)
        pad_to = max(pad_to, int(getattr(method, "size_multiple", 1)), int(getattr(method, "multiple", 1)))
        x = torch.from_numpy(image).permute(2, 0, 1)[None].to(device)
        m = torch.from_numpy(mask)[None, None].to(device)
        ph, pw = (-h) % pad_to, (-w) % pad_to
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x, m = F.pad(x, (0, pw, 0, ph), mode=mode), F.pad(m, (0, pw, 0, ph), mode=mode)
        with torch.no_grad():
            out = method.inpaint(x, m).float().clamp(0, 1)[0, :, :h, :w].permute(1, 2, 0).cpu().numpy()
    m3 = mask[..., None]
    return (out * m3 + image * (1 - m3)).astype(np.float32)


def run_inpaint(params, model: str, image: str, mask: str, output: str, experiment: str | None = None,
                train: str | None = None, device: str = "cpu", threshold: float | None = None,
                invert_mask: bool = False, pad_to: int = 8, progress: bool = True) -> list[Path]:
    image_p, mask_p, out_p = Path(image), Path(mask), Path(output)
    if not image_p.exists():
        raise InpaintBenchError(f"--image {image_p} does not exist")
    if not mask_p.exists():
        raise InpaintBenchError(f"--mask {mask_p} does not exist")
    if image_p.is_dir() != mask_p.is_dir():
        raise InpaintBenchError("--image and --mask must both be files or both be folders")
    if image_p.is_dir():
        if out_p.exists() and not out_p.is_dir():
            raise InpaintBenchError(f"-o {out_p} must be a folder when --image is a folder")
        jobs = [(i, m, out_p / f"{i.stem}.png") for i, m in pair_folders(image_p, mask_p)]
    else:
        if out_p.is_dir():
            out_p = out_p / f"{image_p.stem}.png"
        jobs = [(image_p, mask_p, out_p)]
    # read and check every input before the (slow) model is built
    arrays = []
    for img_path, m_path, _ in jobs:
        img = load_image(img_path)
        m = read_mask(m_path, threshold, invert_mask)
        if img.shape[:2] != m.shape:
            raise InpaintBenchError(
                f"mask {m_path} is {m.shape[1]}x{m.shape[0]} but image {img_path} is {img.shape[1]}x{img.shape[0]}; "
                f"give a mask of the image's size")
        arrays.append((img, m))
    method = load_model(params, model, experiment, train, device)
    if hasattr(method, "eval"):
        method.eval()
    written = []
    for (img, m), (_, _, dst) in tqdm(list(zip(arrays, jobs)), desc=f"inpaint {model}", disable=not progress):
        save_image(dst, inpaint_array(method, img, m, device, pad_to))
        written.append(dst)
    print(f"{len(written)} image(s) -> {out_p}")
    return written
