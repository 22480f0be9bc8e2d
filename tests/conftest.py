"""Shared fixtures: a tiny params file and a tiny project folder that steps can run in."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


def tiny_params(models=None, extra_models=None) -> dict:
    """A complete, small params dict: 32 px, a few images, a few steps."""
    models = models or ["copy-input", "biharmonic", "pconv"]
    all_models = {
        "copy-input": {"arch": "copy_input"},
        "biharmonic": {"arch": "biharmonic"},
        "pconv": {"arch": "pconv_unet", "args": {"base": 8, "depth": 3}},
        **(extra_models or {}),
    }
    return {
        "seed": 0,
        "device": "cpu",
        "suite": "tiny",
        "suites": {"tiny": ["tiny"]},
        "datasets": {
            "photos": {"source": "builtin", "images": "photos", "size": 32, "n_train": 24, "n_val": 4, "n_test": 6},
            "textures": {"source": "builtin", "images": "textures", "size": 32, "n_train": 6, "n_val": 3, "n_test": 6},
        },
        "masks": {"generated": {"source": "generated", "count": 60, "ratio_range": [0.05, 0.6]}},
        "perceptual": {"backbone": "random-vgg16", "width": 0.25},
        "training": {"batch_size": 4, "epochs": 2, "steps_per_epoch": 3, "checkpoint_every": 2, "val_pairs": 3,
                     "num_threads": 1, "mask_ratio": [0.1, 0.5], "optimizer": {"name": "adam", "lr": 1.0e-3}},
        "models": {m: all_models[m] for m in models},
        "experiments": {
            "tiny": {"size": 32, "runs": [{"train": "photos", "eval": ["photos", "textures"]}], "models": models,
                     "masks": "generated", "buckets": ["(0.1, 0.3]", "(0.3, 0.5]"], "pairs_per_bucket": 3,
                     "samples_per_bucket": 1,
                     # the paper-layout machinery on tiny data: models stand in for the ablation rows
                     "tables": [{"name": "ccsa_table4_tiny", "paper": "ccsa", "table": "4", "dataset": "textures",
                                 "bucket": "(0.1, 0.3]", "metrics": ["psnr", "ssim", "l1"],
                                 "methods": {m: row for m, row in zip(models, ["RES0ATT0", "RES1ATT1", "RES0ATT1"])}}]},
        },
    }


def write_params(folder: Path, params: dict) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder with a tiny params.yaml; the test runs inside it."""
    write_params(tmp_path, tiny_params())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def prepare_tiny(project: Path, *, textures: bool = True, val: bool = True, test: bool = True) -> Path:
    """The tiny experiment's data steps, run in `project` (the fixture above) in this order: prepare
    photos (and textures), the generated 32 px masks, the photos' val pairs, the test pairs of photos
    (and textures). Returns `project`."""
    from inpaintbench.cli import main

    datasets = ["photos", "textures"] if textures else ["photos"]
    steps = [["prepare", d] for d in datasets] + [["masks", "generated", "--size", "32"]]
    if val:
        steps.append(["pairs", "tiny", "photos", "--split", "val"])
    if test:
        steps += [["pairs", "tiny", d] for d in datasets]
    for argv in steps:
        assert main(argv) == 0
    return project


def python_env(env: dict) -> dict:
    """Subprocess environment. Where PYTHONDONTWRITEBYTECODE is set, every Python process (each
    Snakemake, DVC stage and cluster job) would compile the package again; cache the bytecode
    outside the source tree instead."""
    if env.get("PYTHONDONTWRITEBYTECODE"):
        env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "inpaintbench-test-pycache"))
    return env


def copy_dvc_settings(dest: Path) -> None:
    """After `dvc init` in `dest`: the project's .dvc/config (cache links, offline plots page) and
    its plot templates (.dvc/plots)."""
    shutil.copy(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)


def copy_workflow(dest: Path) -> None:
    """Copy the files a workflow run needs (Snakefile, rules, dvc.yaml) into `dest`."""
    shutil.copy(ROOT / "Snakefile", dest / "Snakefile")
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    # dvc.yaml lists the source folders as stage dependencies
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))


def counting_calls(monkeypatch, module, name: str) -> list:
    """Replace `module.name` by a wrapper that records each call (one entry per call) and returns the list."""
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls
