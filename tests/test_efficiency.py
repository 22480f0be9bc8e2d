"""The efficiency table needs no trained teacher: a model with a frozen teacher (SAHN here) is
built for timing with a random-weight teacher of the trained teacher's shape, so the efficiency
job waits for no teacher job and a teacher failure cannot block the table (issue 11)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, copy_workflow, python_env, tiny_params
from inpaintbench import paths
from inpaintbench.config import Params
from inpaintbench.models.base import BuildContext
from inpaintbench.models.registry import build
from inpaintbench.report.efficiency import TIMING_TEACHER_NOTE, experiment_efficiency
from inpaintbench.train.teacher import TeacherCNN, save_teacher

SAHN_TINY = {"arch": "sahn", "requires": ["teacher"],
             "args": {"tex_widths": [4, 8, 8], "sem_widths": [4, 8, 8], "str_widths": [4, 8, 8],
                      "msf_widths": [4, 8, 8], "pyr_blocks": 1, "disc_widths": [4, 8, 8, 8]}}


def _params(widths) -> Params:
    raw = tiny_params(models=["copy-input", "sahn"], extra_models={"sahn": SAHN_TINY})
    raw["experiments"]["tiny"].pop("tables")
    raw["teacher"] = {"kind": "trained", "widths": widths}
    raw["efficiency"] = {"size": 32, "repeats": 1, "warmup": 0, "time_paper_scale": True}
    return Params(raw, "params.yaml")


def test_efficiency_times_a_trained_teacher_model_without_the_trained_teacher(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/: no teacher checkpoint exists anywhere
    widths = [4, 8, 12, 16]
    params = _params(widths)
    assert not paths.artifact("tiny", "photos", "teacher").exists()
    rows = {r["model"]: r for r in experiment_efficiency(params, "tiny", "cpu")}
    sahn = rows["sahn"]
    assert sahn["teacher"] == TIMING_TEACHER_NOTE and rows["copy-input"]["teacher"] == ""
    assert isinstance(sahn["ms"], float) and sahn["ms"] > 0
    # the same parameter count as SAHN built with a real trained teacher of these widths (another
    # label count, other weights): the generator depends only on the teacher's channel widths
    ckpt = tmp_path / "teacher.pt"
    save_teacher(ckpt, TeacherCNN(5, widths), [f"l{i}" for i in range(5)], {"widths": widths})
    net = build("sahn", SAHN_TINY["args"], {}, BuildContext(image_size=32, perceptual={"backbone": "none"},
                                                            teacher={"kind": "trained"},
                                                            artifacts={"teacher": str(ckpt)}))
    assert sahn["params"] == sum(p.numel() for p in net.generator_parameters())
    # another teacher width changes the generator (the stand-in follows the experiment's widths)
    other = {r["model"]: r for r in experiment_efficiency(_params([4, 8, 16, 16]), "tiny", "cpu")}
    assert other["sahn"]["params"] != sahn["params"]
    assert not list(tmp_path.rglob("timing-teacher.pt"))  # the stand-in lives in a temporary folder


def _dry_run_jobs(folder: Path, *targets: str) -> dict[str, int]:
    """{rule: job count} of `snakemake -n` (its "Job stats" table)."""
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", *targets], cwd=folder,
                         env=python_env(dict(os.environ)), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = {}
    for line in (out.stdout + out.stderr).split("Job stats:", 1)[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.slow
def test_efficiency_job_does_not_wait_for_the_teacher(tmp_path):
    """The built-in suite trains its teacher (`kind: trained`; SAHN, SPL and SPN require it), yet
    its efficiency table schedules no teacher job (nor any training)."""
    copy_workflow(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert _dry_run_jobs(tmp_path).get("teacher", 0) >= 1  # the whole suite does train one
    jobs = _dry_run_jobs(tmp_path, "results/builtin/efficiency.csv")
    assert jobs.get("efficiency") == 1 and "prepare" in jobs, jobs
    assert "teacher" not in jobs and "train" not in jobs, jobs
