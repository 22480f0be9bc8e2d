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
from .paper_tables import metric_definitions

METRICS = ["psnr", "ssim", "l1", "l1_hole", "lpips", "fid", "kid"]


def _labels(params, models: list[str]) -> dict[str, str]:
    return {m: params.model(m).get("label", m) for m in models}


def _fid_status(experiment: str, exp: dict) -> dict:
    for run in exp["runs"]:
        for m in exp["models"]:
            f = paths.result_dir(experiment, run["train"], m) / "fid_status.json"
            if f.exists():
                return json.loads(f.read_text())
    return {"computed": False, "reason": "FID not computed: no evaluation has recorded an FID status."}


def _efficiency(experiment: str, out_dir: Path) -> tuple[pd.DataFrame | None, str]:
    """The Table-3-style efficiency table (parameters, inference ms, device) as Markdown."""
    f = paths.RESULTS / experiment / "efficiency.csv"
    if not f.exists():
        return None, ""
    eff = pd.read_csv(f)
    shown = pd.DataFrame({
        "method": eff["label"],
        "parameters (this run)": eff["params"].map(lambda v: f"{int(v):,}"),
        f"inference ms @{int(eff['size'].iloc[0])}px": eff["ms"].map(_ms_text),
        "parameters (published setting)": eff["params_paper"].map(lambda v: "" if pd.isna(v) or v == "" else f"{int(v):,}"),
        "inference ms (published setting)": eff["ms_paper"].map(lambda v: "" if pd.isna(v) or v == "" else f"{v:.2f}"),
    })
    for col in [c for c in eff.columns if c.startswith("ms_") and c[3:].isdigit()]:
        shown.insert(3, f"inference ms @{col[3:]}px", eff[col].map(_ms_text))
    shown["device"] = eff["device_name"]  # every timing beside the device it was measured on
    md = shown.to_markdown(index=False) + "\n\nBatch 1, mean of the timed runs, on the device named in each row.\n"
    write_text(out_dir / "efficiency.md", md)
    return eff, md


def _ms_text(v) -> str:
    return "not timed" if pd.isna(v) or v == "" else f"{float(v):.2f}"


def _timing_note(eff: pd.DataFrame | None, methods) -> str:
    """The device behind a paper table's inference times (the papers' are GPU milliseconds)."""
    if eff is None:
        return ""
    rows = eff[eff["model"].isin(list(methods))]
    devices = sorted(set(rows["device_name"].astype(str)))
    return ("Inference times: " + "; ".join(f"{', '.join(rows[rows['device_name'] == d]['label'])}: {d}" for d in devices)
            + " (the papers time on their GPUs).") if devices else ""


def _efficiency_as_summary(eff: pd.DataFrame | None, experiment: str) -> pd.DataFrame:
    """Efficiency rows in summary form (dataset and bucket '-') for the papers' efficiency tables:
    parameters in millions of the published setting (when declared), inference ms of it when timed."""
    rows = []
    if eff is not None:
        for _, r in eff.iterrows():
            has_paper = not (pd.isna(r["params_paper"]) or r["params_paper"] == "")
            params_m = float(r["params_paper"] if has_paper else r["params"]) / 1e6
            rows.append({"experiment": experiment, "train": "-", "dataset": "-", "model": r["model"], "bucket": "-",
                         "metric": "params_m", "mean": params_m, "std": float("nan"), "count": 1})
            ms = r["ms_paper"] if has_paper else r["ms"]
            if not (pd.isna(ms) or ms == ""):
                rows.append({"experiment": experiment, "train": "-", "dataset": "-", "model": r["model"], "bucket": "-",
                             "metric": "inference_ms", "mean": float(ms), "std": float("nan"), "count": 1})
    return pd.DataFrame(rows)


def build_experiment(params, experiment: str) -> dict:
    from .paper_tables import build_paper_table, to_markdown, write_paper_table

    exp = params.experiment(experiment)
    out_dir = paths.report_dir(experiment)
    summary = pd.read_csv(paths.summary_csv(experiment))
    buckets = [b.label for b in params.buckets(experiment)] + ["all"]
    models = exp["models"]
    labels = _labels(params, models)
    datasets = list(dict.fromkeys(ds for run in exp["runs"] for ds in run["eval"]))
    metrics = [m for m in METRICS if m in set(summary["metric"])]
    md_by_ds = tables.write_experiment_tables(summary, out_dir, experiment, models, buckets, metrics, datasets, labels,
                                               **tables.statistics(params, experiment))  # CIs, paired tests (H5)
    fid = _fid_status(experiment, exp)
    eff, eff_md = _efficiency(experiment, out_dir)
    paper_md, substitutes = {}, {}
    (out_dir / "paper_tables").mkdir(parents=True, exist_ok=True)  # a declared output, even when empty
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    full = pd.concat([summary, _efficiency_as_summary(eff, experiment)], ignore_index=True)
    for spec in exp.get("tables", []):
        spec = dict(spec)
        name = spec.pop("name")
        pt = build_paper_table(full, spec, name, **tables.paper_statistics(params, experiment))
        write_paper_table(pt, out_dir / "paper_tables", name)
        paper_md[name] = to_markdown(pt)
        note = _substitutes_note(params, experiment, spec.get("methods", {}))
        if "inference_ms" in spec.get("metrics", []):
            note = " ".join(t for t in (note, _timing_note(eff, spec.get("methods", {}))) if t)
        substitutes[name] = note
        if note:  # every offline substitute behind this table's numbers, named beside it
            paper_md[name] += "\n\n" + note + "\n"
            md_file = out_dir / "paper_tables" / f"{name}.md"
            if md_file.exists():
                write_text(md_file, md_file.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + note + "\n")
    figures = []
    fig_dir = out_dir / "figures"
    for run in exp["runs"]:
        learned = [m for m in models if params.is_learned(m)]
        histories, epochs = {}, {}
        for m in learned:
            rd = paths.run_dir(experiment, run["train"], m)
            histories[labels[m]] = pd.read_csv(rd / "history.csv")
            epochs[labels[m]] = pd.read_csv(rd / "epochs.csv")
        if histories:
            f = fig_dir / f"loss_curves_{run['train']}.png"
            plots.loss_curves(histories, f, f"{experiment}: training loss (trained on {run['train']})")
            figures.append((f, "Training loss per step (smoothed), one line per learned model."))
            f = fig_dir / f"val_curves_{run['train']}.png"
            plots.epoch_curves(epochs, f, f"{experiment}: validation PSNR and L1 per epoch (trained on {run['train']})")
            figures.append((f, "Validation PSNR and L1 after each epoch, on the fixed validation pairs."))
            ccsa = [m for m in learned if params.model(m)["arch"] == "ccsa"]
            if ccsa:
                f = fig_dir / f"ccsa_variants_{run['train']}.png"
                plots.epoch_curves({labels[m]: epochs[labels[m]] for m in ccsa}, f,
                                   f"{experiment}: CCSA variants, validation PSNR and L1 per epoch (Figures 4-5)")
                figures.append((f, "The CCSA ablation variants' validation PSNR (paper Figure 4) and L1 (Figure 5) per epoch."))
            for group, keys, title in _loss_panels(params, learned, labels):
                f = fig_dir / f"loss_terms_{group}_{run['train']}.png"
                plots.loss_curves({labels[m]: histories[labels[m]] for m in keys}, f, f"{experiment}: {title}",
                                  LOSS_PANELS[group][1], per_epoch=True)
                figures.append((f, title))
        for ds in run["eval"]:
            f = fig_dir / f"metric_vs_bucket_{ds}.png"
            plots.metric_vs_bucket(summary, ds, models, buckets[:-1], metrics, f, f"{experiment}: {ds}", labels)
            figures.append((f, f"Mean metric per hole-ratio bucket on {ds}."))
            f = fig_dir / f"samples_{ds}.png"
            _sample_grid(params, experiment, run["train"], ds, models, labels, f)
            figures.append((f, f"Qualitative samples on {ds}: masked input (holes white), each method, ground truth."))
    info = {"experiment": experiment, "description": exp.get("description", ""), "datasets": datasets,
            "figures": [[str(p.relative_to(paths.REPORTS)), cap] for p, cap in figures],
            "tables": {ds: md for ds, md in md_by_ds.items()}, "paper_tables": paper_md,
            "table_data": json.loads((out_dir / "table.json").read_text()),  # structured cells (report.tables)
            "efficiency": eff_md,
            "fid": fid, "perceptual_backbone": _backbone_text(params.perceptual(experiment)),
            "paper_table_substitutes": substitutes,
            "models": {m: _model_info(params, experiment, exp, m) for m in models}}
    write_json(out_dir / "report.json", info)
    return info


def _substitutes_note(params, experiment: str, methods) -> str:
    """'Substitutes used: ...' for the learned methods of one paper table (preflight.SUBSTITUTES):
    the perceptual backbone and teacher each method trained with, when not the paper's."""
    from ..preflight import substitutes_used

    used: dict[str, list[str]] = {}
    for m in methods:
        if m not in params.raw["models"] or not params.is_learned(m):
            continue
        teacher = params.teacher(experiment) if "teacher" in params.model(m).get("requires", []) else None
        for text in substitutes_used(params.perceptual(experiment), teacher):
            used.setdefault(text, []).append(params.model(m).get("label", m))
    if not used:
        return ""
    return "Substitutes used (not the papers' parts): " + "; ".join(
        f"{text} [{', '.join(who)}]" for text, who in used.items()) + "."


def _backbone_text(cfg: dict) -> str:
    name = cfg.get("backbone", "random-vgg16")
    if name == "random-vgg16":
        return (f"random-vgg16 (width {cfg.get('width', 1.0)}): a seeded, untrained VGG16-shaped network standing in "
                "for the ImageNet VGG16 of the papers' perceptual/style losses (and for LaMa's segmentation network); "
                "put vgg16-397923af.pth in the torch.hub cache and set perceptual.backbone: vgg16 for the papers' loss")
    return name


# Loss terms per family, for the figures beside the total loss (SAHN's Figure 5: perceptual,
# generator, discriminator and L1 losses per step).
LOSS_PANELS = {
    "sahn": ("SAHN loss terms per epoch (Figure 5: perceptual, generator, discriminator, L1)",
             ["perceptual", "adv_g", "d_loss", "l1"]),
    "edgeconnect": ("EdgeConnect stage losses per epoch (edge stage, then image stage)",
                    ["edge_fm", "d_edge", "img_l1", "d_image"]),
    "ccsa": ("CCSA variants: hole and valid L1 terms per epoch", ["hole", "valid", "perceptual", "style"]),
}


def _loss_panels(params, learned, labels):
    for arch, (title, _) in LOSS_PANELS.items():
        keys = [m for m in learned if params.model(m)["arch"] == arch]
        if keys:
            yield arch, keys, title


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
             "<h1>inpaintbench report</h1>"]
    infos = {e: json.loads((paths.report_dir(e) / "report.json").read_text()) for e in experiments}
    fid = next(iter(infos.values()))["fid"] if infos else {"computed": False, "reason": ""}
    parts.append(_md_inline(metric_definitions((fid["computed"], fid["reason"]), **tables.definition_settings(params, experiments))))
    for e, info in infos.items():
        parts.append(f"<h2 id='{html.escape(e)}'>{html.escape(e)}</h2><p>{html.escape(info['description'])}</p>")
        parts.append(f"<p><b>FID:</b> {html.escape(info['fid']['reason'])}</p>")
        parts.append(f"<p>Perceptual-loss backbone used in training: <code>{html.escape(info['perceptual_backbone'])}</code>. "
                     f"Tables: <a href='experiments/{e}/table.md'>Markdown</a>, <a href='experiments/{e}/table.tex'>LaTeX</a>, <a href='experiments/{e}/table.csv'>CSV</a>.</p>")
        for ds, md in info["tables"].items():
            parts.append(f"<h3>{html.escape(ds)}</h3>" + "".join(_markdown_table_to_html(block) for block in md.split("\n\n")))
        for name, md in info.get("paper_tables", {}).items():
            parts.append(f"<h3>Paper layout: {html.escape(name)}</h3>" + _md_document_to_html(md)
                         + f"<p><a href='experiments/{e}/paper_tables/{name}.tex'>LaTeX</a> · <a href='experiments/{e}/paper_tables/{name}.csv'>CSV</a></p>")
        if info.get("efficiency"):
            parts.append("<h3>Parameters and inference time</h3>" + _md_document_to_html(info["efficiency"]))
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
    _dvc_metrics_and_plots(params, experiments)
    out = paths.REPORTS / "index.html"
    write_text(out, "\n".join(parts))
    return out


def _dvc_metrics_and_plots(params, experiments: list[str]) -> None:
    """What DVC shows: reports/metrics.json for `dvc metrics show` (per experiment and method, the
    "all"-bucket PSNR/SSIM/L1 on the experiment's first evaluation dataset: a few columns, not the
    whole table, which is each experiment's table.csv), reports/plots/<curve>/<experiment>.csv for
    `dvc plots show` (one row per model and epoch, so the `by_model` template draws all models of an
    experiment in one chart), and reports/dvc_plots_offline.html, the page template with Vega
    inlined that .dvc/config names (the default template loads Vega from a CDN)."""
    import shutil

    metrics: dict = {}
    for e in experiments:
        exp = params.experiment(e)
        main_ds = exp["runs"][0]["eval"][0]
        labels = _labels(params, exp["models"])
        summary = pd.read_csv(paths.summary_csv(e))
        sel = summary[(summary["bucket"] == "all") & (summary["dataset"] == main_ds) & summary["metric"].isin(HEADLINE)]
        for r in sel.itertuples():
            metrics.setdefault(e, {}).setdefault(labels.get(r.model, r.model), {})[r.metric] = round(float(r.mean), 4)
    write_json(paths.REPORTS / "metrics.json", metrics)
    plot_dir = paths.REPORTS / "plots"
    if plot_dir.exists():
        shutil.rmtree(plot_dir)
    for e in experiments:
        exp = params.experiment(e)
        labels = _labels(params, exp["models"])
        frames = []
        for run in exp["runs"]:
            for m in exp["models"]:
                f = paths.run_dir(e, run["train"], m) / "epochs.csv"
                if not params.is_learned(m) or not f.exists():
                    continue
                name = labels[m] if len(exp["runs"]) == 1 else f"{labels[m]} (trained on {run['train']})"
                frames.append(pd.read_csv(f).assign(model=name, train=run["train"]))
        if not frames:
            continue
        curves = pd.concat(frames, ignore_index=True)
        for col in ("val_psnr", "val_ssim", "val_l1"):
            if col in curves:
                write_text(plot_dir / col / f"{e}.csv", curves[["model", "train", "epoch", col]].to_csv(index=False))
    write_text(paths.REPORTS / "dvc_plots_offline.html", offline_plots_template())


HEADLINE = ("psnr", "ssim", "l1")


def offline_plots_template() -> str:
    """An HTML page template for `dvc plots show` with vega, vega-lite and vega-embed inlined from
    the copies Snakemake ships (its report uses them offline), instead of DVC's CDN script tags.
    It has no {scripts} placeholder, so DVC's CDN tags are left out."""
    from importlib.resources import files

    assets = files("snakemake.assets") / "data"
    scripts = "\n".join(f"<script>{(assets / lib / f'{lib}.js').read_text(encoding='utf-8')}</script>"
                        for lib in ("vega", "vega-lite", "vega-embed"))
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset='utf-8'>\n<title>inpaintbench: DVC plots</title>\n"
            f"{scripts}\n<style>body{{font-family:system-ui,sans-serif}}table{{border-spacing:15px}}</style>\n"
            "</head>\n<body>\n<h1>Validation curves per experiment (one line per model)</h1>\n{plot_divs}\n</body>\n</html>\n")


def _md_inline(text: str) -> str:
    """Escape, then render **bold** and `code` of a Markdown paragraph."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return f"<p>{out}</p>"


def _md_document_to_html(md: str) -> str:
    """Tables and paragraphs of a small Markdown document (what the table writers produce)."""
    parts = []
    for block in md.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if len(lines) >= 2 and lines[0].lstrip().startswith("|") and set(lines[1].replace("|", "").strip()) <= set(":- "):
            parts.append(_markdown_table_to_html(block))
        elif block.strip():
            parts.append(_md_inline(block.strip().lstrip("#").strip()) if not block.startswith("#") else
                         f"<h4>{html.escape(block.lstrip('#').strip())}</h4>")
    return "".join(parts)


def _markdown_table_to_html(md: str) -> str:
    lines = [l.strip() for l in md.strip().splitlines() if l.strip()]
    if len(lines) < 2:
        return ""
    cells = lambda l: [c.strip() for c in l.strip("|").split("|")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(l)) + "</tr>" for l in lines[2:])
    return f"<table><tr>{head}</tr>{body}</table>"
