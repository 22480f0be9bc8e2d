"""DVC as a user meets it: `dvc exp run --dry` on a fresh clone, one chart per curve overlaying the
models, an offline `dvc plots show` page, a few headline metrics."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, copy_dvc_settings, copy_workflow, python_env, tiny_params, write_params
from inpaintbench import paths
from inpaintbench.config import load_params
from inpaintbench.report.build import _dvc_metrics_and_plots

BIN = Path(sys.executable).parent


def _run(cmd, cwd, ok=True):
    env = python_env({**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"})
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert out.returncode == 0, f"{' '.join(map(str, cmd))}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _repo(folder: Path) -> None:
    _run(["git", "init", "-q"], folder)
    _run(["git", "config", "user.email", "t@example.com"], folder)
    _run(["git", "config", "user.name", "t"], folder)
    _run([BIN / "dvc", "init", "-q"], folder)
    copy_dvc_settings(folder)


def test_exp_run_dry_works_on_a_fresh_clone(tmp_path):
    # nothing has run: data/, runs/, results/ do not exist (as in the temporary copy `--dry` uses)
    copy_workflow(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    _repo(tmp_path)
    _run(["git", "add", "-A"], tmp_path)
    _run(["git", "commit", "-q", "-m", "clone"], tmp_path)
    out = _run([BIN / "dvc", "exp", "run", "--dry", "-S", "training.epochs=1"], tmp_path)
    assert "snakemake --cores all" in out.stdout, out.stdout + out.stderr
    assert _run(["git", "status", "--porcelain", "params.yaml"], tmp_path).stdout == ""  # dry: untouched


LEARNED = ["pconv", "pconv-b", "pconv-c"]


@pytest.fixture
def curves(project):
    """Per-epoch validation files of three learned models and a summary, as the workflow writes them."""
    p = tiny_params(models=["copy-input", *LEARNED],
                    extra_models={m: {"arch": "pconv_unet", "label": f"PConv {m[-1].upper()}", "args": {"base": 8, "depth": 3}}
                                  for m in LEARNED[1:]})
    write_params(project, p)
    params = load_params()
    for i, m in enumerate(LEARNED):
        d = paths.run_dir("tiny", "photos", m)
        d.mkdir(parents=True)
        pd.DataFrame({"epoch": [1, 2, 3], "step": [3, 6, 9], "val_psnr": [20.0 + i, 21.0 + i, 22.0 + i],
                      "val_ssim": [0.5, 0.6, 0.7], "val_l1": [0.1, 0.09, 0.08], "val_l1_hole": [0.3, 0.2, 0.1],
                      "train_loss": [1.0, 0.9, 0.8]}).to_csv(d / "epochs.csv", index=False)
    rows = [{"experiment": "tiny", "train": "photos", "dataset": ds, "model": m, "bucket": b, "metric": k,
             "mean": 1.0 + j, "std": 0.1, "count": 3}
            for j, m in enumerate(["copy-input", *LEARNED]) for ds in ("photos", "textures")
            for b in ("(0.1, 0.3]", "(0.3, 0.5]", "all") for k in ("psnr", "ssim", "l1", "l1_hole")]
    paths.summary_csv("tiny").parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(paths.summary_csv("tiny"), index=False)
    _dvc_metrics_and_plots(params, ["tiny"])
    return project


def test_headline_metrics_are_few(curves):
    metrics = json.loads((curves / "reports" / "metrics.json").read_text())
    # per experiment and method: the "all" bucket PSNR/SSIM/L1 of the first evaluation dataset
    assert set(metrics) == {"tiny"}
    assert set(metrics["tiny"]) == {"copy-input", "pconv", "PConv B", "PConv C"}
    assert all(set(v) == {"psnr", "ssim", "l1"} for v in metrics["tiny"].values())


def test_plots_overlay_every_model_in_one_chart_per_curve_offline(curves):
    shutil.copy(ROOT / "dvc.yaml", curves / "dvc.yaml")
    _repo(curves)
    out = _run([BIN / "dvc", "plots", "show", "--json"], curves)
    shown = json.loads(out.stdout)["data"]
    charts = {k: v for k, v in shown.items() if k.startswith("reports/plots/")}
    assert set(charts) == {f"reports/plots/{c}/tiny.csv" for c in ("val_psnr", "val_ssim", "val_l1")}, list(shown)
    for name, chart in charts.items():
        (spec,) = chart
        content = spec["content"]
        assert content["encoding"]["color"]["field"] == "model"
        assert content["encoding"]["x"]["axis"]["tickMinStep"] == 1  # whole epochs
        assert "(" in content["encoding"]["y"]["title"] or "SSIM" in content["encoding"]["y"]["title"]  # units
        rows = content["data"]["values"]
        assert {r["model"] for r in rows} == {"pconv", "PConv B", "PConv C"}, name
    _run([BIN / "dvc", "plots", "show", "-o", "dvc_plots"], curves)
    page = (curves / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "<script src" not in page  # Vega inlined: renders offline
    assert "vegaEmbed" in page and "PConv B" in page


def _dvc_rewrite_changes(path: Path, override: str) -> list[str]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from normalize_params_for_dvc import changed_lines, dvc_rewrite

    return changed_lines(path.read_text(encoding="utf-8"), dvc_rewrite(path, override))


def test_params_yaml_has_no_anchors():
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    code = "\n".join(line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    import re

    assert not re.search(r"(^|[\s\[{,:])[&*][A-Za-z_]", code) and "<<:" not in code


def test_set_param_rewrites_only_the_line_it_sets():
    # exactly what `dvc exp run -S training.epochs=1` does to params.yaml before running
    diff = _dvc_rewrite_changes(ROOT / "params.yaml", "training.epochs=1")
    assert diff == ["-  epochs: 4", "+  epochs: 1"], "\n".join(diff[:40])
    # a key inside a model's flow mapping, and a no-op: the file is DVC's fixed point
    diff = _dvc_rewrite_changes(ROOT / "params.yaml", "models.pconv.args.depth=3")
    assert diff == ["-    args: {base: 16, depth: 4}", "+    args: {base: 16, depth: 3}"], "\n".join(diff[:40])
    seed = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["seed"]
    assert _dvc_rewrite_changes(ROOT / "params.yaml", f"seed={seed}") == []


@pytest.mark.slow
def test_exp_run_set_param_on_a_tiny_project(tmp_path):
    """`dvc exp run -S training.epochs=1` for real on the tiny config: the experiment's commit
    changes one params line, and `dvc exp show` reads its metrics (no `!`)."""
    copy_workflow(tmp_path)
    write_params(tmp_path, tiny_params())
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    _repo(tmp_path)
    _run(["git", "add", "-A"], tmp_path)
    _run(["git", "commit", "-q", "-m", "tiny"], tmp_path)
    env_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = env_uri
    try:
        _run([BIN / "dvc", "exp", "run", "-S", "training.epochs=1", "-n", "one-epoch"], tmp_path)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    diff = _run(["git", "diff", "--unified=0", "HEAD", "--", "params.yaml"], tmp_path).stdout
    changed = [l for l in diff.splitlines() if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    assert changed == ["-  epochs: 2", "+  epochs: 1"], diff
    shown = json.loads(_run([BIN / "dvc", "exp", "show", "--json"], tmp_path).stdout)
    text = json.dumps(shown)
    assert "one-epoch" in text and "reports/metrics.json" in text
    assert '"error"' not in text.split("reports/metrics.json", 1)[1][:400], text[:2000]
