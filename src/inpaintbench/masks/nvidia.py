"""Import a published irregular-mask set: the NVIDIA Irregular Mask Dataset (testing set of
Liu et al. 2018, used by SAHN Sec. 4.1: "12,000 masks and a total of six different hole-image
area ratios") and QD-IMD (Quick Draw Irregular Mask Dataset).

Every mask is binarised in its own polarity (NVIDIA: white = hole; QD-IMD: BLACK = hole, see
sources.py), resized to the evaluated size with nearest-neighbour interpolation when its size
differs, re-binarised, and written as an L-mode PNG with white = hole (the project's
convention). The hole ratio is recomputed on the binarised, resized mask: NVIDIA's
index-to-ratio-bin mapping is undocumented and resizing changes ratios anyway. Bucketing by
ratio and pairing with images are later steps (masks/buckets.py, pairing).

Output (``out_dir``): ``masks/<id>.png``, ``manifest.csv`` (``id,path,hole_ratio,source``;
`source` relative to ``raw_root``), ``skipped.csv`` (``path,reason``).
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.fetch import COMPLETE
from ..data.prepare import run_parallel
from ..data.sources import get_source
from ..errors import InpaintBenchError
from ..io import atomic_path, load_grey, write_csv

MANIFEST_FIELDS = ["id", "path", "hole_ratio", "source"]
SKIPPED_FIELDS = ["path", "reason"]
MASK_SOURCES = ("nvidia-irregular-test", "qd-imd")


def binarise(grey: np.ndarray, hole: str) -> np.ndarray:
    """uint8/float grey HxW -> bool hole map (True = hole); threshold at mid-grey."""
    grey = np.asarray(grey)
    mid = 127 if grey.dtype == np.uint8 else 0.5
    return grey > mid if hole == "white" else grey <= mid


def resize_mask(hole: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool hole map to size x size, then re-binarise."""
    if hole.shape == (size, size):
        return hole
    im = Image.fromarray(hole.astype(np.uint8) * 255, "L").resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(im) > 127


def _import_one(job: tuple) -> tuple[str, float | None, str | None]:
    mask_id, src, dst, size, hole = job
    try:
        grey = load_grey(src)  # float in [0, 1]; a 16-bit mask is scaled, not clipped
    except InpaintBenchError as exc:
        return mask_id, None, f"cannot read mask: {exc}"
    mask = resize_mask(binarise(grey, hole), size)
    with atomic_path(dst, suffix=".png") as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(tmp, format="PNG")
    return mask_id, float(mask.mean()), None


def import_maskset(name: str, spec: dict, raw_root: str | os.PathLike, out_dir: str | os.PathLike,
                   *, size: int, workers: int = 2) -> Path:
    """Import mask set `name` (params.yaml ``masks.<name>``, e.g. ``{source:
    nvidia-irregular-test}`` or ``{source: qd-imd, split: test}``) at size x size.

    Optional spec keys: ``split`` (QD-IMD: train/test; NVIDIA: test), ``limit`` (keep the
    first N masks in file-name order, for quick runs), ``invert`` (flip the registry's hole
    polarity if a mirror ships the opposite). Returns the manifest path.
    """
    source = spec.get("source")
    if source not in MASK_SOURCES:
        raise InpaintBenchError(
            f"masks.{name}.source: {source!r} is not an importable mask set; expected one of "
            f"{', '.join(MASK_SOURCES)} (generated masks are built by masks/generate.py)."
        )
    src = get_source(source)
    raw_root, out_dir = Path(raw_root), Path(out_dir)
    root = raw_root / source
    if not (root / COMPLETE).exists():
        raise InpaintBenchError(
            f"{source} is not fetched yet ({root / COMPLETE} is missing); run "
            f"`inpaintbench fetch {source}` first."
        )
    splits = src.layout["splits"]
    split = spec.get("split", "test")
    if split not in splits:
        raise InpaintBenchError(f"masks.{name}.split: {source} has {', '.join(splits)}, not {split!r}.")
    folder = root / splits[split]
    if not folder.is_dir():
        raise InpaintBenchError(f"{folder} is missing: the fetched {source} is incomplete; fetch it again with --force.")
    hole = src.layout["hole"]
    if spec.get("invert"):
        hole = "black" if hole == "white" else "white"
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if "limit" in spec:
        files = files[: int(spec["limit"])]
    if not files:
        raise InpaintBenchError(f"{folder} holds no masks; fetch {source} again with --force.")

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / ".masks.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    jobs = [(p.stem, str(p), str(staging / f"{p.stem}.png"), int(size), hole) for p in files]
    results = run_parallel(_import_one, jobs, workers)
    rows, skipped = [], []
    for p, (mask_id, ratio, reason) in zip(files, results):
        rel_source = p.relative_to(raw_root).as_posix()
        if ratio is None:
            skipped.append({"path": rel_source, "reason": reason})
            continue
        rows.append({"id": mask_id, "path": f"masks/{mask_id}.png", "hole_ratio": f"{ratio:.6f}",
                     "source": rel_source})
    final = out_dir / "masks"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    write_csv(out_dir / "skipped.csv", skipped, SKIPPED_FIELDS)
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_FIELDS)
    rate = len(files) / max(time.perf_counter() - started, 1e-9)
    msg = f"imported mask set {name} ({source}/{split}): {len(rows)} masks at {size}x{size}, {rate:.0f} masks/s"
    if skipped:
        msg += f"; SKIPPED {len(skipped)} unreadable mask(s), listed in {out_dir / 'skipped.csv'}"
    ratios = [float(r["hole_ratio"]) for r in rows]
    if ratios and float(np.median(ratios)) > 0.5:
        msg += ("; WARNING: the median hole ratio is above 0.5, the polarity may be inverted "
                f"(set masks.{name}.invert: true if holes look like the background)")
    print(msg, file=sys.stderr)
    return out_dir / "manifest.csv"
