"""Built-in offline datasets: deterministic crops of the images bundled in scikit-image's wheel.

* ``photos`` (stand-in for a scenes dataset): astronaut, chelsea, coffee, rocket,
  hubble_deep_field, immunohistochemistry, retina, and both motorcycle stereo views.
* ``textures`` (stand-in for DTD): brick, grass, gravel (grey, repeated to RGB).

No crop leaks between splits: each source image is cut into disjoint vertical bands (train on
the left, then val, then test, by the fractions in params), and every crop of a split lies
inside that split's band. Within a band a crop has a random side between `size` and the band's
extent (log-uniform, so both close-ups and wide views occur) and is resized to `size`×`size`.
Every choice derives from the params seed. Labels (for a multi-label teacher) are the source
image's name and its group (e.g. ``photo``/``microscopy``/``astro`` or ``texture``).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import derive_seed
from ..errors import InpaintBenchError
from ..io import save_image, write_csv, write_text

PHOTOS = {
    "astronaut": "photo", "chelsea": "photo", "coffee": "photo", "rocket": "photo",
    "motorcycle_left": "photo", "motorcycle_right": "photo",
    "hubble_deep_field": "astro", "immunohistochemistry": "microscopy", "retina": "microscopy",
}
TEXTURES = {"brick": "texture", "grass": "texture", "gravel": "texture"}
GROUPS = {"photos": PHOTOS, "textures": TEXTURES}
SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = ["id", "path", "split", "source", "sha256", "labels"]


def load_source(name: str) -> np.ndarray:
    """uint8 HxWx3 array of one bundled image."""
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        arr = left if name.endswith("left") else right
    else:
        arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def _bands(width: int, fractions: dict[str, float]) -> dict[str, tuple[int, int]]:
    edges, x = {}, 0
    for split in SPLITS:
        w = int(round(width * fractions[split]))
        edges[split] = (x, min(width, x + w))
        x += w
    edges["test"] = (edges["test"][0], width)
    return edges


def _crop(img: np.ndarray, band: tuple[int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    h = img.shape[0]
    x0, x1 = band
    extent = min(x1 - x0, h)
    if extent < size:
        raise InpaintBenchError(f"a {x1 - x0}-px band is narrower than the {size}-px crop; lower 'size' or change split fractions")
    side = int(round(np.exp(rng.uniform(np.log(size), np.log(extent)))))
    side = min(max(side, size), extent)
    x = int(rng.integers(x0, x1 - side + 1))
    y = int(rng.integers(0, h - side + 1))
    patch = Image.fromarray(img[y:y + side, x:x + side])
    if side != size:
        patch = patch.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(patch, dtype=np.float32) / 255.0


def build_builtin(name: str, spec: dict, out_dir: Path, seed: int) -> Path:
    """Write out_dir/images/*.png, manifest.csv and labels.txt for a built-in dataset."""
    group = spec.get("images", "photos")
    if group not in GROUPS:
        raise InpaintBenchError(f"datasets.{name}.images: expected one of {', '.join(GROUPS)}, got {group!r}")
    sources = GROUPS[group]
    size = int(spec["size"])
    counts = {s: int(spec.get(f"n_{s}", d)) for s, d in zip(SPLITS, (256, 32, 64))}
    fractions = {s: float(spec.get("split_fractions", {}).get(s, d)) for s, d in zip(SPLITS, (0.64, 0.16, 0.20))}
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    images = {src: load_source(src) for src in sources}
    rows = []
    for split in SPLITS:
        rng = np.random.default_rng(derive_seed(seed, "builtin", name, split))
        names = sorted(sources)
        for i in range(counts[split]):
            src = names[i % len(names)]  # balanced over sources
            img = images[src]
            crop = _crop(img, _bands(img.shape[1], fractions)[split], size, rng)
            image_id = f"{split}-{i:05d}"
            rel = f"images/{image_id}.png"
            save_image(out_dir / rel, crop)
            digest = hashlib.sha256((out_dir / rel).read_bytes()).hexdigest()
            rows.append({"id": image_id, "path": rel, "split": split, "source": f"skimage.data.{src}",
                         "sha256": digest, "labels": f"{src};{sources[src]}"})
    labels = sorted({lab for src, grp in sources.items() for lab in (src, grp)})
    write_text(out_dir / "labels.txt", "\n".join(labels) + "\n")
    write_csv(out_dir / "skipped.csv", [], ["path", "reason"])
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_FIELDS)
    rate = len(rows) / max(time.perf_counter() - started, 1e-9)
    print(f"built-in dataset {name}: {len(rows)} images ({', '.join(f'{s} {counts[s]}' for s in SPLITS)}), {rate:.0f} images/s")
    return out_dir / "manifest.csv"
