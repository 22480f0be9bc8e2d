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
    """Atomic CSV write, with an integrity record (size, sha256, row count) beside it."""
    from .integrity import record

    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
                n += 1
        record(path, rows=n, source=tmp)


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSV, checked against its integrity record (an empty, cut-short or changed file
    is a clear error, not a silently shorter table)."""
    from .integrity import verify

    path = Path(path)
    if not path.exists():
        raise InpaintBenchError(f"{path} does not exist; run the step that produces it first.")
    verify(path, "CSV file")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    verify(path, "CSV file", rows=len(rows))
    return rows


def read_frame(path: str | os.PathLike, **read_csv_kwargs):
    """`pandas.read_csv` of a CSV checked like `read_csv`: a zero-byte, cut-short or changed file is
    an InpaintBenchError naming it, never a pandas traceback."""
    import pandas as pd

    from .integrity import verify

    path = Path(path)
    verify(path, "CSV file")
    try:
        frame = pd.read_csv(path, **read_csv_kwargs)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InpaintBenchError(f"CSV file {path} cannot be read ({exc}); delete it and re-run the step "
                                f"that produces it.") from None
    verify(path, "CSV file", rows=len(frame))
    return frame


_GREY16 = ("I;16", "I;16L", "I;16B", "I;16N")


def _high_depth_grey(im: Image.Image, path) -> np.ndarray | None:
    """A 16-bit or 32-bit greyscale image as float32 HxW in [0, 1] (scaled by its bit depth; PIL's
    convert("RGB"/"L") would clip every value above 255 to white); None for other modes."""
    if im.mode in _GREY16:
        return np.asarray(im, dtype=np.float32) / 65535.0
    if im.mode == "I":  # 16-bit PNGs open as "I" in some Pillow versions; 32-bit ints are refused
        a = np.asarray(im, dtype=np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InpaintBenchError(f"image {path} is a 32-bit integer image (values {a.min():g}..{a.max():g}); "
                                    f"convert it to 8- or 16-bit first.")
        return (a / 65535.0).astype(np.float32)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1 or not np.isfinite(a).all()):
            raise InpaintBenchError(f"image {path} is a floating-point image with values outside [0, 1]; "
                                    f"convert it to 8- or 16-bit first.")
        return a
    return None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 RGB HxWx3 in [0, 1]; a corrupt file is a clear error.
    16-bit greyscale (``I;16``) is scaled by 65535, not clipped."""
    try:
        with Image.open(path) as im:
            im.load()
            grey = _high_depth_grey(im, path)
            rgb = im.convert("RGB") if grey is None else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InpaintBenchError(f"cannot read image {path}: {exc}. Replace or delete the file.") from exc
    if grey is not None:
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def load_grey(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 greyscale HxW in [0, 1] (16-bit scaled, not clipped)."""
    try:
        with Image.open(path) as im:
            im.load()
            grey = _high_depth_grey(im, path)
            if grey is None:
                grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InpaintBenchError(f"cannot read image {path}: {exc}. Replace or delete the file.") from exc
    return grey


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
        grey = load_grey(path)
    except InpaintBenchError as exc:
        raise InpaintBenchError(f"cannot read mask {path}: {exc}") from None
    if size is not None and grey.shape != (size, size):
        raise InpaintBenchError(
            f"mask {path} is {grey.shape[1]}x{grey.shape[0]} but the experiment evaluates at "
            f"{size}x{size}; re-run the masks step for this size."
        )
    return (grey > 0.5).astype(np.float32)


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    save_image(path, (np.asarray(mask) > 0.5).astype(np.float32))
