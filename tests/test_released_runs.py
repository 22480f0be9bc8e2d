"""A run's own released checkpoints (experiments.<e>.runs[i].released): scored on that run's
evaluation datasets only, when their files are in the torch.hub cache (models/released.py
`present`), never trained; shown in that run's comparison table and as extra rows of the paper
tables over its datasets. The checkpoint is the LaMa Lightning file of test_released (seeded
official-layout weights of tests/fixtures/official/lama.pt) in a TORCH_HOME set by monkeypatch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_workflow, python_env, tiny_params, write_params
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from test_released import lama_checkpoint, lama_spec

LABEL = "LaMa (test, released)"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    # TORCH_HOME alone moves the cache (torch.hub.set_dir would pin it for every later test)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    yield tmp_path / "torch" / "hub" / "checkpoints"


def two_run_params(models=("copy-input", "biharmonic")) -> dict:
    """tiny_params with two runs (photos -> photos, textures -> textures) and the released LaMa
    entry `lama-test` listed on the photos run only; a comparison-kind paper table over both
    datasets (CCSA Table 2's layout) and the ablation table of tiny_params."""
    params = tiny_params(models=list(models))
    params["models"]["lama-test"] = lama_spec()
    exp = params["experiments"]["tiny"]
    exp["runs"] = [{"train": "photos", "eval": ["photos"], "released": ["lama-test"]},
                   {"train": "textures", "eval": ["textures"]}]
    exp["tables"].append({"name": "ccsa_table2_tiny", "paper": "ccsa", "table": "2",
                          "methods": dict(zip(models, ["Pconv", "RFR"])),
                          "datasets": {"photos": "CelebA", "textures": "DTD"},
                          "buckets": {"(0.1, 0.3]": "0.3", "(0.3, 0.5]": "0.4"}, "metrics": ["psnr", "ssim", "l1"]})
    return params


def test_a_run_scores_its_released_entry_only_when_present(hub, tmp_path):
    write_params(tmp_path, two_run_params())
    p = load_params(tmp_path / "params.yaml")
    assert p.run_models("tiny", "photos") == ["copy-input", "biharmonic"]  # file absent: nothing to score
    assert p.run_released("tiny", "photos") == []
    lama_checkpoint(hub / "lama-test.ckpt")
    assert p.run_models("tiny", "photos") == ["copy-input", "biharmonic", "lama-test"]
    assert p.run_models("tiny", "textures") == ["copy-input", "biharmonic"]   # not on the other run
    assert "lama-test" not in p.experiment("tiny")["models"]                  # nor experiment-wide
    assert p.train_jobs() == []                                               # evaluated, never trained


def test_a_bad_run_released_name_is_a_clear_error(tmp_path):
    params = two_run_params()
    params["experiments"]["tiny"]["runs"][1]["released"] = ["biharmonic"]  # a model, but without weights
    write_params(tmp_path, params)
    with pytest.raises(InpaintBenchError) as err:
        load_params(tmp_path / "params.yaml")
    msg = str(err.value)
    assert "experiments.tiny.runs[1].released[0]" in msg and "'biharmonic'" in msg
    assert "is not a model with released weights; known: lama-test" in msg
    params["experiments"]["tiny"]["runs"][1]["released"] = "lama-test"  # the schema wants a list
    write_params(tmp_path, params)
    with pytest.raises(InpaintBenchError, match=r"runs\[1\]\.released"):
        load_params(tmp_path / "params.yaml")


def _dry_run(folder: Path) -> str:
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "1"],
                         cwd=folder, env=python_env(dict(os.environ)), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.mark.slow
def test_workflow_evaluates_a_run_released_entry_on_its_run_only(hub, tmp_path):
    folder = tmp_path / "wf"
    folder.mkdir()
    copy_workflow(folder)
    write_params(folder, two_run_params(models=("copy-input", "pconv")))
    absent = _dry_run(folder)
    assert "lama-test" not in absent  # missing file: no job
    lama_checkpoint(hub / "lama-test.ckpt")
    present = _dry_run(folder)
    stats = present.split("Job stats:", 1)[1]
    evaluate = [line for line in stats.splitlines() if line.split()[:1] == ["evaluate"]]
    assert "results/tiny/photos/lama-test/metrics.csv" in present
    assert "results/tiny/textures/lama-test" not in present and "runs/tiny/photos/lama-test" not in present
    assert int(evaluate[0].split()[1]) == 5  # 2 models x 2 runs + lama-test on photos


def test_report_shows_a_run_released_entry_on_its_datasets_and_paper_tables(hub, tmp_path, monkeypatch, capsys):
    from inpaintbench.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    write_params(tmp_path, two_run_params())
    lama_checkpoint(hub / "lama-test.ckpt")
    steps = [["prepare", "photos"], ["prepare", "textures"], ["masks", "generated", "--size", "32"],
             ["pairs", "tiny", "photos"], ["pairs", "tiny", "textures"],
             *[["evaluate", "tiny", t, m, "--no-mlflow"] for t in ("photos", "textures") for m in ("copy-input", "biharmonic")]]
    for argv in steps:
        assert main(argv) == 0, argv
    assert main(["aggregate", "tiny", "--no-mlflow"]) == 2  # a present entry is part of its run's summary
    assert "photos/lama-test/metrics.csv is missing" in capsys.readouterr().err
    for argv in (["evaluate", "tiny", "photos", "lama-test", "--no-mlflow"], ["aggregate", "tiny", "--no-mlflow"],
                 ["report", "tiny"]):
        assert main(argv) == 0, argv
    summary = pd.read_csv(tmp_path / "results" / "tiny" / "summary.csv")
    assert set(summary.loc[summary["model"] == "lama-test", "dataset"]) == {"photos"}
    out = tmp_path / "reports" / "experiments" / "tiny"
    table = json.loads((out / "table.json").read_text())
    assert [r["label"] for r in table["photos"]["rows"]][-1] == LABEL          # its run's comparison table
    assert "lama-test" not in [r["model"] for r in table["textures"]["rows"]]  # not the other run's
    cells = pd.read_csv(out / "paper_tables" / "ccsa_table2_tiny.csv", dtype=str, keep_default_na=False)
    ours = cells[cells["method"] == LABEL]
    assert set(ours["dataset"]) == {"CelebA", "DTD"} and (ours["paper"] == "").all()
    scored = ours[ours["dataset"] == "CelebA"]
    psnr = summary[(summary["model"] == "lama-test") & (summary["metric"] == "psnr") & (summary["bucket"] == "(0.1, 0.3]")]
    assert float(scored[(scored["metric"] == "psnr") & (scored["bucket"] == "0.3")]["ours"].iloc[0]) == pytest.approx(
        float(psnr["mean"].iloc[0]))
    assert (ours[ours["dataset"] == "DTD"]["ours"] == "").all()  # never evaluated on textures: no number
    md = (out / "paper_tables" / "ccsa_table2_tiny.md").read_text()
    assert LABEL in md and "Released checkpoints of the official code" in md
    ablation = pd.read_csv(out / "paper_tables" / "ccsa_table4_tiny.csv", dtype=str, keep_default_na=False)
    assert LABEL not in set(ablation["method"])  # an ablation table keeps its variants only
    info = json.loads((out / "report.json").read_text())
    assert LABEL in info["paper_table_substitutes"]["ccsa_table2_tiny"]
