"""Faults, class "workflow/integrity" (issue 15): what a step wrote is checked where the next step
reads it. A metrics or pairs CSV cut short, an emptied CSV, a truncated checkpoint: a clear error
(never a shorter table aggregated as if complete, never a pandas traceback); and `rule all`
rebuilds a deleted or damaged checkpoint, pairs or metrics file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inpaintbench import integrity
from inpaintbench.errors import InpaintBenchError
from inpaintbench.io import read_csv, read_frame, write_csv
from inpaintbench.train import checkpoints

from conftest import copy_workflow, tiny_params, write_params

FIELDS = ["pair_id", "psnr"]


def _metrics(tmp_path, n=20) -> Path:
    path = tmp_path / "metrics.csv"
    write_csv(path, [{"pair_id": f"{i:05d}", "psnr": 30.0 + i} for i in range(n)], FIELDS)
    return path


def _cut(path: Path, keep_lines: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:keep_lines]))


def test_written_csv_reads_back(tmp_path):
    path = _metrics(tmp_path)
    assert len(read_csv(path)) == 20 and len(read_frame(path)) == 20
    assert integrity.read_record(path)["rows"] == 20


@pytest.mark.parametrize("reader", [read_csv, read_frame])
def test_csv_cut_short_is_refused(tmp_path, reader):
    path = _metrics(tmp_path)
    _cut(path, 11)  # header + 10 of 20 rows: a well-formed, shorter file
    with pytest.raises(InpaintBenchError, match=r"truncated or changed since"):
        reader(path)


@pytest.mark.parametrize("reader", [read_csv, read_frame])
def test_zero_byte_csv_is_a_clear_error(tmp_path, reader):
    path = _metrics(tmp_path)
    path.write_bytes(b"")
    with pytest.raises(InpaintBenchError, match=r"is empty \(0 bytes\)"):
        reader(path)
    # also without a record (a file some other tool emptied)
    integrity.record_path(path).unlink()
    with pytest.raises(InpaintBenchError, match=r"is empty \(0 bytes\)"):
        reader(path)


def test_same_size_edit_is_found_by_the_hash(tmp_path):
    path = _metrics(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"30.0", b"99.0", 1))  # same length, other number
    assert len(path.read_bytes()) == len(data)
    with pytest.raises(InpaintBenchError, match="sha256"):
        read_frame(path)


def test_aggregate_refuses_a_cut_metrics_file(project):
    from inpaintbench import paths
    from inpaintbench.config import load_params
    from inpaintbench.evaluate import METRIC_FIELDS
    from inpaintbench.report.aggregate import aggregate_experiment

    p = load_params()
    for run in p.experiment("tiny")["runs"]:
        for m in p.experiment("tiny")["models"]:
            rows = [{"experiment": "tiny", "train": run["train"], "dataset": "photos", "model": m, "pair_id": f"{i:05d}",
                     "bucket": "(0.1, 0.3]", "image_id": str(i), "mask_id": str(i), "hole_ratio": 0.2,
                     **{k: 0.5 for k in METRIC_FIELDS[9:]}} for i in range(6)]
            write_csv(paths.metrics_csv("tiny", run["train"], m), rows, METRIC_FIELDS)
    cut = paths.metrics_csv("tiny", "photos", "pconv")
    _cut(cut, 4)
    with pytest.raises(InpaintBenchError, match=f"{cut}.*truncated"):
        aggregate_experiment(p, "tiny")
    cut.write_bytes(b"")
    with pytest.raises(InpaintBenchError, match="empty"):
        aggregate_experiment(p, "tiny")


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    checkpoints.save(path, {"model": {"w": torch.randn(1000)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InpaintBenchError, match="truncated"):
        checkpoints.load(path)


def test_stale_lists_damaged_targets(tmp_path):
    good, cut, empty = (_metrics(tmp_path / d) for d in ("a", "b", "c"))
    _cut(cut, 5)
    empty.write_bytes(b"")
    found = dict(integrity.stale([good, cut, empty, tmp_path / "missing.csv"]))
    assert set(found) == {str(cut), str(empty)}


# ---- the workflow rebuilds what is deleted or damaged ----------------------------------------
BIN = Path(sys.executable).parent


def _snake(folder, *args, timeout=900):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    out = subprocess.run([str(BIN / "snakemake"), "--cores", "2", *args], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _jobs(out: str) -> set[str]:
    return {line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith(("rule ", "localrule "))}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wf-integrity")
    copy_workflow(folder)
    p = tiny_params()
    p["training"].update(epochs=1, steps_per_epoch=2, checkpoint_every=2)
    write_params(folder, p)
    _snake(folder)
    assert "Nothing to be done" in _snake(folder, "-n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("target, change, expect", [
    ("runs/tiny/photos/pconv/model.pt", "delete", {"train", "evaluate"}),
    ("runs/tiny/photos/pconv/model.pt", "truncate", {"train", "evaluate"}),
    ("results/tiny/photos/biharmonic/metrics.csv", "truncate", {"evaluate", "aggregate"}),
    ("results/tiny/photos/biharmonic/metrics.csv", "empty", {"evaluate", "aggregate"}),
    ("data/pairs/tiny/textures/test.csv", "truncate", {"pairs", "evaluate"}),
])
def test_rule_all_rebuilds_a_damaged_target(built, target, change, expect):
    path = built / target
    backup = path.read_bytes()
    st = path.stat()
    try:
        if change == "delete":
            path.unlink()
        elif change == "empty":
            path.write_bytes(b"")
        else:
            path.write_bytes(backup[: len(backup) * 2 // 3])
        out = _snake(built, "-n")
        assert "Nothing to be done" not in out
        assert expect <= _jobs(out), out[-2000:]
    finally:
        path.write_bytes(backup)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "Nothing to be done" in _snake(built, "-n")
