"""Device choice and GPU slots.

``device: auto`` picks CUDA when a GPU is visible, else CPU. Snakemake limits how many GPU jobs
run (``resources: gpu=N``) but never says *which* GPU a job gets, so a training job claims a free
slot itself: it takes an exclusive, non-blocking `flock` on ``<slot_dir>/gpu<i>.lock`` for the
first free i among the visible GPUs and sets ``CUDA_VISIBLE_DEVICES`` to that GPU before CUDA is
initialised. The kernel drops the lock when the process exits or crashes, so a slot is never
leaked. With all slots taken the job waits (polling) rather than sharing a GPU.

Two details matter for this to work:

- Counting the GPUs must not initialise CUDA in this process: the CUDA driver reads
  ``CUDA_VISIBLE_DEVICES`` once, at initialisation, so after ``torch.cuda.is_available()`` the
  variable set here would be ignored and every job would run on GPU 0. ``torch.cuda.device_count()``
  asks NVML and leaves CUDA uninitialised.
- The slots are per machine and per scheduler allocation. The lock folder is named after the host
  (a project folder on a shared file system is seen by many nodes, each with its own GPU 0), and
  inside a SLURM job after the job id: SLURM already gives each job its own GPUs (and sets
  ``CUDA_VISIBLE_DEVICES``), so two SLURM jobs must not wait for each other's "GPU 0", while
  trainings started inside one allocation still share out its GPUs.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import InpaintBenchError

DEFAULT_SLOT_DIR = ".gpu-slots"


def visible_gpu_ids() -> list[str]:
    """The GPU ids this process may use, without initialising CUDA."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g.strip() for g in env.split(",")]
        out = []
        for g in ids:  # CUDA stops at the first invalid entry ("-1" hides everything after it)
            if g in ("", "-1"):
                break
            out.append(g)
        return out
    import torch

    # NVML-based count: unlike torch.cuda.is_available(), it does not initialise CUDA.
    return [str(i) for i in range(torch.cuda.device_count())]


def slot_namespace() -> str:
    """Host name, plus the SLURM job id inside a SLURM allocation (see the module docstring)."""
    name = socket.gethostname() or "localhost"
    job = os.environ.get("SLURM_JOB_ID")
    return f"{name}-slurm{job}" if job else name


@contextmanager
def claim_gpu(slot_dir: str | Path | None = None, gpu_ids: list[str] | None = None, poll: float = 2.0,
              timeout: float | None = None):
    """Hold one GPU exclusively for the block; yields its id (or None when there is no GPU).

    ``slot_dir`` defaults to ``$INPAINTBENCH_GPU_SLOTS`` or ``.gpu-slots`` in the working folder;
    the locks live in a sub-folder per machine (and SLURM job), see ``slot_namespace``.
    """
    ids = visible_gpu_ids() if gpu_ids is None else [str(g) for g in gpu_ids]
    if not ids:
        yield None
        return
    base = Path(slot_dir if slot_dir is not None else os.environ.get("INPAINTBENCH_GPU_SLOTS", DEFAULT_SLOT_DIR))
    folder = base / slot_namespace()
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    while True:
        for gid in ids:
            fh = open(folder / f"gpu{gid}.lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            previous = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = gid
            try:
                yield gid
            finally:
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        if timeout is not None and time.monotonic() - started > timeout:
            raise InpaintBenchError(
                f"no free GPU slot among {ids} after {timeout:.0f} s (locks in {folder}); other jobs hold "
                "them: wait, or run with fewer parallel GPU jobs (--resources gpu=N)")
        time.sleep(poll)


def resolve_device(choice: str) -> str:
    import torch

    if choice == "cpu":
        return "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise InpaintBenchError("params.yaml: device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
        return "cuda"
    return "cuda" if torch.cuda.is_available() else "cpu"
