"""Prepare a fetched real dataset: choose the split each paper uses, resize/crop every image to
the experiment's size in parallel worker processes, and write the manifest the next steps read.

Output (``out_dir``): ``images/<id>.png`` (RGB, size x size), ``manifest.csv``
(``id,path,split,source,sha256,labels``; `source` is the raw file relative to ``raw_root``,
`sha256` the hash of the written PNG), ``labels.txt`` (the label vocabulary),
``skipped.csv`` (``path,reason`` for each unreadable file) and ``prepare.json`` (counts,
images per second, the spec and seed).

Split selection (params.yaml ``datasets.<name>``), all seeded by `seed`:

* ``split: official`` (default where one exists): CelebA ``list_eval_partition.txt``
  (0/1/2 -> train/val/test); Places365 train list -> train and the official val set -> test
  (the test set has no public labels; inpainting papers evaluate on val); DTD fold
  ``fold`` (1..10, default 1) of ``labels/{train,val,test}<fold>.txt``; Paris StreetView
  ``paris_train_original`` -> train, ``paris_eval_gt`` -> test. ``split: test`` puts every
  image in test (Urban100's default: it has no training set).
* ``subset: {n, holdout, val: 0.0, pool: all}``: CCSA (Sec. 4.2): "30000 pairs of training data
  are obtained after preprocessing, of which 10% are used as the test data set". `n` images are
  drawn at random from `pool` (``all`` images, or one official split), ``round(n*holdout)`` of
  them become test, ``round(n*val)`` val, the rest train. The paper does not say which CelebA
  images; drawing from all 202,599 is our choice.
* ``test_per_category: k`` (Places): SAHN (Sec. 4.1) pools the images of the chosen
  categories and takes k per category at random as the test set; the rest is train.
* ``max_per_split: {test: 12000}``: a seeded random subsample of a split after splitting
  (SAHN: "12,000 images were randomly selected from the original test set").
* ``categories`` (Places): a list of names (``airfield`` or ``/a/airfield``) or an integer
  k = k categories drawn at random (SAHN: "five complete categories").
* ``crop``: ``center`` (default: resize the shorter side to `size`, then centre crop),
  ``random`` (same, seeded random crop), ``resize`` (squash to size x size).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..config import derive_seed
from ..errors import InpaintBenchError
from ..io import atomic_path, load_image, write_csv, write_json, write_text
from .fetch import COMPLETE, choose_categories, short_category, user_folder_images
from .sources import get_source

MANIFEST_FIELDS = ["id", "path", "split", "source", "sha256", "labels"]
SKIPPED_FIELDS = ["path", "reason"]
SPLITS = ("train", "val", "test")
#: zlib level for the written PNGs: level 1 encodes a 256x256 photo ~2.5x faster than the
#: default 6 (11 vs 28 ms here, PNG encoding dominates the per-image cost) for ~6% more bytes.
PNG_LEVEL = 1


@dataclass
class Item:
    """One raw image before selection."""

    id: str
    path: Path  # absolute
    source: str  # relative to raw_root (or to the user folder's parent for Paris)
    split: str | None  # official split, if the dataset has one
    labels: list[str] = field(default_factory=list)
    group: str = ""  # stratum for per-category holdout


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


# --------------------------------------------------------------------------------------------
# parallel map shared with masks/nvidia.py
# --------------------------------------------------------------------------------------------
def run_parallel(func: Callable, items: Sequence, workers: int, chunksize: int = 32) -> list:
    """`[func(x) for x in items]` in `workers` processes (in-process when workers <= 1).
    Results keep the order of `items`; `func` must be a module-level function."""
    if workers <= 1 or len(items) < 2:
        return [func(x) for x in items]
    chunk = max(1, min(chunksize, len(items) // (workers * 4) or 1))
    # fork where the platform has it: workers start in milliseconds and a caller's script
    # needs no `if __name__ == "__main__"` guard; the workers only run PIL/numpy code.
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context(method)) as pool:
        return list(pool.map(func, items, chunksize=chunk))


# --------------------------------------------------------------------------------------------
# per-image work (runs in the workers)
# --------------------------------------------------------------------------------------------
def _fit(img: Image.Image, size: int, crop: str, crop_seed: int) -> Image.Image:
    if crop == "resize":
        return img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if crop == "random":
        rng = np.random.default_rng(crop_seed)
        x, y = int(rng.integers(0, nw - size + 1)), int(rng.integers(0, nh - size + 1))
    else:
        x, y = (nw - size) // 2, (nh - size) // 2
    return img.crop((x, y, x + size, y + size))


def _process_image(job: tuple) -> tuple[str, str | None, str | None]:
    """(id, sha256 or None, reason if skipped)."""
    image_id, src, dst, size, crop, crop_seed = job
    try:
        arr = load_image(src)
    except InpaintBenchError as exc:
        return image_id, None, str(exc)
    img = Image.fromarray(np.rint(arr * 255.0).astype(np.uint8), "RGB")
    out = _fit(img, size, crop, crop_seed)
    with atomic_path(dst, suffix=".png") as tmp:
        out.save(tmp, format="PNG", compress_level=PNG_LEVEL)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return image_id, digest, None


# --------------------------------------------------------------------------------------------
# listing each dataset's raw images (real layouts, see sources.py)
# --------------------------------------------------------------------------------------------
def _require_fetched(source: str, raw_root: Path) -> Path:
    root = raw_root / source
    if not (root / COMPLETE).exists():
        raise InpaintBenchError(
            f"{source} is not fetched yet ({root / COMPLETE} is missing); run "
            f"`inpaintbench fetch {source}` first."
        )
    return root


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise InpaintBenchError(f"{path} is missing; the fetched data is incomplete. Run the fetch again with --force.")
    return [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]


def _list_celeba(raw_root: Path, spec: dict, source: str) -> tuple[list[Item], list[str]]:
    root = _require_fetched(source, raw_root)
    lay = get_source(source).layout
    split_of = {"0": "train", "1": "val", "2": "test"}
    partition = {}
    for line in _read_lines(root / lay["partition"]):
        name, code = line.split()[:2]
        partition[name] = split_of.get(code)
    attr_lines = _read_lines(root / lay["attributes"])
    attr_names = attr_lines[1].split()
    attrs = {}
    for line in attr_lines[2:]:
        parts = line.split()
        attrs[parts[0]] = [a for a, v in zip(attr_names, parts[1:]) if v == "1"]
    img_dir = root / lay["images"]
    items = []
    for name in sorted(partition):
        items.append(Item(id=Path(name).stem, path=img_dir / name,
                          source=f"{source}/{lay['images']}/{name}", split=partition[name],
                          labels=attrs.get(name, [])))
    return items, attr_names


def _category_name(raw: str) -> str:
    # "/a/apartment_building/outdoor" -> "apartment_building/outdoor"
    return short_category(raw)


def _choose_categories(all_cats: list[str], wanted, seed: int) -> list[str]:
    # the same draw as fetch's (so fetch extracts exactly the categories read here)
    return choose_categories(all_cats, wanted, seed)


def _list_places(raw_root: Path, spec: dict, source: str, seed: int) -> tuple[list[Item], list[str]]:
    root = _require_fetched(source, raw_root)
    lay = get_source(source).layout
    cat_lines = _read_lines(root / lay["categories"])
    index_to_cat = {}
    for line in cat_lines:
        raw, idx = line.rsplit(maxsplit=1)
        index_to_cat[idx] = _category_name(raw)
    all_cats = [index_to_cat[k] for k in sorted(index_to_cat, key=int)]
    chosen = _choose_categories(all_cats, spec.get("categories"), seed)
    keep = set(chosen)
    extracted = json.loads((root / COMPLETE).read_text(encoding="utf-8")).get("categories")
    if extracted is not None and not keep <= set(extracted):
        missing = sorted(keep - set(extracted))
        raise InpaintBenchError(
            f"{source} was fetched with only the categories {', '.join(extracted)}; "
            f"{', '.join(missing)} were not extracted. Run `inpaintbench fetch {source} "
            f"--categories {','.join(sorted(keep))}` (the archive is kept, nothing is downloaded again)."
        )
    items = []
    train_list = root / lay["train_list"]
    if (root / lay["train_images"]).exists() and train_list.exists():
        for line in _read_lines(train_list):
            rel, idx = line.rsplit(maxsplit=1)
            cat = index_to_cat[idx]
            if cat not in keep:
                continue
            rel = rel.lstrip("/")
            items.append(Item(id=_safe_id(f"{cat}-{Path(rel).stem}"), path=root / lay["train_images"] / rel,
                              source=f"{source}/{lay['train_images']}/{rel}", split="train",
                              labels=[cat], group=cat))
    for line in _read_lines(root / lay["val_list"]):
        name, idx = line.rsplit(maxsplit=1)
        cat = index_to_cat[idx]
        if cat not in keep:
            continue
        items.append(Item(id=Path(name).stem, path=root / lay["val_images"] / name,
                          source=f"{source}/{lay['val_images']}/{name}", split="test",
                          labels=[cat], group=cat))
    return items, chosen


def _list_dtd(raw_root: Path, spec: dict, source: str) -> tuple[list[Item], list[str]]:
    root = _require_fetched(source, raw_root)
    lay = get_source(source).layout
    fold = int(spec.get("fold", 1))
    if not 1 <= fold <= 10:
        raise InpaintBenchError(f"fold: DTD has folds 1..10, got {fold}.")
    split_of = {}
    for split in SPLITS:
        for rel in _read_lines(root / lay["labels"] / f"{split}{fold}.txt"):
            split_of[rel] = split
    img_dir = root / lay["images"]
    classes = sorted(p.name for p in img_dir.iterdir() if p.is_dir())
    items = []
    for cls in classes:
        for p in sorted((img_dir / cls).iterdir()):
            if p.name.startswith(".") or not p.is_file():
                continue
            rel = f"{cls}/{p.name}"
            items.append(Item(id=_safe_id(p.stem), path=p, source=f"{source}/{lay['images']}/{rel}",
                              split=split_of.get(rel), labels=[cls], group=cls))
    return items, classes


def _list_urban100(raw_root: Path, spec: dict, source: str) -> tuple[list[Item], list[str]]:
    root = _require_fetched(source, raw_root)
    lay = get_source(source).layout
    img_dir = root / lay["images"]
    items = [Item(id=_safe_id(p.stem), path=p, source=f"{source}/{lay['images']}/{p.name}", split="test")
             for p in sorted(img_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    return items, []


def _list_paris(raw_root: Path, spec: dict, source: str) -> tuple[list[Item], list[str]]:
    src = get_source(source)
    folder = Path(spec.get("folder") or src.user_folder)
    found = user_folder_images(src, folder)  # clear error when the folder is empty
    items = []
    for split, files in found.items():
        for p in files:
            rel = p.relative_to(folder).as_posix()
            items.append(Item(id=_safe_id(f"{split}-{p.stem}"), path=p,
                              source=f"{folder.name}/{rel}", split=split))
    return items, []


# --------------------------------------------------------------------------------------------
# split selection
# --------------------------------------------------------------------------------------------
def _shuffled(items: list[Item], seed: int, *tag) -> list[Item]:
    items = sorted(items, key=lambda it: it.id)
    order = np.random.default_rng(derive_seed(seed, *tag)).permutation(len(items))
    return [items[i] for i in order]


def select_splits(items: list[Item], spec: dict, *, seed: int, dataset: str,
                  default_split: str = "official") -> list[Item]:
    """Assign each kept item its split (train/val/test) following `spec`; drop the others."""
    items = sorted(items, key=lambda it: it.id)
    if "subset" in spec:
        sub = spec["subset"]
        n = int(sub["n"])
        holdout = float(sub.get("holdout", 0.1))
        val = float(sub.get("val", 0.0))
        pool_name = sub.get("pool", "all")
        pool = items if pool_name == "all" else [it for it in items if it.split == pool_name]
        if not 0 < n <= len(pool):
            raise InpaintBenchError(
                f"datasets.{dataset}.subset.n = {n}, but the pool ({pool_name}) has {len(pool)} "
                f"images; lower n."
            )
        if not (0 <= holdout < 1 and 0 <= val < 1 and holdout + val < 1):
            raise InpaintBenchError(f"datasets.{dataset}.subset: holdout and val must be fractions summing below 1.")
        shuffled = _shuffled(pool, seed, "subset", dataset)
        chosen = shuffled[:n]
        n_test, n_val = round(n * holdout), round(n * val)
        for i, it in enumerate(chosen):
            it.split = "test" if i < n_test else ("val" if i < n_test + n_val else "train")
        if n_val == 0 and spec.get("val_from_train", None) != 0 and len(shuffled) > n:
            # validation images from the pool's images outside the subset (neither its train nor
            # its test), so the training set keeps the paper's size (CCSA: 27,000 of 30,000)
            n_train = n - n_test
            k = spec.get("val_from_train")
            k = min(200, max(1, n_train // 10)) if k is None else int(k)
            extra = shuffled[n:n + k]
            for it in extra:
                it.split = "val"
            chosen = chosen + extra
        selected = chosen
    elif "test_per_category" in spec:
        k = int(spec["test_per_category"])
        selected = []
        groups: dict[str, list[Item]] = {}
        for it in items:
            groups.setdefault(it.group, []).append(it)
        for g in sorted(groups):
            members = _shuffled(groups[g], seed, "per-category", dataset, g)
            if len(members) <= k:
                raise InpaintBenchError(
                    f"datasets.{dataset}.test_per_category = {k}, but category {g!r} has only "
                    f"{len(members)} images; lower it."
                )
            for i, it in enumerate(members):
                it.split = "test" if i < k else "train"
            selected.extend(members)
    else:
        mode = spec.get("split", default_split)
        if mode == "test":
            for it in items:
                it.split = "test"
            selected = list(items)
        elif mode == "official":
            selected = [it for it in items if it.split in SPLITS]
        else:
            raise InpaintBenchError(
                f"datasets.{dataset}.split: expected 'official' or 'test' (or give 'subset' / "
                f"'test_per_category'), got {mode!r}."
            )
    carve_validation(selected, spec, seed=seed, dataset=dataset)
    caps = spec.get("max_per_split") or {}
    for split, cap in caps.items():
        if split not in SPLITS:
            raise InpaintBenchError(f"datasets.{dataset}.max_per_split: unknown split {split!r}.")
        members = [it for it in selected if it.split == split]
        if len(members) > int(cap):
            drop = {it.id for it in _shuffled(members, seed, "cap", dataset, split)[int(cap):]}
            selected = [it for it in selected if it.id not in drop]
    return sorted(selected, key=lambda it: it.id)


def carve_validation(selected: list[Item], spec: dict, *, seed: int, dataset: str) -> int:
    """Where the chosen split has no validation images (the CCSA CelebA subset, Paris StreetView,
    Places365 with a per-category holdout), move ``val_from_train`` seeded random training images
    to val (default min(200, 10 % of train), at least 1): validation curves never use test images.
    Returns how many were moved."""
    train = [it for it in selected if it.split == "train"]
    if any(it.split == "val" for it in selected) or not train:
        return 0
    k = spec.get("val_from_train")
    k = min(200, max(1, len(train) // 10)) if k is None else int(k)
    if k >= len(train):
        raise InpaintBenchError(f"datasets.{dataset}.val_from_train = {k}, but only {len(train)} training images; lower it.")
    for it in _shuffled(train, seed, "val-from-train", dataset)[:k]:
        it.split = "val"
    return k


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
_LISTERS = {
    "celeba": lambda raw, spec, src, seed: _list_celeba(raw, spec, src),
    "places365": _list_places,
    "places365-val": _list_places,
    "dtd": lambda raw, spec, src, seed: _list_dtd(raw, spec, src),
    "urban100": lambda raw, spec, src, seed: _list_urban100(raw, spec, src),
    "paris-streetview": lambda raw, spec, src, seed: _list_paris(raw, spec, src),
}
_DEFAULT_SPLIT = {"urban100": "test"}


def prepare_real(dataset: str, spec: dict, raw_root: str | os.PathLike, out_dir: str | os.PathLike,
                 *, seed: int, workers: int = 2) -> Path:
    """Prepare one real dataset (see the module doc for `spec`); returns the manifest path."""
    source = spec.get("source")
    if source not in _LISTERS:
        raise InpaintBenchError(
            f"datasets.{dataset}.source: {source!r} is not a real dataset; expected one of "
            f"{', '.join(sorted(_LISTERS))}."
        )
    size = int(spec["size"])
    crop = spec.get("crop", "center")
    if crop not in ("center", "random", "resize"):
        raise InpaintBenchError(f"datasets.{dataset}.crop: expected center, random or resize, got {crop!r}.")
    raw_root, out_dir = Path(raw_root), Path(out_dir)
    started = time.perf_counter()
    items, label_names = _LISTERS[source](raw_root, spec, source, seed)
    if not items:
        raise InpaintBenchError(f"{source}: no images found under {raw_root / source}; fetch it again.")
    selected = select_splits(items, spec, seed=seed, dataset=dataset,
                             default_split=_DEFAULT_SPLIT.get(source, "official"))
    if len({it.id for it in selected}) != len(selected):
        raise InpaintBenchError(f"{dataset}: two images map to the same id; report this as a bug.")

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / ".images.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    jobs = [(it.id, str(it.path), str(staging / f"{it.id}.png"), size, crop,
             derive_seed(seed, "crop", dataset, it.id)) for it in selected]
    results = run_parallel(_process_image, jobs, workers)

    rows, skipped = [], []
    for it, (image_id, digest, reason) in zip(selected, results):
        if digest is None:
            skipped.append({"path": it.source, "reason": reason})
            continue
        rows.append({"id": image_id, "path": f"images/{image_id}.png", "split": it.split,
                     "source": it.source, "sha256": digest, "labels": ";".join(it.labels)})
    final = out_dir / "images"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    elapsed = max(time.perf_counter() - started, 1e-9)
    rate = len(results) / elapsed
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    write_text(out_dir / "labels.txt", "".join(f"{name}\n" for name in label_names))
    write_csv(out_dir / "skipped.csv", skipped, SKIPPED_FIELDS)
    write_json(out_dir / "prepare.json", {
        "dataset": dataset, "spec": spec, "seed": seed, "workers": workers, "counts": counts,
        "skipped": len(skipped), "seconds": round(elapsed, 3), "images_per_second": round(rate, 2),
    })
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_FIELDS)
    msg = (f"prepared {dataset} ({source}): {len(rows)} images "
           f"(train {counts['train']}, val {counts['val']}, test {counts['test']}) at {size}x{size}, "
           f"{rate:.1f} images/s with {workers} worker(s)")
    if skipped:
        msg += f"; SKIPPED {len(skipped)} unreadable file(s), listed in {out_dir / 'skipped.csv'}"
    print(msg, file=sys.stderr)
    return out_dir / "manifest.csv"
