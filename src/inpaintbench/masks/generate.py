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
from PIL import Image, ImageDraw

from ..config import derive_seed
from ..errors import InpaintBenchError
from ..io import save_mask, write_csv

MANIFEST_FIELDS = ["id", "path", "hole_ratio", "source"]


def hole_ratio(mask: np.ndarray) -> float:
    return float((np.asarray(mask) > 0.5).mean())


def _stroke(draw: ImageDraw.ImageDraw, size: int, rng: np.random.Generator, width_scale: float) -> None:
    max_w = max(2, int(size / 7 * width_scale))
    width = int(rng.integers(max(1, max_w // 3), max_w + 1))
    x, y = rng.uniform(0, size, 2)
    for _ in range(int(rng.integers(2, 7))):
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(size / 10, size / 3)
        # min/max = np.clip on scalars (same values), without its per-call overhead
        nx = float(min(max(x + length * np.cos(angle), 0), size - 1))
        ny = float(min(max(y + length * np.sin(angle), 0), size - 1))
        draw.line([(x, y), (nx, ny)], fill=255, width=width)
        r = width / 2
        draw.ellipse([nx - r, ny - r, nx + r, ny + r], fill=255)
        x, y = nx, ny


def stroke_mask(size: int, rng: np.random.Generator, target: tuple[float, float] = (0.1, 0.5),
                max_attempts: int = 20) -> np.ndarray:
    """A mask whose hole ratio lies in [target[0], target[1]] (best effort: closest found)."""
    lo, hi = target
    if not 0 <= lo <= hi < 1:
        raise InpaintBenchError(f"hole-ratio target {target} must satisfy 0 <= low <= high < 1")
    best, best_gap = None, np.inf
    for _ in range(max_attempts):
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        ratio, scale, misses = 0.0, 1.0, 0
        while ratio < lo and misses < 8:
            before = img.copy()
            _stroke(draw, size, rng, scale)
            new_ratio = np.count_nonzero(np.asarray(img) > 127) / (size * size)  # = (... > 127).mean(), faster
            if new_ratio > hi:
                img, draw = before, ImageDraw.Draw(before)
                scale *= 0.6
                misses += 1
            else:
                ratio = new_ratio
        mask = (np.asarray(img) > 127).astype(np.float32)
        gap = max(lo - ratio, ratio - hi, 0.0)
        if gap == 0.0:
            return mask
        if gap < best_gap:
            best, best_gap = mask, gap
    return best


def training_mask(size: int, rng: np.random.Generator, ratio_range: tuple[float, float]) -> np.ndarray:
    """A random mask for training: target ratio drawn uniformly from `ratio_range`, ±0.025."""
    r = rng.uniform(*ratio_range)
    return stroke_mask(size, rng, (max(0.0, r - 0.025), min(0.95, r + 0.025)))


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
