"""Checkpoints written atomically (temp file + rename): a kill mid-write never leaves a torn file."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InpaintBenchError
from ..io import atomic_path


def save(path: str | Path, state: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise InpaintBenchError(f"checkpoint {path} does not exist; run the training step first")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torn or foreign file
        raise InpaintBenchError(f"checkpoint {path} cannot be read ({exc}); delete it and retrain") from exc
