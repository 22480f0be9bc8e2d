"""Render one experiment's report folder and the reports/index.html that shows them all.

Everything is read from results and run files (summary.csv, history.csv, epochs.csv, samples),
never from MLflow, so a report can be rebuilt from DVC-tracked outputs alone.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from .. import paths
from ..io import load_image, read_csv, write_json, write_text
from . import plots, tables

METRICS = ["psnr", "ssim", "l1", "l1_hole"]
DEFINITIONS = (
    "All metrics score the composite out = pred·mask + image·(1−mask) against the ground truth, images in [0, 1]. "
    "PSNR = 10·log10(1/MSE) over the full image (data range 1). SSIM: Wang et al. 2004 with an 11×11 Gaussian window "
    "(σ = 1.5), K1 = 0.01, K2 = 0.03, data range 1, per channel then averaged, mean over the un-padded region "
    "(equal to scikit-image structural_similarity with gaussian_weights=True, sigma=1.5, use_sample_covariance=False). "
    "L1 = mean absolute error over all pixels and channels (the papers' L1 / MAE); L1 hole = the same over hole pixels only. "
    "Buckets are intervals of the hole ratio of the binarised mask at the evaluated resolution; 'all' pools every bucket. "
    "Cells are mean ± sample standard deviation over the evaluated pairs."
)


def _labels(params, models: list[str]) -> dict[str, str]:
    return {m: params.model(m).get("label", m) for m in models}


def build_experiment(params, experiment: str) -> dict:
    exp = params.experiment(experiment)
    out_dir = paths.report_dir(experiment)
    summary = pd.read_csv(paths.summary_csv(experiment))
    buckets = [b.label for b in params.buckets(experiment)] + ["all"]
    models = exp["models"]
    labels = _labels(params, models)
    datasets = list(dict.fromkeys(ds for run in exp["runs"] for ds in run["eval"]))
    metrics = [m for m in METRICS if m in set(summary["metric"])]
    md_by_ds = tables.write_experiment_tables(summary, out_dir, experiment, models, buckets, metrics, datasets, labels)
    figures = []
    for run in exp["runs"]:
        learned = [m for m in models if params.is_learned(m)]
        histories, epochs = {}, {}
        for m in learned:
            rd = paths.run_dir(experiment, run["train"], m)
            histories[labels[m]] = pd.read_csv(rd / "history.csv")
            epochs[labels[m]] = pd.read_csv(rd / "epochs.csv")
        if histories:
            f = out_dir / f"loss_curves_{run['train']}.png"
            plots.loss_curves(histories, f, f"{experiment}: training loss (trained on {run['train']})")
            figures.append((f, "Training loss per step (smoothed), one line per learned model."))
            f = out_dir / f"val_curves_{run['train']}.png"
            plots.epoch_curves(epochs, f, f"{experiment}: validation PSNR and L1 per epoch (trained on {run['train']})")
            figures.append((f, "Validation PSNR and L1 after each epoch, on the fixed validation pairs."))
        for ds in run["eval"]:
            f = out_dir / f"metric_vs_bucket_{ds}.png"
            plots.metric_vs_bucket(summary, ds, models, buckets[:-1], metrics, f, f"{experiment}: {ds}", labels)
            figures.append((f, f"Mean metric per hole-ratio bucket on {ds}."))
            f = out_dir / f"samples_{ds}.png"
            _sample_grid(params, experiment, run["train"], ds, models, labels, f)
            figures.append((f, f"Qualitative samples on {ds}: masked input (holes white), each method, ground truth."))
    info = {"experiment": experiment, "description": exp.get("description", ""), "datasets": datasets,
            "figures": [[str(p.relative_to(paths.REPORTS)), cap] for p, cap in figures],
            "tables": {ds: md for ds, md in md_by_ds.items()},
            "perceptual_backbone": params.raw.get("perceptual", {}).get("backbone", "random-vgg16"),
            "models": {m: _model_info(params, experiment, exp, m) for m in models}}
    write_json(out_dir / "report.json", info)
    return info


def _model_info(params, experiment, exp, model) -> dict:
    spec = params.model(model)
    info = {"arch": spec["arch"], "label": spec.get("label", model), "learned": params.is_learned(model)}
    for run in exp["runs"]:
        rj = paths.run_dir(experiment, run["train"], model) / "run.json"
        if rj.exists():
            data = json.loads(rj.read_text())
            info.update({k: data.get(k) for k in ("trainable_parameters", "train_seconds", "steps", "device")})
    return info


def _sample_grid(params, experiment, train, dataset, models, labels, path: Path) -> None:
    pairs = read_csv(paths.pairs_csv(experiment, dataset, "test"))
    sample_dir = lambda m: paths.result_dir(experiment, train, m) / "samples" / dataset
    chosen, seen = [], set()
    for p in pairs:  # one pair per bucket, present for every model
        if p["bucket"] in seen:
            continue
        if all((sample_dir(m) / f"{p['pair_id']}.png").exists() for m in models):
            chosen.append(p)
            seen.add(p["bucket"])
    images = {labels[m]: [load_image(sample_dir(m) / f"{p['pair_id']}.png") for p in chosen] for m in models}
    plots.sample_grid(chosen, images, path, f"{experiment}: {dataset}")


def build_index(params, experiments: list[str]) -> Path:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>inpaintbench report</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
             "th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}figcaption{font-size:13px;color:#555}"
             "code{background:#f5f5f5;padding:1px 4px}</style></head><body>",
             "<h1>inpaintbench report</h1>", f"<p>{html.escape(DEFINITIONS)}</p>"]
    for e in experiments:
        info = json.loads((paths.report_dir(e) / "report.json").read_text())
        parts.append(f"<h2 id='{html.escape(e)}'>{html.escape(e)}</h2><p>{html.escape(info['description'])}</p>")
        parts.append(f"<p>Perceptual-loss backbone used in training: <code>{html.escape(info['perceptual_backbone'])}</code>. "
                     f"Tables: <a href='experiments/{e}/table.md'>Markdown</a>, <a href='experiments/{e}/table.tex'>LaTeX</a>, <a href='experiments/{e}/table.csv'>CSV</a>.</p>")
        for ds, md in info["tables"].items():
            parts.append(f"<h3>{html.escape(ds)}</h3>" + "".join(_markdown_table_to_html(block) for block in md.split("\n\n")))
        extra = paths.report_dir(e) / "extra.html"
        if extra.exists():
            parts.append(extra.read_text())
        for fig, cap in info["figures"]:
            parts.append(f"<figure><img src='{html.escape(fig)}' alt='{html.escape(cap)}'><figcaption>{html.escape(cap)}</figcaption></figure>")
        rows = "".join(
            "<tr><td style='text-align:left'>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(m), html.escape(v["arch"]),
                "" if v.get("trainable_parameters") is None else f"{v['trainable_parameters']:,}",
                "" if v.get("train_seconds") is None else v["train_seconds"])
            for m, v in info["models"].items())
        parts.append("<h3>Models</h3><table><tr><th>model</th><th>architecture</th><th>trainable parameters</th>"
                     f"<th>training seconds</th></tr>{rows}</table>")
    parts.append("</body></html>")
    out = paths.REPORTS / "index.html"
    write_text(out, "\n".join(parts))
    return out


def _markdown_table_to_html(md: str) -> str:
    lines = [l.strip() for l in md.strip().splitlines() if l.strip()]
    if len(lines) < 2:
        return ""
    cells = lambda l: [c.strip() for c in l.strip("|").split("|")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(l)) + "</tr>" for l in lines[2:])
    return f"<table><tr>{head}</tr>{body}</table>"
