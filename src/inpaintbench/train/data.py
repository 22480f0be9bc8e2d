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
  in flight, and pinned memory on CUDA. A worker builds its batch (gather, flips, masks) in one
  flat uint8 buffer in shared memory: on the CPU a slot of a ring made before the workers
  start (only the slot number travels), with pinned memory a segment of its own that the
  loader's pinning thread copies. :func:`to_device` copies the uint8 batch (4x fewer bytes than
  float32) with ``non_blocking`` and converts it on the device in one pass.
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
from ..masks.generate import training_holes

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
    """``self[step]`` = (uint8 images (B,H,W,3), flipped where the step says, uint8 masks (B,H,W)
    1 = hole) of that step.

    The draws and their order are those of the original ``sample_batch``: indices, flips, then
    the masks, all from ``default_rng(derive_seed(seed, "batch", step))``.

    :meth:`pack_into` builds the same batch into one flat uint8 buffer (images, then masks): a
    ring slot (`_RingSteps`) or, :meth:`packed`, a new buffer (in shared memory in a worker: one
    segment written once, not three tensors each copied into a segment of its own and sent with
    its own file descriptor, which cost the main process ~3x the CPU per batch here);
    :meth:`unpack` views it as the pair again.
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
        return self.unpack(self.packed(step))

    @property
    def packed_bytes(self) -> int:
        return self.batch_size * self.size * self.size * 4

    def unpack(self, buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B,H,W,3), masks (B,H,W)) views of a :meth:`packed` buffer."""
        b, s = self.batch_size, self.size
        n = b * s * s * 3
        return buf[:n].view(b, s, s, 3), buf[n:].view(b, s, s)

    def packed(self, step: int, shared: bool = False) -> torch.Tensor:
        """Step `step`'s batch as one flat uint8 tensor (in shared memory when `shared`)."""
        if shared:  # as torch's default_collate does in a worker: no copy when the batch is sent
            buf = torch.empty(0, dtype=torch.uint8)
            buf.set_(buf.untyped_storage()._new_shared(self.packed_bytes))
        else:
            buf = torch.empty(self.packed_bytes, dtype=torch.uint8)
        return self.pack_into(step, buf)

    def pack_into(self, step: int, buf: torch.Tensor) -> torch.Tensor:
        """Build step `step`'s batch into `buf` (flat uint8, :attr:`packed_bytes` long)."""
        images, masks = self.unpack(buf)
        src = self._array(self._images)
        rng = np.random.default_rng(derive_seed(self.seed, "batch", int(step)))
        idx = rng.choice(self.n, self.batch_size, replace=self.n < self.batch_size)
        flips = rng.random(self.batch_size) < 0.5
        np.take(src, idx, axis=0, out=images.numpy())  # one gather, also from the memmap
        for b in np.flatnonzero(flips).tolist():  # torch's flip: ~10x numpy's strided 3-byte copy
            images[b] = images[b].flip(1)
        out = masks.numpy()
        if self._masks is None:
            for b in range(self.batch_size):
                out[b] = training_holes(self.size, rng, self.ratio_range)
        else:
            bank = self._array(self._masks)
            for b in range(self.batch_size):
                j, k = int(rng.integers(len(bank))), int(rng.integers(8))
                out[b] = _dihedral(bank[j], k)
        return buf


class _PackedSteps(torch.utils.data.Dataset):
    """``[step]`` = :meth:`StepBatches.packed`, in shared memory in a worker (sent as one segment)."""

    def __init__(self, batches: StepBatches):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, step: int) -> torch.Tensor:
        return self.batches.packed(step, shared=torch.utils.data.get_worker_info() is not None)


class _RingSteps(torch.utils.data.Dataset):
    """``[step]`` builds the batch into slot ``step % slots`` of a ring of packed batches in
    shared memory, made before the workers start (they inherit it, or map it when spawned), and
    returns only (slot, step): no segment to make, send and map per batch.

    A slot is written again only for the step `slots` later. The ``DataLoader`` dispatches step
    ``s + prefetch_factor * num_workers`` when it hands out step ``s`` (never more in flight),
    so with ``slots = prefetch_factor * num_workers + 2`` the batch handed out last and the one
    before it are never being written; :class:`Loader` checks each slot's step on arrival.
    """

    def __init__(self, batches: StepBatches, slots: int):
        self.batches, self.slots = batches, int(slots)
        self.ring = torch.empty((self.slots, batches.packed_bytes), dtype=torch.uint8).share_memory_()
        self.steps = torch.full((self.slots,), -1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, step: int) -> tuple[int, int]:
        slot = int(step) % self.slots
        self.batches.pack_into(step, self.ring[slot])
        self.steps[slot] = int(step)
        return slot, int(step)


class Loader:
    """Iterates (uint8 images, uint8 masks) of the steps ``start .. stop-1`` in order, built by a
    ``DataLoader`` (``batch_size=None``: one item is one step's batch).

    With a ring (no pinned memory: CPU training), a batch's tensors are views of the ring:
    valid until the next-but-one batch is taken; the trainer converts each batch at once
    (`to_device`), a caller that keeps one longer clones it."""

    def __init__(self, batches: StepBatches, loader: torch.utils.data.DataLoader, ring: _RingSteps | None = None):
        self.batches, self.loader, self.ring = batches, loader, ring

    def __iter__(self):
        unpack = self.batches.unpack
        if self.ring is None:
            return (unpack(buf) for buf in self.loader)
        return self._from_ring(unpack)

    def _from_ring(self, unpack):
        ring, steps = self.ring.ring, self.ring.steps
        for slot, step in self.loader:
            if int(steps[slot]) != step:
                raise InpaintBenchError(f"input pipeline: slot {slot} holds step {int(steps[slot])}, expected {step}")
            yield unpack(ring[slot])


def make_loader(batches: StepBatches, start: int, stop: int, num_workers: int, pin_memory: bool,
                prefetch_factor: int = 4, ring: bool | None = None) -> Loader:
    """Steps ``start .. stop-1`` in order; worker processes when ``num_workers > 0``. `ring`
    (default: without pinned memory) builds the batches into `_RingSteps` slots (2 slots
    in-process: a fresh buffer per batch costs its page faults, on this VM more than building
    the images' part of it); with pinned memory each batch is its own buffer (a shared segment
    in a worker), which the loader's pinning thread copies into pinned memory (the copy to the
    device may still be reading it steps later, so it cannot be a reused slot)."""
    kwargs, dataset = {}, None
    if num_workers > 0:
        kwargs = {"prefetch_factor": prefetch_factor,
                  "multiprocessing_context": "fork" if "fork" in get_all_start_methods() else "spawn"}
    if ring if ring is not None else not pin_memory:  # in-process too: 2 slots reused, no fresh pages per batch
        dataset = _RingSteps(batches, prefetch_factor * num_workers + 2 if num_workers > 0 else 2)
    loader = torch.utils.data.DataLoader(dataset or _PackedSteps(batches), batch_size=None, sampler=range(start, stop),
                                         num_workers=num_workers, pin_memory=pin_memory, **kwargs)
    return Loader(batches, loader, dataset)


def to_device(images: torch.Tensor, masks: torch.Tensor, device: str, channels_last: bool = False):
    """uint8 (B,H,W,3), (B,H,W) -> float32 (B,3,H,W) in [0,1] and (B,1,H,W) on `device`.

    The values equal ``evaluate.to_tensor`` of the float32 arrays (``u8 / 255`` is one correctly
    rounded division either way), and so does the memory layout: the image is a permuted view of
    an NHWC buffer, as ``to_tensor`` makes it. The conversion and the division are one pass
    (``torch.div`` of the uint8 tensor: the float result keeps the input's strides).
    """
    img = torch.div(images.to(device, non_blocking=True).permute(0, 3, 1, 2), 255.0).to(torch.float32)
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
