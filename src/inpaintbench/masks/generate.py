"""Seeded irregular (free-form stroke) masks that can target a hole-ratio interval.

Strokes follow the free-form recipe of Yu et al. 2019 (DeepFill v2, Sec. 3.3 / Alg. 1): a random
start point, several vertices joined by thick lines with random angle and length, round joints.
Strokes are added until the hole ratio (fraction of the *binarised* mask that is hole) falls in
the requested interval; a stroke that overshoots is undone and retried thinner.
Masks are float32 HxW with 1 = hole.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import derive_seed
from ..errors import InpaintBenchError
from ..io import save_mask, write_csv

MANIFEST_FIELDS = ["id", "path", "hole_ratio", "source"]


def hole_ratio(mask: np.ndarray) -> float:
    return float((np.asarray(mask) > 0.5).mean())


_TWO_PI = 2 * np.pi


def _affine_uniform() -> bool:
    """Whether this numpy draws ``Generator.uniform(low, high)`` as ``low + (high - low) * u`` of
    ``Generator.random()``'s ``u``, rounded after the product and after the sum (not fused into
    one multiply-add by the compiler), for the lengths' bounds: then one `random` call gives all
    of a stroke's (angle, length) draws. Checked once on 64 draws per size (a fused build
    differs in a good share of them); where it does not hold, `uniform` is called per value."""
    for size in (32, 64, 128, 256, 512):
        lo, hi = size / 10, size / 3
        a, b = np.random.default_rng(size), np.random.default_rng(size)
        if [a.uniform(lo, hi) for _ in range(64)] != (lo + (hi - lo) * b.random(64)).tolist():
            return False
    return True


_AFFINE = _affine_uniform()


def _stroke_geometry(size: int, rng: np.random.Generator, width_scale: float) -> tuple[int, list[tuple[float, float]], tuple[int, int]]:
    """One stroke: its width, its vertices (the start point first) and the rows ``y0 .. y1-1``
    that hold every pixel it can set.

    The draws and their order are those of the original per-vertex loop: the width, the start
    point ``uniform(0, size, 2)``, the vertex count, then per vertex ``uniform(0, 2 pi)`` (angle)
    and ``uniform(size / 10, size / 3)`` (length). A draw ``uniform(0, h)`` is ``h * u`` of the
    next ``random()`` double ``u`` exactly (numpy computes ``low + (high - low) * u``), so the
    start point and the angles come from ``random`` calls, and the lengths too where `_AFFINE`
    says numpy rounds that expression as written; all of a stroke's vertices in one call.

    Rows: PIL rounds the vertices down to integers and widens a line by at most
    ceil((width - 1) / 2) on each side, a joint reaches width / 2 from its vertex; with a margin.
    """
    max_w = max(2, int(size / 7 * width_scale))
    width = int(rng.integers(max(1, max_w // 3), max_w + 1))
    x, y = (size * rng.random(2)).tolist()
    n = int(rng.integers(2, 7))
    lo, hi = size / 10, size / 3
    if _AFFINE:
        u = rng.random(2 * n)
        angles, lengths = _TWO_PI * u[0::2], lo + (hi - lo) * u[1::2]
    else:
        draws = np.array([(rng.uniform(0, _TWO_PI), rng.uniform(lo, hi)) for _ in range(n)])
        angles, lengths = draws[:, 0], draws[:, 1]
    dx, dy = (lengths * np.cos(angles)).tolist(), (lengths * np.sin(angles)).tolist()
    points = [(x, y)]
    top = size - 1
    ymin = ymax = y
    for ddx, ddy in zip(dx, dy):
        # min/max = np.clip on scalars (same values)
        x, y = float(min(max(x + ddx, 0), top)), float(min(max(y + ddy, 0), top))
        points.append((x, y))
        if y < ymin:
            ymin = y
        elif y > ymax:
            ymax = y
    m = width // 2 + 3
    return width, points, (max(0, int(ymin) - m), min(size, int(ymax) + m + 1))


def _mapped_l_image(array: np.ndarray):
    """A Pillow core "L" image whose rows are `array`'s memory (what ``Image.frombuffer`` maps;
    Pillow's drawing primitives then write into the array itself), or None where this Pillow
    does not share the memory (checked by drawing one pixel)."""
    try:
        core = Image.core.map_buffer(array, (array.shape[1], array.shape[0]), "raw", 0, ("L", 0, 1))
        draw = Image.core.draw(core, 0)
        draw.draw_lines([(0.0, 0.0), (0.0, 0.0)], draw.draw_ink(255), 2)
    except (AttributeError, TypeError, ValueError):
        return None
    shared = array[0, 0] == 255
    array[0, 0] = 0
    return (core, draw) if shared else None


_SHARED = _mapped_l_image(np.zeros((2, 2), np.uint8)) is not None


class _Canvas:
    """A size x size uint8 array (0 or 255) drawn on by Pillow's core primitives, the ones
    ``ImageDraw.line`` and ``ImageDraw.ellipse`` call (``Image.core.draw``: ``draw_lines``,
    ``draw_ellipse``), without their per-call Python checks, which cost more than the drawing.
    Pillow draws into the array's own memory (`_mapped_l_image`), so a stroke's rows are read
    back and undone with numpy; where this Pillow cannot share the memory, an ``Image`` is drawn
    on and copied back after each stroke (slower, same pixels).

    A stroke is thick segments between its vertices and a round joint (a disc of the stroke's
    width) at each vertex after the first. Every primitive sets its pixels to 255 (no blending),
    so the image is the union of the primitives whatever their order: one ``draw_lines`` call for
    all segments draws what one call per segment drew. Width-1 lines end with an explicit end
    point per call, so they keep one call per segment.
    """

    def __init__(self, size: int):
        self.array = np.zeros((size, size), np.uint8)
        mapped = _mapped_l_image(self.array) if _SHARED else None
        if mapped is not None:
            self._core, self.draw = mapped  # the core keeps the array's buffer alive
            self.image = None
        else:
            self.image = Image.new("L", (size, size), 0)
            self.draw = Image.core.draw(self.image.im, 0)
        self.ink = self.draw.draw_ink(255)

    def clear(self) -> None:
        self.array[:] = 0
        if self.image is not None:
            self.image.paste(0, (0, 0, *self.image.size))

    def stroke(self, width: int, points: list[tuple[float, float]]) -> None:
        draw, ink = self.draw, self.ink
        if width > 1:
            draw.draw_lines(points, ink, width)
        else:
            for a, b in zip(points, points[1:]):
                draw.draw_lines([a, b], ink, width)
        r = width / 2
        for nx, ny in points[1:]:
            draw.draw_ellipse((nx - r, ny - r, nx + r, ny + r), ink, 1)
        if self.image is not None:
            self.array = np.array(self.image)

    def restore(self, rows: tuple[int, int], saved: np.ndarray) -> None:
        self.array[rows[0]:rows[1]] = saved
        if self.image is not None:
            self.image.paste(Image.fromarray(saved), (0, rows[0]))


def stroke_holes(size: int, rng: np.random.Generator, target: tuple[float, float] = (0.1, 0.5),
                 max_attempts: int = 20) -> np.ndarray:
    """`stroke_mask` as a bool array (True = hole), without the float conversion.

    After each stroke only the rows it can reach are read back (the hole count is kept up to
    date from those rows before and after the stroke), and an overshooting stroke is undone by
    writing those rows back: the same masks, and the same draws from `rng`, as reading the whole
    image after every stroke.
    """
    lo, hi = target
    if not 0 <= lo <= hi < 1:
        raise InpaintBenchError(f"hole-ratio target {target} must satisfy 0 <= low <= high < 1")
    total = size * size
    best, best_gap = None, np.inf
    canvas = _Canvas(size)
    for attempt in range(max_attempts):
        if attempt:
            canvas.clear()
        filled, ratio, scale, misses = 0, 0.0, 1.0, 0
        while ratio < lo and misses < 8:
            width, points, (y0, y1) = _stroke_geometry(size, rng, scale)
            before = canvas.array[y0:y1].copy()
            canvas.stroke(width, points)
            now = filled - np.count_nonzero(before) + np.count_nonzero(canvas.array[y0:y1])
            new_ratio = now / total
            if new_ratio > hi:
                canvas.restore((y0, y1), before)
                scale *= 0.6
                misses += 1
            else:
                filled, ratio = now, new_ratio
        mask = canvas.array > 127
        gap = max(lo - ratio, ratio - hi, 0.0)
        if gap == 0.0:
            return mask
        if gap < best_gap:
            best, best_gap = mask, gap
    return best


def stroke_mask(size: int, rng: np.random.Generator, target: tuple[float, float] = (0.1, 0.5),
                max_attempts: int = 20) -> np.ndarray:
    """A mask whose hole ratio lies in [target[0], target[1]] (best effort: closest found)."""
    return stroke_holes(size, rng, target, max_attempts).astype(np.float32)


def training_holes(size: int, rng: np.random.Generator, ratio_range: tuple[float, float]) -> np.ndarray:
    """A random training mask as bool (True = hole): target ratio uniform in `ratio_range`, ±0.025."""
    r = rng.uniform(*ratio_range)
    return stroke_holes(size, rng, (max(0.0, r - 0.025), min(0.95, r + 0.025)))


def training_mask(size: int, rng: np.random.Generator, ratio_range: tuple[float, float]) -> np.ndarray:
    """A random mask for training: target ratio drawn uniformly from `ratio_range`, ±0.025."""
    return training_holes(size, rng, ratio_range).astype(np.float32)


def generate_maskset(name: str, spec: dict, out_dir: Path, size: int, seed: int) -> Path:
    """Write `count` masks whose target ratios are spread over spec['ratio_range'] + manifest.csv."""
    count = int(spec.get("count", 500))
    lo, hi = (float(v) for v in spec.get("ratio_range", [0.05, 0.65]))
    out_dir = Path(out_dir)
    rows = []
    started = time.perf_counter()
    for i in range(count):
        rng = np.random.default_rng(derive_seed(seed, "maskset", name, size, i))
        centre = lo + (hi - lo) * (i + 0.5) / count  # evenly spread targets: every bucket fills
        mask = stroke_mask(size, rng, (max(0.0, centre - 0.02), centre + 0.02))
        rel = f"masks/{i:05d}.png"
        save_mask(out_dir / rel, mask)
        rows.append({"id": f"{i:05d}", "path": rel, "hole_ratio": f"{hole_ratio(mask):.6f}", "source": "generated"})
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_FIELDS)
    print(f"mask set {name} at {size}px: {count} masks, {count / max(time.perf_counter() - started, 1e-9):.0f} masks/s")
    return out_dir / "manifest.csv"
