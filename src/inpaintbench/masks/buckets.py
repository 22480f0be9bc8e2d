"""Mask-ratio buckets and the fixed image↔mask pairs every method is evaluated on.

A pair file (data/pairs/<experiment>/<dataset>/<split>.csv) lists, per bucket, which image is
masked by which mask; it is written once and every method reads the same file, so all methods
see exactly the same inputs. Choices derive from the params seed, the experiment, the dataset,
the split and the bucket label, so adding a bucket does not reshuffle the others.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Bucket, derive_seed
from ..errors import InpaintBenchError
from ..io import read_csv, write_csv

# image_sha256: the prepared image's hash from its manifest, checked where the image is read
PAIR_FIELDS = ["pair_id", "bucket", "image_id", "image_path", "mask_id", "mask_path", "hole_ratio", "image_sha256"]


def bucket_of(ratio: float, buckets: list[Bucket]) -> str | None:
    for b in buckets:
        if b.contains(ratio):
            return b.label
    return None


def make_pairs(*, image_manifest: Path, mask_manifest: Path, buckets: list[Bucket], split: str,
               per_bucket: int, seed_parts: tuple, out_csv: Path, seed: int) -> Path:
    images = [r for r in read_csv(image_manifest) if r["split"] == split]
    if not images:
        raise InpaintBenchError(f"{image_manifest} has no images in split {split!r}")
    images.sort(key=lambda r: r["id"])
    masks = read_csv(mask_manifest)
    img_root, mask_root = Path(image_manifest).parent, Path(mask_manifest).parent
    rows = []
    for b in buckets:
        candidates = sorted((m for m in masks if b.contains(float(m["hole_ratio"]))), key=lambda m: m["id"])
        if not candidates:
            raise InpaintBenchError(
                f"mask set {mask_root} has no mask with hole ratio in {b.label}; generate more masks "
                f"or widen the mask set's ratio_range")
        rng = np.random.default_rng(derive_seed(seed, "pairs", *seed_parts, split, b.label))
        mask_idx = rng.choice(len(candidates), per_bucket, replace=len(candidates) < per_bucket)
        img_idx = rng.choice(len(images), per_bucket, replace=len(images) < per_bucket)
        for k, (mi, ii) in enumerate(zip(mask_idx, img_idx)):
            m, im = candidates[mi], images[ii]
            rows.append({"pair_id": f"{len(rows):05d}", "bucket": b.label, "image_id": im["id"],
                         "image_path": str(img_root / im["path"]), "mask_id": m["id"],
                         "mask_path": str(mask_root / m["path"]), "hole_ratio": m["hole_ratio"],
                         "image_sha256": im.get("sha256", "")})
    write_csv(out_csv, rows, PAIR_FIELDS)
    return Path(out_csv)
