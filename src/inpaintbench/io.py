"""Atomic writes and image I/O at the boundary (DESIGN.md: images float32 RGB in [0, 1];
masks 1 = hole, stored as PNG with white = hole)."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InpaintBenchError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | os.PathLike, rows: Iterable[dict], fieldnames: list[str]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            for row in rows:
                writer.writerow(row)


def read_csv(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise InpaintBenchError(f"{path} does not exist; run the step that produces it first.")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 RGB HxWx3 in [0, 1]; a corrupt file is a clear error."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InpaintBenchError(f"cannot read image {path}: {exc}. Replace or delete the file.") from exc
    return np.asarray(rgb, dtype=np.float32) / 255.0


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write float [0,1] HxWx3 (or HxW) as an 8-bit PNG, atomically."""
    arr = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def load_mask(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read a mask PNG (white = hole) as float32 HxW with 1 = hole, 0 = known.

    A mask whose size differs from `size` is an error: masks are resized when they are
    imported (masks step), never silently at evaluation time.
    """
    try:
        with Image.open(path) as im:
            im.load()
            grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InpaintBenchError(f"cannot read mask {path}: {exc}") from exc
    if size is not None and grey.shape != (size, size):
        raise InpaintBenchError(
            f"mask {path} is {grey.shape[1]}x{grey.shape[0]} but the experiment evaluates at "
            f"{size}x{size}; re-run the masks step for this size."
        )
    return (grey > 0.5).astype(np.float32)


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    save_image(path, (np.asarray(mask) > 0.5).astype(np.float32))
