"""The papers' suite, run for real on small replicas of the real sources.

Every source of `suite: papers` is rebuilt in its real layout (tests/fakedata.py: the CelebA zip
with its partition and attribute lists, the DTD tar with its label files, the Urban100 tar.gz, the
Places365 train/val tars with their file lists, the NVIDIA mask zip, QD-IMD, a Paris StreetView
user folder), served from 127.0.0.1, and fetched through the project's own fetch code (the
downloads.urls overlay points each file at the loopback server and replaces the registry's
checksums, since the replicas are not the published files). Then

    snakemake --cores 2 --config suite=papers --configfile tests/papers-smoke.yaml mirror.yaml

runs fetch -> prepare -> masks -> pairs -> train -> evaluate -> report. papers-smoke.yaml shortens
only run lengths and counts and uses small widths; resolutions, buckets and tables stay the
papers'. It must end with every paper table written, our cells filled for every implemented
method, and a second `snakemake -n` with nothing to do.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, copy_workflow, python_env
from fakedata import (FakeServer, celeba_files, dtd_files, hole_png, image_bytes, paris_folder, places_files,
                      qdimd_files, tar_bytes, urban100_files)

BIN = Path(sys.executable).parent
TIMEOUT = 3600  # seconds for the whole suite (~110 jobs) on 2 CPU cores

#: Places365 replica categories: more than the 5 that `places2-sahn: {categories: 5}` draws
PLACES_CATS = ["/a/airfield", "/a/apartment_building/outdoor", "/b/bedroom", "/c/canyon", "/d/desert/sand",
               "/f/forest_path", "/h/harbor"]
#: hole ratios of the replica NVIDIA masks: at least one inside every evaluated bucket of the papers'
#: experiments (CCSA 0.3/0.4/0.5 bands, SAHN (0, 0.2] / (0.2, 0.4] / (0.4, 0.6], the (0.5, 0.6] ablation)
NVIDIA_RATIOS = [0.1, 0.15, 0.3, 0.32, 0.38, 0.42, 0.5, 0.52, 0.55, 0.58]


def nvidia_replica(size: int = 100) -> dict[str, bytes]:
    """test_mask.zip in the real layout (mask/testing_mask_dataset/NNNNN.png, white = hole)."""
    members = {"mask/readme.txt": b"testing mask dataset, CC BY-NC-SA 4.0\n"}
    for i, ratio in enumerate(NVIDIA_RATIOS):
        hole = np.zeros((size, size), dtype=bool)
        hole[: int(round(size * ratio)), :] = True
        members[f"mask/testing_mask_dataset/{i:05d}.png"] = hole_png(np.roll(hole, 7 * i, axis=0), hole_white=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return {"test_mask.zip": buf.getvalue()}


def _seeded_resnet50(path: Path) -> None:
    """A stand-in for torchvision's resnet50-11ad3fa6.pth: the official key layout, seeded random
    values (the real ImageNet weights cannot be downloaded here)."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet50(weights=None).state_dict(), path)


def _run(cmd, cwd, env, timeout=TIMEOUT):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        logs = sorted((Path(cwd) / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]
        tails = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-2500:]}" for p in logs)
        raise AssertionError(f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}\n{tails}")
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    folder = tmp_path_factory.mktemp("papers")
    copy_workflow(folder)
    shutil.copy(ROOT / "params.yaml", folder / "params.yaml")
    (folder / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "papers-smoke.yaml", folder / "tests" / "papers-smoke.yaml")
    server = FakeServer()
    try:
        sources = {
            "celeba": celeba_files(n=30),
            "dtd": dtd_files(per_class=3),
            "urban100": urban100_files(n=4),
            "places365": places_files(train_per_cat=3, val_per_cat=1, categories=PLACES_CATS),
            "nvidia-irregular-test": nvidia_replica(),
            "qd-imd": qdimd_files(n_train=4, n_test=2, size=64),
        }
        mirror = {"downloads": {"accept_terms": ["celeba", "places365", "dtd", "nvidia-irregular-test"],
                                "urls": {s: server.publish(s, files) for s, files in sources.items()}}}
        (folder / "mirror.yaml").write_text(yaml.safe_dump(mirror))
        paris_folder(folder / "data" / "user" / "paris_streetview", n_train=8, n_test=3)
        _seeded_resnet50(folder / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth")
        env = python_env({**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                          "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "TORCH_HOME": str(folder / "torch")})
        env.pop("INPAINTBENCH_PARAMS", None)
        if "PYTHONPYCACHEPREFIX" not in os.environ:
            # ~110 jobs each import torch, torchvision, MLflow...: read the environment's own compiled
            # bytecode (uv sync --compile-bytecode) instead of compiling all of it again into a fresh
            # prefix cache (python_env's choice for short tests: minutes of CPU on a fresh machine)
            env.pop("PYTHONPYCACHEPREFIX", None)
        cmd = [str(BIN / "snakemake"), "--cores", "2", "--config", "suite=papers",
               "--configfile", "tests/papers-smoke.yaml", "mirror.yaml"]
        log = _run(cmd, folder, env)
        yield folder, cmd, env, log, server
    finally:
        server.close()


def _paper_tables(params: dict):
    for e in params["suites"]["papers"]:
        for spec in params["experiments"][e].get("tables", []):
            yield e, spec


@pytest.mark.slow
def test_every_paper_table_is_written_with_our_cells_filled(replica):
    folder = replica[0]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    names = []
    for e, spec in _paper_tables(params):
        csv = folder / "reports" / "experiments" / e / "paper_tables" / f"{spec['name']}.csv"
        assert csv.stat().st_size > 0, csv
        names.append(spec["name"])
        tidy = pd.read_csv(csv)
        values = tidy[(tidy["row"] == "value") & tidy["model"].notna()]
        # every implemented method of the table has a row, and its cells are ours (FID needs the
        # Inception weights, inference times a GPU: those two stay empty offline, with the reason)
        assert set(values["model"]) == set(spec["methods"]), (spec["name"], set(values["model"]))
        filled = values[values["metric"].isin(["psnr", "ssim", "l1", "params_m"])]
        assert len(filled) > 0 and filled["ours"].notna().all(), (spec["name"], filled[filled["ours"].isna()])
    assert {"ccsa_table2", "ccsa_table3", "ccsa_table4", "sahn_table1", "sahn_table2", "sahn_table3",
            "sahn_table4", "sahn_efficiency"} <= set(names)
    html = (folder / "reports" / "index.html").read_text()
    assert "sahn_table1" in html and "ccsa_table2" in html


@pytest.mark.slow
def test_report_names_the_substitutes_per_table(replica):
    folder = replica[0]
    info = json.loads((folder / "reports" / "experiments" / "sahn-paper" / "report.json").read_text())
    note = info["paper_table_substitutes"]["sahn_table1"]
    assert "random-vgg16" in note and "imagenet-resnet50" in note, note
    md = (folder / "reports" / "experiments" / "sahn-paper" / "paper_tables" / "sahn_table1.md").read_text()
    assert "Substitutes used" in md
    eff = (folder / "reports" / "experiments" / "sahn-paper" / "paper_tables" / "sahn_efficiency.md").read_text()
    assert "Inference times" in eff and "not timed on CPU" in eff  # the device named beside the times


@pytest.mark.slow
def test_overlay_reached_every_step(replica):
    folder = replica[0]
    # counts from the overlay, not params.yaml: pairs (2 per bucket), validation pairs (2), steps (1)
    pairs = pd.read_csv(folder / "data" / "pairs" / "sahn-paper" / "paris-sahn" / "test.csv")
    assert len(pairs) == 2 * 3 and set(pairs["bucket"]) == {"(0.0, 0.2]", "(0.2, 0.4]", "(0.4, 0.6]"}
    val = pd.read_csv(folder / "data" / "pairs" / "ccsa-paper" / "celeba-ccsa" / "val.csv")
    assert len(val) == 3  # ceil(val_pairs 2 / 3 buckets) per bucket, from the experiment's training block
    run = json.loads((folder / "runs" / "sahn-paper" / "paris-sahn" / "sahn-pub" / "run.json").read_text())
    assert run["steps"] == 1 and run["teacher"]["kind"] == "imagenet-resnet50"
    prep = json.loads((folder / "data" / "prepared" / "celeba-ccsa" / "prepare.json").read_text())
    # subset n 20 (4 test, 16 train) and 1 validation image from outside the subset (10 % of 16)
    assert prep["counts"] == {"train": 16, "val": 1, "test": 4}


@pytest.mark.slow
def test_places_fetch_extracted_only_the_five_drawn_categories(replica):
    folder = replica[0]
    data = folder / "data" / "raw" / "places365" / "data_256"
    cats = {p.parent.relative_to(data).as_posix() for p in data.rglob("*.jpg")}
    assert len(cats) == 5, cats
    labels = set(pd.read_csv(folder / "data" / "prepared" / "places2-sahn" / "manifest.csv")["labels"])
    assert {c.split("/", 1)[1] for c in cats} == labels


@pytest.mark.slow
def test_validation_pairs_never_come_from_a_test_split(replica):
    folder = replica[0]
    for e, ds in [("ccsa-paper", "celeba-ccsa"), ("sahn-paper", "paris-sahn"), ("sahn-paper", "places2-sahn"),
                  ("sahn-paper", "celeba-sahn")]:
        manifest = pd.read_csv(folder / "data" / "prepared" / ds / "manifest.csv")
        test_ids = set(manifest[manifest["split"] == "test"]["id"])
        val = pd.read_csv(folder / "data" / "pairs" / e / ds / "val.csv")
        assert not set(val["image_id"]) & test_ids, (e, ds)


@pytest.mark.slow
def test_test_metrics_reach_every_trained_models_mlflow_run(replica):
    """The evaluate jobs run with --no-mlflow; each experiment's aggregate job logs them all."""
    import mlflow.tracking

    folder = replica[0]
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    infos = sorted((folder / "runs").glob("*/*/*/run.json"))
    assert len(infos) == 36
    for info in infos:
        run_id = json.loads(info.read_text())["mlflow_run_id"]
        keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("test/")]
        assert any(k.endswith("/all/psnr") for k in keys), (info, keys)


@pytest.mark.slow
def test_second_run_has_nothing_to_do(replica):
    folder, cmd, env, _, _ = replica
    out = _run(cmd + ["-n"], folder, env, timeout=300)
    assert "Nothing to be done" in out, out[-3000:]


def test_overlay_shrinks_every_published_model_and_picks_substitutes_explicitly():
    """Fast guard for the replica: a `*-pub` model added to the papers' suite needs its small widths
    in tests/papers-smoke.yaml, and every papers' experiment names its offline substitutes there."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "tests" / "papers-smoke.yaml").read_text())
    for e in params["suites"]["papers"]:
        exp = params["experiments"][e]
        for m in exp["models"]:
            if m.endswith("-pub"):
                assert overlay["models"].get(m, {}).get("args"), f"tests/papers-smoke.yaml: no small widths for {m}"
        assert overlay["experiments"][e]["perceptual"]["backbone"] == "random-vgg16", e
        if any("teacher" in params["models"][m].get("requires", []) for m in exp["models"]):
            assert overlay["experiments"][e]["teacher"]["kind"] == "imagenet-resnet50", e
        # the overlay shortens runs and counts only: no resolution, bucket, mask set or table changes
        assert not set(overlay["experiments"][e]) & {"size", "buckets", "masks", "tables", "runs", "models"}
