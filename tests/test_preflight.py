"""Preflight: a run whose training jobs need pretrained weights that are missing stops before any
job runs, naming each file, where it goes, and the offline substitute one may choose; a dry run
still lists the jobs; choosing the substitute explicitly lets it run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_workflow, python_env, tiny_params, write_params
from inpaintbench.config import Params, TrainJob
from inpaintbench.preflight import missing_weights, substitutes_used

BIN = Path(sys.executable).parent


def _params(backbone: str) -> Params:
    raw = tiny_params()
    raw["experiments"]["tiny"]["perceptual"] = {"backbone": backbone}
    return Params(raw)


def test_missing_vgg16_is_named_with_its_place_and_the_substitute(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    jobs = [TrainJob("tiny", "photos", "pconv")]
    problems = missing_weights(_params("vgg16"), jobs)
    assert len(problems) == 1
    assert "vgg16-397923af.pth" in problems[0] and str(tmp_path / "torch" / "hub" / "checkpoints") in problems[0]
    assert "experiments.tiny.perceptual.backbone: random-vgg16" in problems[0]
    assert missing_weights(_params("random-vgg16"), jobs) == []  # the substitute, chosen explicitly
    assert missing_weights(_params("vgg16"), []) == []  # nothing to train: nothing needed
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"x")
    assert missing_weights(_params("vgg16"), jobs) == []


def test_substitutes_are_named():
    names = substitutes_used({"backbone": "random-vgg16", "width": 0.25}, {"kind": "imagenet-resnet50"})
    assert any("random-vgg16" in n and "0.25" in n for n in names) and any("imagenet-resnet50" in n for n in names)
    assert substitutes_used({"backbone": "vgg16"}, {"kind": "asl-tresnet-l"}) == []  # the papers' parts


@pytest.mark.slow
def test_snakemake_stops_before_any_job_when_weights_are_missing(tmp_path):
    copy_workflow(tmp_path)
    raw = tiny_params()
    raw["experiments"]["tiny"]["perceptual"] = {"backbone": "vgg16"}
    write_params(tmp_path, raw)
    env = python_env({**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TORCH_HOME": str(tmp_path / "torch"),
                      "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    env.pop("INPAINTBENCH_PARAMS", None)
    dry = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert dry.returncode == 0 and "train" in dry.stdout
    out = subprocess.run([str(BIN / "snakemake"), "--cores", "1"], cwd=tmp_path, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "vgg16-397923af.pth" in text and "random-vgg16" in text, text[-2000:]
    assert not (tmp_path / "data").exists()  # nothing ran, not even the data steps
