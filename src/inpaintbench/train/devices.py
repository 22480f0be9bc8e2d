"""Device choice and GPU slots.

``device: auto`` picks CUDA when a GPU is visible, else CPU. Snakemake limits how many GPU jobs
run (``resources: gpu=1``) but never says *which* GPU a job gets, so a training job claims a free
slot itself: it takes an exclusive, non-blocking `flock` on ``<slot_dir>/gpu<i>.lock`` for the
first free i among the visible GPUs and sets ``CUDA_VISIBLE_DEVICES`` to that GPU before CUDA is
initialised. The kernel drops the lock when the process exits or crashes, so a slot is never
leaked. With all slots taken the job waits (polling) rather than sharing a GPU.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import InpaintBenchError


def visible_gpu_ids() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() not in ("", "-1")]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@contextmanager
def claim_gpu(slot_dir: str | Path = ".gpu-slots", gpu_ids: list[str] | None = None, poll: float = 2.0,
              timeout: float | None = None):
    """Hold one GPU exclusively for the block; yields its id (or None when there is no GPU)."""
    ids = visible_gpu_ids() if gpu_ids is None else gpu_ids
    if not ids:
        yield None
        return
    slot_dir = Path(slot_dir)
    slot_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    while True:
        for gid in ids:
            fh = open(slot_dir / f"gpu{gid}.lock", "a+")
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
            raise InpaintBenchError(f"no free GPU slot among {ids} after {timeout:.0f} s")
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
