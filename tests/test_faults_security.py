"""Faults, class "security" (issue 15): no code runs from a checkpoint, no file escapes an archive,
no archive expands without bound. Each test fails on the code before the fix."""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from inpaintbench.errors import InpaintBenchError
from inpaintbench.train import checkpoints


class _Evil:
    """A pickle payload: unpickling it calls a function (here: write a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def _write_marker(path):
    with open(path, "w") as fh:
        fh.write("code from a checkpoint ran")
    return {}


@pytest.mark.parametrize("name", ["model.pt", "last.pt"])
def test_malicious_checkpoint_is_refused_without_running(tmp_path, name):
    marker = tmp_path / "marker"
    path = tmp_path / name
    torch.save({"model": {"w": torch.zeros(2)}, "state": _Evil(marker)}, path)
    with pytest.raises(InpaintBenchError, match="refused"):
        checkpoints.load(path)
    assert not marker.exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"x": _Evil(marker)}, protocol=2))
    with pytest.raises(InpaintBenchError):
        checkpoints.load(path)
    assert not marker.exists()


def test_saved_state_round_trips_under_weights_only(tmp_path):
    state = {"model": OrderedDict(w=torch.arange(3.0)), "opt": {"betas": (0.9, 0.999), "lr": 1e-3},
             "state": {"step": np.int64(7), "history": [{"loss": np.float32(0.5)}], "run": None},
             "context": {"artifacts": {"teacher": tmp_path / "teacher.pt"}}}
    path = tmp_path / "last.pt"
    checkpoints.save(path, state)
    back = torch.load(path, weights_only=True)  # what `load` does: no full pickle needed
    assert back["state"]["step"] == 7 and isinstance(back["state"]["step"], int)
    assert back["context"]["artifacts"]["teacher"] == str(tmp_path / "teacher.pt")
    assert torch.equal(checkpoints.load(path)["model"]["w"], torch.arange(3.0))


def test_saving_an_arbitrary_object_is_refused(tmp_path):
    with pytest.raises(TypeError):
        checkpoints.save(tmp_path / "x.pt", {"obj": object()})
    assert not (tmp_path / "x.pt").exists()


def test_empty_and_foreign_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(InpaintBenchError, match="empty"):
        checkpoints.load(tmp_path / "empty.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InpaintBenchError, match="not an inpaintbench checkpoint"):
        checkpoints.load(tmp_path / "list.pt")
