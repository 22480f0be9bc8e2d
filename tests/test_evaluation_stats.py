"""The 8-bit protocol, LPIPS, CIs in the summary, paired comparisons, and the table data
(significance marks, best sets) on a tiny project and on hand-made summaries."""
from __future__ import annotations

import json
import socket
import urllib.request

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from inpaintbench import paths
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.evaluate import evaluate_job, quantize
from inpaintbench.io import load_image, load_mask, read_csv
from inpaintbench.metrics.lpips_score import backbone_state_from_lpips, build_lpips, lpips_batch, lpips_status
from inpaintbench.metrics.quality import image_metrics
from inpaintbench.metrics.stats import BootstrapSettings, bootstrap_mean_ci, holm, wilcoxon_p
from inpaintbench.report import tables
from inpaintbench.report.aggregate import aggregate_experiment

from conftest import prepare_tiny


def _set(project, **blocks):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p.update(blocks)
    (project / "params.yaml").write_text(yaml.safe_dump(p))


@pytest.fixture
def pairs_ready(project):
    prepare_tiny(project, val=False)
    _set(project, fid={"enabled": False}, lpips={"enabled": False})
    return project


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# ---------------------------------------------------------------- 8-bit protocol
def test_quantised_metrics_equal_metrics_of_the_png_on_disk(pairs_ready):
    p = yaml.safe_load((pairs_ready / "params.yaml").read_text())
    p["experiments"]["tiny"]["samples_per_bucket"] = 3  # every pair saved
    (pairs_ready / "params.yaml").write_text(yaml.safe_dump(p))
    out = evaluate_job(load_params(), "tiny", "photos", "biharmonic")  # smooth fill: not 8-bit by itself
    pairs = {r["pair_id"]: r for r in read_csv(paths.pairs_csv("tiny", "photos", "test"))}
    rows = [r for r in read_csv(out) if r["dataset"] == "photos"]
    assert rows
    for r in rows:
        png = paths.result_dir("tiny", "photos", "biharmonic") / "samples" / "photos" / f"{r['pair_id']}.png"
        p = pairs[r["pair_id"]]
        m = image_metrics(load_image(png), load_image(p["image_path"]), load_mask(p["mask_path"], 32))
        for k, v in m.items():
            assert float(r[k]) == pytest.approx(v, abs=1.5e-6), k
    assert json.loads((out.parent / "eval_status.json").read_text())["quantize"] == "uint8"


def test_quantize_is_the_png_rounding_and_none_keeps_floats(tmp_path):
    from inpaintbench.io import save_image

    x = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    save_image(tmp_path / "a.png", x)
    assert np.array_equal(quantize(x), load_image(tmp_path / "a.png"))
    assert np.array_equal(quantize(x, "none"), x)


def test_quantize_none_changes_the_scores(pairs_ready):
    a = pd.read_csv(evaluate_job(load_params(), "tiny", "photos", "biharmonic"))
    _set(pairs_ready, evaluation={"quantize": "none"})
    b = pd.read_csv(evaluate_job(load_params(), "tiny", "photos", "biharmonic"))
    assert not np.allclose(a["l1"], b["l1"], rtol=0, atol=1e-9)
    assert np.allclose(a["l1"], b["l1"], atol=1 / 255)


# ---------------------------------------------------------------- LPIPS
def test_lpips_equals_the_package_with_a_seeded_backbone_from_the_cache(tmp_path, monkeypatch, no_network):
    import lpips

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(7)
    ref = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()  # seeded random trunk
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(backbone_state_from_lpips(ref), ckpt)  # torchvision's key layout
    ok, reason = lpips_status({"enabled": "auto"})
    assert ok and "AlexNet" in reason and str(ckpt) in reason and "lpips package" in reason
    ours = build_lpips({})
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 64, 64, 3)), rng.random((2, 64, 64, 3))
    with torch.no_grad():
        expected = ref(torch.from_numpy(a).float().permute(0, 3, 1, 2) * 2 - 1,
                       torch.from_numpy(b).float().permute(0, 3, 1, 2) * 2 - 1).flatten().numpy()
    got = lpips_batch(ours, a, b)
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got[0] > 0 and lpips_batch(ours, a[:1], a[:1])[0] == pytest.approx(0.0, abs=1e-6)


def test_lpips_missing_backbone_auto_reason_true_error(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    ok, reason = lpips_status({"enabled": "auto"})
    assert not ok and reason.startswith("LPIPS not computed") and "alexnet-owt-7be5be79.pth" in reason
    assert lpips_status({"enabled": False}) == (False, "LPIPS not computed: disabled in params.yaml (lpips.enabled: false).")
    with pytest.raises(InpaintBenchError, match=r"alexnet-owt-7be5be79\.pth.*checkpoints"):
        lpips_status({"enabled": True})


def test_lpips_reaches_metrics_csv_and_the_summary(pairs_ready, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(backbone_state_from_lpips(build_lpips(random_backbone_seed=3)), ckpt)
    _set(pairs_ready, lpips={"enabled": True})
    params = load_params()
    params.raw["experiments"]["tiny"]["models"] = ["biharmonic"]
    params.raw["experiments"]["tiny"]["runs"][0]["eval"] = ["photos"]
    evaluate_job(params, "tiny", "photos", "biharmonic")
    rows = pd.read_csv(paths.metrics_csv("tiny", "photos", "biharmonic"))
    assert rows["lpips"].notna().all() and (rows["lpips"] > 0).all()
    summary = pd.read_csv(aggregate_experiment(params, "tiny"))
    assert "lpips" in set(summary["metric"])


# ---------------------------------------------------------------- summary CIs and paired comparisons
def test_summary_cis_and_paired_comparisons_match_direct_computations(pairs_ready):
    params = load_params()
    params.raw["experiments"]["tiny"]["models"] = ["copy-input", "biharmonic"]
    for m in ("copy-input", "biharmonic"):
        evaluate_job(params, "tiny", "photos", m)
    summary = pd.read_csv(aggregate_experiment(params, "tiny"))
    per = {m: pd.read_csv(paths.metrics_csv("tiny", "photos", m), dtype={"pair_id": str}) for m in ("copy-input", "biharmonic")}
    s = BootstrapSettings()
    x = per["biharmonic"][per["biharmonic"]["dataset"] == "textures"]
    row = summary[(summary.model == "biharmonic") & (summary.dataset == "textures") & (summary.bucket == "all") & (summary.metric == "psnr")].iloc[0]
    lo, hi = bootstrap_mean_ci(x["psnr"].to_numpy(), s)
    assert row["count"] == 6 and row["lo"] == pytest.approx(lo, abs=1e-6) and row["hi"] == pytest.approx(hi, abs=1e-6)
    assert row["lo"] <= row["mean"] <= row["hi"]
    paired = pd.read_csv(paths.summary_csv("tiny").parent / "paired.csv")
    r = paired[(paired.dataset == "textures") & (paired.bucket == "all") & (paired.metric == "l1")].iloc[0]
    assert (r.model, r.other) == ("copy-input", "biharmonic")
    a = per["copy-input"][per["copy-input"].dataset == "textures"].set_index("pair_id")
    b = per["biharmonic"][per["biharmonic"].dataset == "textures"].set_index("pair_id")
    d = a["l1"] - b.loc[a.index, "l1"]
    assert r["diff"] == pytest.approx(d.mean(), rel=1e-5) and r["n"] == 6
    assert r["p"] == pytest.approx(wilcoxon_p(d.to_numpy())[0], rel=1e-4)
    assert r["diff"] > 0  # black holes are worse than a smooth fill


# ---------------------------------------------------------------- table data
def _summary_and_paired(seed=0, n=30):
    """Three methods on n images: 'good' clearly better than 'ref', 'same' indistinguishable."""
    rng = np.random.default_rng(seed)
    base = rng.normal(25, 2, n)
    scores = {"ref": base, "good": base + 1.0 + rng.normal(0, 0.2, n), "same": base + rng.normal(0, 0.2, n)}
    from inpaintbench.report.aggregate import paired_table, summarise

    per = pd.DataFrame([{"experiment": "e", "train": "t", "dataset": "d", "model": m, "pair_id": str(i),
                         "bucket": "(0.1, 0.3]", "psnr": v[i], "ssim": 0.5, "l1": 0.1, "l1_hole": 0.2, "lpips": np.nan}
                        for m, v in scores.items() for i in range(n)])
    return summarise(per, ["(0.1, 0.3]"]), paired_table(per, ["ref", "good", "same"], ["(0.1, 0.3]"]), scores


def test_table_data_marks_significance_and_best_sets():
    summary, paired, scores = _summary_and_paired()
    data = tables.table_data(summary, "d", ["ref", "good", "same"], ["(0.1, 0.3]", "all"], ["psnr", "ssim"],
                             {"ref": "Reference"}, paired=paired, reference="ref", ci="95% percentile bootstrap")
    cells = {r["model"]: r["cells"]["psnr"]["(0.1, 0.3]"] for r in data["rows"]}
    assert cells["good"]["sig"] == "better" and cells["same"]["sig"] == "" and cells["ref"]["sig"] == ""
    assert cells["good"]["best"] and not cells["same"]["best"] and not cells["ref"]["best"]
    assert cells["good"]["diff"] == pytest.approx(float(np.mean(scores["good"] - scores["ref"])))
    # Holm over the table: 2 methods x 2 metrics x 2 buckets; SSIM differences are all zero (p = 1)
    raw = [wilcoxon_p(scores[m] - scores["ref"])[0] for m in ("good", "same")]
    fam = holm([raw[0], 1.0, raw[0], 1.0, raw[1], 1.0, raw[1], 1.0])
    assert cells["good"]["p_holm"] == pytest.approx(fam[0], rel=1e-4)
    assert cells["same"]["p_holm"] == pytest.approx(fam[4], rel=1e-4)
    # identical SSIM for everyone: all three in the best set
    assert all(r["cells"]["ssim"]["all"]["best"] for r in data["rows"])
    assert data["buckets"][0] == {"bucket": "(0.1, 0.3]", "n": 30}
    assert json.loads(json.dumps(data)) == data  # JSON-able for the HTML renderer


def test_renderers_show_ci_marks_bold_and_n(tmp_path):
    summary, paired, _ = _summary_and_paired()
    md = tables.write_experiment_tables(summary, tmp_path, "e", ["ref", "good", "same"], ["(0.1, 0.3]", "all"],
                                        ["psnr"], ["d"], {}, paired=paired, reference="ref", ci="95% percentile bootstrap")["d"]
    good = summary[(summary.model == "good") & (summary.bucket == "all") & (summary.metric == "psnr")].iloc[0]
    cell = f"**{good['mean']:.2f} [{good['lo']:.2f}, {good['hi']:.2f}]▲**"
    assert cell in md and "(0.1, 0.3] (n=30)" in md and "ref (ref.)" in md and "Holm" in md
    tex = (tmp_path / "table.tex").read_text()
    assert rf"\textbf{{{good['mean']:.2f}}}" in tex and r"\blacktriangle" in tex and "amssymb" in tex
    csv = pd.read_csv(tmp_path / "table.csv")
    g = csv[(csv.model == "good") & (csv.bucket == "all")].iloc[0]
    assert g["significance"] == "better" and bool(g["best"]) and g["lo"] == pytest.approx(good["lo"], abs=1e-4)
    assert json.loads((tmp_path / "table.json").read_text())["d"]["reference"] == "ref"


def test_paper_table_gets_cis_marks_and_best_set():
    from inpaintbench.report.paper_tables import build_paper_table, to_latex, to_markdown

    summary, paired, _ = _summary_and_paired()
    spec = {"paper": "ccsa", "table": "4", "dataset": "d", "bucket": "(0.1, 0.3]", "metrics": ["psnr"],
            "methods": {"good": "RES1ATT1", "same": "RES0ATT1", "ref": "RES0ATT0"}, "reference": "ref"}
    pt = build_paper_table(summary, spec, "t4", paired=paired)
    v = pt.tidy[pt.tidy["row"] == "value"].set_index("model")
    assert v.loc["good", "sig"] == "better" and v.loc["same", "sig"] == "" and bool(v.loc["good", "best_ours"])
    assert not bool(v.loc["same", "best_ours"])
    md = to_markdown(pt)
    assert "▲" in md and "Wilcoxon" in md and f"[{v.loc['good', 'ours_lo']:.4f}, {v.loc['good', 'ours_hi']:.4f}]" in md
    assert r"\blacktriangle" in to_latex(pt)


# ---------------------------------------------------------------- FID/KID from saved features; dvc metrics
def test_fid_and_kid_with_cis_come_from_the_saved_features(pairs_ready):
    from inpaintbench.metrics.fid import frechet_distance_from_features
    from inpaintbench.metrics.kid import kid

    _set(pairs_ready, fid={"enabled": True, "random_init": True, "batch_size": 8, "input_size": 75, "ci_resamples": 50})
    params = load_params()
    params.raw["experiments"]["tiny"]["runs"][0]["eval"] = ["photos"]  # one dataset keeps the test short
    evaluate_job(params, "tiny", "photos", "biharmonic")
    d = paths.result_dir("tiny", "photos", "biharmonic")
    fid = pd.read_csv(d / "fid.csv")
    assert set(fid["metric"]) == {"fid", "kid"} and set(fid["bucket"]) == {"(0.1, 0.3]", "(0.3, 0.5]", "all"}
    saved = np.load(d / "features_photos.npz")
    assert saved["real"].shape == (6, 2048) and list(saved["bucket"]) == [r["bucket"] for r in read_csv(paths.pairs_csv("tiny", "photos", "test"))]
    row = fid[(fid.dataset == "photos") & (fid.bucket == "all")].set_index("metric")
    real, fake = saved["real"].astype(np.float64), saved["fake"].astype(np.float64)
    assert row.loc["fid", "mean"] == pytest.approx(frechet_distance_from_features(real, fake), rel=1e-3)
    assert row.loc["kid", "mean"] == pytest.approx(kid(real, fake), rel=1e-3, abs=1e-6)
    assert (row["lo"] <= row["hi"]).all() and row["count"].tolist() == [6, 6]
    # a second method: FID/KID paired comparisons from the saved features reach paired.csv
    evaluate_job(params, "tiny", "photos", "copy-input")
    params.raw["experiments"]["tiny"]["models"] = ["copy-input", "biharmonic"]
    aggregate_experiment(params, "tiny")
    paired = pd.read_csv(paths.summary_csv("tiny").parent / "paired.csv")
    sub = paired[(paired.metric == "fid") & (paired.bucket == "all")].iloc[0]
    other = pd.read_csv(paths.result_dir("tiny", "photos", "copy-input") / "fid.csv")
    fid_copy = other[(other.bucket == "all") & (other.metric == "fid")]["mean"].iloc[0]
    assert (sub.model, sub.other, sub.n) == ("copy-input", "biharmonic", 6)
    assert sub["diff"] == pytest.approx(fid_copy - row.loc["fid", "mean"], rel=1e-3)
    assert sub["lo"] <= sub["diff"] <= sub["hi"] and 0 < sub["p"] <= 1


def test_dvc_metrics_carry_the_ci_bounds(pairs_ready):
    from inpaintbench.report.build import _dvc_metrics_and_plots

    params = load_params()
    params.raw["experiments"]["tiny"]["models"] = ["copy-input"]
    params.raw["experiments"]["tiny"]["runs"][0]["eval"] = ["photos"]
    evaluate_job(params, "tiny", "photos", "copy-input")
    summary = pd.read_csv(aggregate_experiment(params, "tiny"))
    _dvc_metrics_and_plots(params, ["tiny"])
    metrics = json.loads((paths.REPORTS / "metrics.json").read_text())
    cell = next(iter(metrics["tiny"].values()))
    assert {"psnr", "psnr_lo", "psnr_hi"} <= set(cell) and cell["psnr_lo"] <= cell["psnr"] <= cell["psnr_hi"]
    assert len(summary)
