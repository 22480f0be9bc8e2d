"""The trainer's input pipeline: uint8 stores shared through the page cache, one batch per step
drawn from the step's own RNG, produced by ``torch.utils.data`` worker processes.

* **Stores.** The training split of a prepared dataset (and, when training masks come from a
  mask set, that mask set at the experiment's size) is decoded once into a memory-mapped
  uint8 ``.npy`` array under ``data/cache/train/`` (not inside ``data/prepared``, which is a DVC
  output). The file name carries a hash of the manifest it was built from, so a re-prepared
  dataset gets a new store; it is written atomically, so jobs started side by side may both
  build it and readers never see a partial file. Every worker maps the same file: the pages are
  shared, an image costs ``size*size*3`` bytes once, not per process.
* **Batches.** :class:`StepBatches` ``[step]`` is exactly the batch that the original
  ``sample_batch`` drew for that step: ``rng = default_rng(derive_seed(seed, "batch", step))``,
  then the image indices, then the flips, then one mask per sample from the same generator. A
  batch therefore depends only on (seed, step), never on the worker that builds it or on
  what ran before, and a resumed run sees the same batches as an uninterrupted one.
* **Masks.** ``training.masks: generated`` draws free-form strokes (masks/generate.py) in the
  workers; ``training.masks: <mask set>`` draws masks from that mask set's files (those whose hole
  ratio lies in ``training.mask_ratio``), each under one of the eight flips/rotations of the
  square, both chosen by the step's generator (the word ``generated`` always means strokes, so
  a mask set of that name is not a training-mask source).
* **Loader.** :func:`make_loader` wraps the steps in a ``DataLoader`` (``batch_size=None``: one
  item is one step's batch) with ``num_workers`` processes, ``prefetch_factor`` batches each
  in flight, and pinned memory on CUDA; :func:`to_device` copies the uint8 batch (4x fewer bytes
  than float32) with ``non_blocking`` and converts it on the device.
"""
from __future__ import annotations

import hashlib
import os
from multiprocessing import get_all_start_methods
from pathlib import Path

import numpy as np
import torch

from .. import paths
from ..config import derive_seed
from ..errors import InpaintBenchError
from ..io import atomic_path, load_image, load_mask, read_csv
from ..masks.generate import training_mask

CACHE = paths.DATA / "cache" / "train"


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _decode_image(job: tuple[str, int]) -> np.ndarray:
    path, size = job
    img = load_image(path)
    if img.shape[:2] != (size, size):
        raise InpaintBenchError(f"{path} is not {size}x{size}; re-run prepare")
    return np.rint(img * 255.0).astype(np.uint8)


def _decode_mask(job: tuple[str, int]) -> np.ndarray:
    path, size = job
    return (load_mask(path, size) > 0.5).astype(np.uint8)


def _build_store(target: Path, files: list[Path], size: int, decode, shape_tail: tuple, workers: int) -> None:
    """Decode `files` into a uint8 .npy at `target`, atomically (chunks decoded in parallel)."""
    from ..data.prepare import run_parallel

    with atomic_path(target, suffix=".npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), *shape_tail))
        chunk = 512
        for start in range(0, len(files), chunk):
            jobs = [(str(p), size) for p in files[start:start + chunk]]
            arr[start:start + len(jobs)] = np.stack(run_parallel(decode, jobs, workers))
        arr.flush()
        del arr


def open_store(kind: str, name: str, manifest: Path, files: list[Path], size: int, workers: int = 1) -> np.ndarray:
    """The uint8 store of `files` (read-only memmap), built first if it does not exist yet."""
    key = hashlib.sha256(f"{_digest(manifest)}|{size}|{len(files)}".encode()).hexdigest()[:16]
    target = CACHE / f"{kind}-{name}-{size}-{key}.npy"
    tail = (size, size, 3) if kind == "images" else (size, size)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f"{kind}-{name}-{size}-*.npy"):  # an older manifest's store
            stale.unlink(missing_ok=True)
        _build_store(target, files, size, _decode_image if kind == "images" else _decode_mask, tail, workers)
    arr = np.load(target, mmap_mode="r")
    if arr.shape != (len(files), *tail) or arr.dtype != np.uint8:
        raise InpaintBenchError(f"{target} has shape {arr.shape}, expected {(len(files), *tail)}; delete it and run again")
    return arr


class _Mapped:
    """A read-only memmap that pickles as its path (a spawned worker maps the file itself)."""

    def __init__(self, path: str):
        self.path = path
        self.array = np.load(path, mmap_mode="r")

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])


def _mapped(arr: np.ndarray) -> _Mapped:
    return _Mapped(str(arr.filename))


def train_images(manifest: Path, size: int, split: str = "train", workers: int = 1) -> np.ndarray:
    """uint8 (N, size, size, 3) of a prepared split, in the order of the sorted image ids."""
    manifest = Path(manifest)
    rows = [r for r in read_csv(manifest) if r["split"] == split]
    if not rows:
        raise InpaintBenchError(f"{manifest} has no {split!r} images to train on")
    rows = sorted(rows, key=lambda r: r["id"])
    files = [manifest.parent / r["path"] for r in rows]
    from ..integrity import verify_sha256

    for f, r in zip(files, rows):  # the images must be the ones the manifest promises (issue 15)
        verify_sha256(f, r.get("sha256", ""), str(manifest))
    return open_store("images", manifest.parent.name, manifest, files, size, workers)


def maskset_bank(maskset: str, size: int, ratio_range, workers: int = 1) -> np.ndarray:
    """uint8 (M, size, size) {0,1} of the masks of a mask set whose hole ratio lies in
    [ratio_range[0], ratio_range[1]] (manifest order)."""
    manifest = paths.maskset_manifest(maskset, size)
    if not manifest.exists():
        raise InpaintBenchError(f"training.masks: {maskset!r} needs its masks at {size}px ({manifest}); "
                                f"run `inpaintbench masks {maskset} --size {size}` (or the workflow) first")
    lo, hi = (float(v) for v in ratio_range)
    rows = [r for r in read_csv(manifest) if lo <= float(r["hole_ratio"]) <= hi]
    if not rows:
        raise InpaintBenchError(f"mask set {maskset} has no mask with a hole ratio in [{lo}, {hi}] (training.mask_ratio)")
    files = [manifest.parent / r["path"] for r in rows]
    tag = f"{maskset}-r{lo:g}-{hi:g}"
    return open_store("masks", tag, manifest, files, size, workers)


def _dihedral(mask: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square: k % 4 quarter turns, transposed when k >= 4."""
    m = np.rot90(mask, k % 4)
    return m.T if k >= 4 else m


class StepBatches(torch.utils.data.Dataset):
    """``self[step]`` = (uint8 images (B,H,W,3) unflipped, uint8 masks (B,H,W) 1 = hole, bool
    horizontal flips (B,)) of that step; `to_device` applies the flips (a strided byte copy is
    the slowest part of a batch on a CPU, a flip of the float batch on the device is free).

    The draws and their order are those of the original ``sample_batch``: indices, flips, then
    the masks, all from ``default_rng(derive_seed(seed, "batch", step))``.
    """

    def __init__(self, images: np.ndarray, seed: int, batch_size: int, ratio_range, masks: np.ndarray | None = None):
        self._images = _mapped(images) if isinstance(images, np.memmap) else images
        self._masks = _mapped(masks) if isinstance(masks, np.memmap) else masks
        self.n = len(images)
        self.size = int(images.shape[1])
        self.seed, self.batch_size, self.ratio_range = int(seed), int(batch_size), tuple(float(r) for r in ratio_range)

    @staticmethod
    def _array(a):
        return a.array if isinstance(a, _Mapped) else a

    def __len__(self) -> int:  # steps are unbounded; the sampler says which ones
        return 2**62

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = self._array(self._images)
        rng = np.random.default_rng(derive_seed(self.seed, "batch", int(step)))
        idx = rng.choice(self.n, self.batch_size, replace=self.n < self.batch_size)
        flips = rng.random(self.batch_size) < 0.5
        out = np.asarray(images[idx])  # one gather (a copy, also from the memmap); flipped in to_device
        masks = np.empty((self.batch_size, self.size, self.size), np.uint8)
        if self._masks is None:
            for b in range(self.batch_size):
                masks[b] = training_mask(self.size, rng, self.ratio_range) > 0.5
        else:
            bank = self._array(self._masks)
            for b in range(self.batch_size):
                j, k = int(rng.integers(len(bank))), int(rng.integers(8))
                masks[b] = _dihedral(bank[j], k)
        return torch.from_numpy(out), torch.from_numpy(masks), torch.from_numpy(flips)


def make_loader(batches: StepBatches, start: int, stop: int, num_workers: int, pin_memory: bool,
                prefetch_factor: int = 4) -> torch.utils.data.DataLoader:
    """Steps ``start .. stop-1`` in order; worker processes when ``num_workers > 0``."""
    kwargs = {}
    if num_workers > 0:
        kwargs = {"prefetch_factor": prefetch_factor,
                  "multiprocessing_context": "fork" if "fork" in get_all_start_methods() else "spawn"}
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, stop), num_workers=num_workers,
                                       pin_memory=pin_memory, **kwargs)


def to_device(images: torch.Tensor, masks: torch.Tensor, flips: torch.Tensor, device: str, channels_last: bool = False):
    """uint8 (B,H,W,3), (B,H,W), flips (B,) -> float32 (B,3,H,W) in [0,1] (flipped where asked)
    and (B,1,H,W) on `device`.

    The values equal ``evaluate.to_tensor`` of the float32 arrays (``u8 / 255`` is one correctly
    rounded division either way), and so does the memory layout: the image is a permuted view of
    an NHWC buffer, as ``to_tensor`` makes it.
    """
    img = images.to(device, non_blocking=True).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    flips = flips.to(device, non_blocking=True)
    img = torch.where(flips[:, None, None, None], img.flip(3), img)  # keeps the NHWC-view strides
    msk = masks.to(device, non_blocking=True)[:, None].to(torch.float32)
    if channels_last:
        img, msk = img.contiguous(memory_format=torch.channels_last), msk.contiguous(memory_format=torch.channels_last)
    return img, msk


def default_workers(num_workers, num_threads: int) -> int:
    """``training.num_workers``: an integer, or ``auto`` = the job's cores minus the torch threads.
    The job's cores are what Snakemake gives the rule (INPAINTBENCH_THREADS, set by the train rule
    from ``{threads}``), else the cores this process may use."""
    if num_workers not in (None, "auto"):
        n = int(num_workers)
        if n < 0:
            raise InpaintBenchError(f"training.num_workers must be >= 0 or 'auto', got {num_workers}")
        return n
    env = os.environ.get("INPAINTBENCH_THREADS")
    cores = int(env) if env and env.isdigit() else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, cores - max(1, int(num_threads or 1)))
