"""The whole workflow on a tiny config: Snakemake end to end, a second run does nothing, and
`dvc repro` then `dvc status` report the pipeline up to date."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, copy_dvc_settings, copy_workflow, tiny_params, write_params

BIN = Path(sys.executable).parent


def _run(cmd, cwd, timeout=900):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wf")
    copy_workflow(folder)
    write_params(folder, tiny_params())
    _run(["git", "init", "-q"], folder)
    _run([str(BIN / "dvc"), "init", "-q"], folder)
    copy_dvc_settings(folder)
    log = _run([str(BIN / "snakemake"), "--cores", "2"], folder)
    return folder, log


@pytest.mark.slow
def test_snakemake_builds_the_report(workflow_run):
    folder, _ = workflow_run
    rep = folder / "reports" / "experiments" / "tiny"
    for name in ("table.md", "table.tex", "table.csv", "report.json", "figures/loss_curves_photos.png",
                 "figures/val_curves_photos.png", "figures/samples_photos.png", "figures/samples_textures.png"):
        assert (rep / name).stat().st_size > 0, name
    html = (folder / "reports" / "index.html").read_text()
    assert "samples_photos.png" in html and "<table>" in html
    assert "**" not in html and "<td class='best'><strong>" in html  # tables from data, best marked
    table = pd.read_csv(rep / "table.csv")
    assert set(table["model"]) == {"copy-input", "biharmonic", "pconv"}
    assert set(table["bucket"]) == {"(0.1, 0.3]", "(0.3, 0.5]", "all"}
    assert (table[table["bucket"] == "all"]["n"] == 6).all()  # 2 buckets × 3 pairs per dataset
    tex = (rep / "table.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{" in tex
    info = json.loads((rep / "report.json").read_text())
    # offline, FID weights are not in the torch.hub cache: marked as not computed, with the reason
    assert info["fid"]["computed"] is False and "pt_inception" in info["fid"]["reason"]
    assert "FID not computed" in html
    assert "Parameters and inference time" in html and (rep / "efficiency.md").exists()
    paper = pd.read_csv(rep / "paper_tables" / "ccsa_table4_tiny.csv")
    values = paper[paper["row"] == "value"]
    assert values["ours"].notna().sum() == 9, paper  # 3 methods × 3 metrics filled from our results
    assert set(paper["paper"].dropna()) >= {37.646, 0.0189}  # published cells beside ours


@pytest.mark.slow
def test_second_run_has_nothing_to_do(workflow_run):
    folder, _ = workflow_run
    out = _run([str(BIN / "snakemake"), "--cores", "2", "-n"], folder)
    assert "Nothing to be done" in out


@pytest.mark.slow
def test_dvc_repro_then_status_is_clean(workflow_run):
    folder, _ = workflow_run
    _run([str(BIN / "dvc"), "repro"], folder)
    status = _run([str(BIN / "dvc"), "status"], folder)
    assert "Data and pipelines are up to date" in status
    assert "Nothing to be done" in _run([str(BIN / "snakemake"), "--cores", "2", "-n"], folder)
    metrics = _run([str(BIN / "dvc"), "metrics", "show"], folder)
    assert "reports/metrics.json" in metrics and "tiny.pconv.psnr" in metrics
    # a few headline values, not the whole table: per method the "all"-bucket PSNR/SSIM/L1 (and their CI bounds)
    out = _run([str(BIN / "dvc"), "metrics", "show", "--json"], folder)
    shown = json.loads(out[out.index("{"):out.rindex("}") + 1])
    values = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]["tiny"]
    assert set(values) == {"copy-input", "biharmonic", "pconv"}
    headline = {"psnr", "ssim", "l1"}
    assert all(headline <= set(v) <= headline | {f"{m}_{b}" for m in headline for b in ("lo", "hi")} for v in values.values())
    _run([str(BIN / "dvc"), "plots", "show", "-o", "dvc_plots"], folder)
    page = (folder / "dvc_plots" / "index.html").read_text()
    assert "val_psnr" in page and "cdn.jsdelivr" not in page and "vegaEmbed" in page  # offline page


@pytest.mark.slow
def test_snakemake_report_is_one_self_contained_html(workflow_run):
    folder, _ = workflow_run
    _run([str(BIN / "snakemake"), "--report", "report.html"], folder)
    page = (folder / "report.html").read_text(errors="replace")
    assert len(page) > 100_000  # figures are embedded
    for name in ("table.csv", "samples_photos.png", "loss_curves_photos.png", "ccsa_table4_tiny.csv"):
        assert name in page, name


@pytest.mark.slow
def test_lint_is_clean(workflow_run):
    folder, _ = workflow_run
    out = _run([str(BIN / "snakemake"), "--lint"], folder)
    assert "Congratulations" in out


def _job_counts(dry_run_output: str) -> dict[str, int]:
    counts, in_stats = {}, False
    for line in dry_run_output.splitlines():
        if line.startswith("Job stats"):
            in_stats, counts = True, {}
            continue
        if in_stats:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif counts and not line.strip():
                in_stats = False
    return counts


@pytest.mark.slow
def test_papers_suite_dry_run_lists_every_download_train_and_evaluate_job(tmp_path):
    copy_workflow(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    out = _run([str(BIN / "snakemake"), "-n", "--config", "suite=papers"], tmp_path)
    counts = _job_counts(out)
    # sources: celeba, urban100, dtd, places365, NVIDIA masks, QD-IMD (Paris StreetView is a user folder)
    assert counts["fetch"] == 6
    for source in ("celeba", "urban100", "dtd", "places365", "nvidia-irregular-test", "qd-imd"):
        assert f"data/raw/{source}/.complete" in out
    assert counts["prepare"] == 6  # celeba-ccsa, urban100, dtd, celeba-sahn, places2-sahn, paris-sahn
    assert counts["masks"] == 3  # NVIDIA masks at 128 (CCSA) and 256 (SAHN), QD-IMD train at 256 (SAHN training)
    # one training and one evaluation job per (experiment, training set, learned model) of params.yaml
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    jobs = [(e, run["train"], m) for e in params["suites"]["papers"] for run in params["experiments"][e]["runs"]
            for m in params["experiments"][e]["models"] if params["models"][m]["arch"] not in ("copy_input", "biharmonic")]
    assert counts["train"] == len(jobs) and counts["evaluate"] == len(jobs)
    assert len(jobs) >= 7 + 12 + 3  # at least CCSA's 7, SAHN's 4 x 3 datasets, the ablation's 3
    # the papers' ASL teacher is a released checkpoint: no teacher job (only `kind: trained` trains one)
    assert counts.get("teacher", 0) == 0
    assert counts["efficiency"] == 3 and counts["report"] == 3
    assert "runs/ccsa-paper/celeba-ccsa/ccsa-res0att0-pub/model.pt" in out
    assert "results/sahn-paper/places2-sahn/sahn-pub/metrics.csv" in out
    assert "reports/experiments/sahn-paper-ablation/report.json" in out
