"""Checkpoints written atomically (temp file + rename): a kill mid-write never leaves a torn file.

Safety (issue 15): a checkpoint holds only tensors and plain containers (dict, list, tuple, str,
int, float, bool, None), so it is read with ``torch.load(..., weights_only=True)``, whose
unpickler refuses every other global. A crafted ``model.pt``/``last.pt`` (e.g. a pickle whose
``__reduce__`` calls ``os.system``) is refused with an InpaintBenchError before any of its code
runs. `save` converts numpy scalars / paths to plain values and refuses anything else, so what
we write can always be read back under that rule.
"""
from __future__ import annotations

import hashlib
import json
import math
import pickle
from collections import OrderedDict
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from ..errors import InpaintBenchError
from ..integrity import record, verify
from ..io import atomic_path


def plain(obj: Any, where: str = "state") -> Any:
    """`obj` as tensors and plain containers only; anything else is an error (a bug in a caller)."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor, torch.Size)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, OrderedDict):
        return OrderedDict((plain(k, where), plain(v, f"{where}.{k}")) for k, v in obj.items())
    if isinstance(obj, dict):
        return {plain(k, where): plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(f"checkpoint {where}: {type(obj).__name__} is not a tensor or plain value")


def save(path: str | Path, state: dict) -> None:
    state = plain(state)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
        record(path, source=tmp)  # size + sha256: a truncated or replaced checkpoint is found (integrity.py)


def load(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint with the weights-only unpickler: no code from the file ever runs."""
    path = Path(path)
    if not path.exists():
        raise InpaintBenchError(f"checkpoint {path} does not exist; run the training step first")
    if path.stat().st_size == 0:
        raise InpaintBenchError(f"checkpoint {path} is empty (0 bytes); delete it and retrain")
    verify(path, "checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torn file, foreign file or a pickle with code (UnpicklingError)
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            raise InpaintBenchError(
                f"checkpoint {path} was refused: it holds Python objects other than tensors and plain "
                f"values, which could run code when loaded. inpaintbench never writes such files; "
                f"delete it and retrain (or re-convert the weights).") from None
        raise InpaintBenchError(f"checkpoint {path} cannot be read ({exc}); delete it and retrain") from None
    if not isinstance(state, dict):
        raise InpaintBenchError(f"checkpoint {path} is not an inpaintbench checkpoint (a {type(state).__name__}, "
                                f"not a mapping); delete it and retrain")
    return state


def settings_hash(settings: Any) -> str:
    """Stable hash of the settings that shape a training run (stored in last.pt, checked on resume)."""
    def norm(x):
        if isinstance(x, float) and math.isfinite(x) and x == int(x):
            return int(x)  # 1.0 and 1 mean the same setting
        if isinstance(x, dict):
            return {str(k): norm(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [norm(v) for v in x]
        return x

    blob = json.dumps(norm(settings), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
