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
from . import cost, plots, tables
from .aggregate import evaluated_models
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
    released_of = {run["train"]: params.run_released(experiment, run["train"]) for run in exp["runs"]}
    models = evaluated_models(params, experiment)  # a run's own released checkpoints after the experiment's models
    labels = _labels(params, models)
    datasets = list(dict.fromkeys(ds for run in exp["runs"] for ds in run["eval"]))
    metrics = [m for m in METRICS if m in set(summary["metric"])]
    md_by_ds = tables.write_experiment_tables(summary, out_dir, experiment, models, buckets, metrics, datasets, labels,
                                               models_of=_models_of(exp, released_of),
                                               **tables.statistics(params, experiment))  # CIs, paired tests (H5)
    fid = _fid_status(experiment, exp)
    eff, eff_md = _efficiency(experiment, out_dir)
    paper_md, substitutes, paper_data = {}, {}, {}
    (out_dir / "paper_tables").mkdir(parents=True, exist_ok=True)  # a declared output, even when empty
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    full = pd.concat([summary, _efficiency_as_summary(eff, experiment)], ignore_index=True)
    run = what_was_run(params, experiment)
    for spec in exp.get("tables", []):
        spec = dict(spec)
        name = spec.pop("name")
        extra = _released_rows(params, spec, name, exp, released_of, summary)
        if extra:  # a run's released checkpoints, scored on this table's datasets: extra rows under their labels
            spec["methods"] = {**spec["methods"], **extra}
        pt = build_paper_table(full, spec, name, **tables.paper_statistics(params, experiment))
        write_paper_table(pt, out_dir / "paper_tables", name)
        paper_md[name] = to_markdown(pt)
        paper_data[name] = paper_table_data(pt)  # what the HTML page renders (no Markdown)
        note = _substitutes_note(params, experiment, spec.get("methods", {}))
        if extra:
            note = " ".join(t for t in (note, _released_note(params, experiment, extra)) if t)
        if "inference_ms" in spec.get("metrics", []):
            note = " ".join(t for t in (note, _timing_note(eff, spec.get("methods", {}))) if t)
        substitutes[name] = note
        ft = _finetune_lines(run, list(spec.get("methods", {})))
        md_note = " ".join(t for t in (note, f"Fine-tune phase: {'; '.join(ft)}." if ft else "") if t)
        if md_note:  # every offline substitute (and fine-tune phase) behind this table's numbers, named beside it
            paper_md[name] += "\n\n" + md_note + "\n"
            md_file = out_dir / "paper_tables" / f"{name}.md"
            if md_file.exists():
                write_text(md_file, md_file.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + md_note + "\n")
    figures = _figures(params, experiment, exp, summary, models, labels, buckets, metrics, out_dir / "figures",
                       released_of)
    info = {"experiment": experiment, "description": exp.get("description", ""), "datasets": datasets,
            "figures": [[str(p.relative_to(paths.REPORTS)), cap] for p, cap in figures],
            "tables": {ds: md for ds, md in md_by_ds.items()}, "paper_tables": paper_md,
            "table_data": json.loads((out_dir / "table.json").read_text()),  # structured cells (report.tables)
            "efficiency": eff_md,
            "fid": fid, "perceptual_backbone": _backbone_text(params.perceptual(experiment)),
            "paper_table_substitutes": substitutes, "paper_table_data": paper_data,
            "what_was_run": run,
            "models": {m: _model_info(params, experiment, exp, m) for m in models},
            "cost": cost.table_costs(params, experiment)}  # GPU-hours / peak memory per table (report/cost.py)
    write_text(out_dir / "cost.md", cost.cost_markdown(info["cost"]))
    write_json(out_dir / "report.json", info)
    return info


def _models_of(exp: dict, released_of: dict[str, list[str]]) -> dict[str, list[str]]:
    """{evaluation dataset: the experiment's models, then the released checkpoints of the runs that
    evaluate it} (`released_of`: {train: that run's present released entries})."""
    out: dict[str, list[str]] = {}
    for run in exp["runs"]:
        for ds in run["eval"]:
            out[ds] = list(dict.fromkeys([*out.get(ds, exp["models"]), *released_of.get(run["train"], [])]))
    return out


def _released_rows(params, spec: dict, name: str, exp: dict, released_of: dict[str, list[str]],
                   summary: pd.DataFrame) -> dict[str, str]:
    """The extra rows of a paper table, {model: label}: the released checkpoints of the runs whose
    evaluation datasets the table shows (and whose training set its `train` names, if any), those
    the summary has scores of there. None for an ablation table (its improvement rows compare the
    variants of one model with their baseline) or a table without datasets (efficiency)."""
    from .paper_tables import parse_spec

    parsed = parse_spec(spec, name)
    if parsed.kind == "ablation":
        return {}
    rows: dict[str, str] = {}
    for run in exp["runs"]:
        shown = [ds for ds in run["eval"] if ds in parsed.datasets]
        if isinstance(parsed.train, dict):
            shown = [ds for ds in shown if parsed.train.get(ds) == run["train"]]
        elif parsed.train is not None and parsed.train != run["train"]:
            shown = []
        for m in released_of.get(run["train"], []) if shown else []:
            scored = summary[(summary["model"] == m) & (summary["train"].astype(str) == run["train"])
                             & summary["dataset"].isin(shown) & summary["metric"].isin(parsed.metrics)]
            if m not in parsed.methods and not scored.empty:
                rows[m] = params.model(m).get("label", m)
    return rows


def _released_note(params, experiment: str, rows: dict[str, str]) -> str:
    """What a paper table's released rows are: the authors' checkpoints, scored on the same pairs,
    not trained here; their training set and resolution (weights.trained_on / resolution)."""
    size = int(params.experiment(experiment)["size"])
    parts = []
    for m, label in rows.items():
        w = params.model(m)["weights"]
        res = w.get("resolution")
        where = ", ".join(x for x in (f"trained on {w['trained_on']}" if w.get("trained_on") else "",
                                      f"at {res} px, run here at {size} px" if res and int(res) != size else "") if x)
        parts.append(f"{label}" + (f" ({where})" if where else ""))
    return ("Released checkpoints of the official code, scored on the same pairs and never trained here: "
            + "; ".join(parts) + ".")


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


def _figures(params, experiment, exp, summary, models, labels, buckets, metrics, fig_dir: Path,
             released_of: dict[str, list[str]] | None = None) -> list:
    """Every figure of an experiment as (path, caption); captions say what the panels show. A run's
    own released checkpoints (`released_of`, {train: models}) appear in that run's figures only."""
    figures = []
    learned = [m for m in models if params.is_learned(m)]
    order = [labels[m] for m in models]  # one style per method across all figures
    for run in exp["runs"]:
        histories, epochs = {}, {}
        for m in learned:
            rd = paths.run_dir(experiment, run["train"], m)
            histories[labels[m]] = pd.read_csv(rd / "history.csv")
            epochs[labels[m]] = pd.read_csv(rd / "epochs.csv")
        if histories:
            f = fig_dir / f"loss_curves_{run['train']}.png"
            plots.loss_curves(histories, f, f"{experiment}: training loss per step (trained on {run['train']})", order=order)
            figures.append((f, f"Training loss per step of each learned model (trained on {run['train']}), one panel per "
                               "model with its own y-axis: each model minimises its own objective (different terms and "
                               "weights), so the values are not comparable across panels. Moving average over ~4 % of the "
                               "steps; log scale where the loss spans more than 20x."))
            f = fig_dir / f"val_curves_{run['train']}.png"
            plots.epoch_curves(epochs, f, f"{experiment}: validation PSNR and L1 per epoch (trained on {run['train']})",
                               order=order)
            figures.append((f, "Left: validation PSNR (dB, higher is better); right: validation L1 (mean absolute error "
                               "on the 0-1 scale, lower is better), after each epoch, on the fixed validation pairs "
                               f"(trained on {run['train']})."))
            ccsa = [m for m in learned if params.model(m)["arch"] == "ccsa"]
            if ccsa:
                f = fig_dir / f"ccsa_variants_{run['train']}.png"
                plots.epoch_curves({labels[m]: epochs[labels[m]] for m in ccsa}, f,
                                   f"{experiment}: CCSA variants, validation PSNR and L1 per epoch (Figures 4-5)", order=order)
                figures.append((f, "The CCSA ablation variants only: validation PSNR in dB (left, as the paper's Figure 4) "
                                   "and L1 (right, as Figure 5) per epoch."))
            for group, keys, title in _loss_panels(params, learned, labels):
                f = fig_dir / f"loss_terms_{group}_{run['train']}.png"
                plots.loss_terms({labels[m]: histories[labels[m]] for m in keys}, f, f"{experiment}: {title}",
                                 LOSS_PANELS[group][1], order=order)
                figures.append((f, f"{title}: one panel per loss term (each term on its own axis), the mean over each "
                                   "epoch, one line per model of the family."))
        run_models = [m for m in models if m in exp["models"] or m in (released_of or {}).get(run["train"], [])]
        for ds in run["eval"]:
            f = fig_dir / f"metric_vs_bucket_{ds}.png"
            plots.metric_vs_bucket(summary, ds, run_models, buckets[:-1], metrics, f, f"{experiment}: {ds}", labels)
            figures.append((f, f"Mean of each metric per hole-ratio bucket on {ds} (test pairs), one line per method; "
                               "each y-axis gives the metric's unit (PSNR and SSIM: higher is better; L1: lower is better)."))
            f = fig_dir / f"samples_{ds}.png"
            shown = _sample_grid(params, experiment, run["train"], ds, run_models, labels, f)
            figures.append((f, f"Qualitative samples on {ds}: one test pair per hole-ratio bucket (the one whose image "
                               "shows the most content: highest pixel standard deviation among images neither nearly "
                               "black nor white), its input with the holes in white, each method's result, the ground "
                               f"truth.{shown} Click for full size."))
    return figures


def _sample_grid(params, experiment, train, dataset, models, labels, path: Path) -> str:
    """The grid of chosen samples; returns a caption note on what was left out."""
    pairs = read_csv(paths.pairs_csv(experiment, dataset, "test"))
    sample_dir = lambda m: paths.result_dir(experiment, train, m) / "samples" / dataset
    # the copy-input floor's result is the input itself: not repeated beside the input column
    floor = [m for m in models if params.model(m)["arch"] == "copy_input"]
    shown = [m for m in models if m not in floor]
    chosen = plots.pick_samples(pairs, lambda p: all((sample_dir(m) / f"{p['pair_id']}.png").exists() for m in shown))
    images = {labels[m]: [load_image(sample_dir(m) / f"{p['pair_id']}.png") for p in chosen] for m in shown}
    plots.sample_grid(chosen, images, path, f"{experiment}: {dataset}")
    return (f" {', '.join(labels[m] for m in floor)} (the input copied, the tables' floor) is not repeated beside "
            "the input column." if floor else "")


CSS = ("body{font-family:system-ui,sans-serif;max-width:1250px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}"
       "table{border-collapse:collapse;font-size:13px;margin:.4em 0 .2em}td,th{border:1px solid #ccc;padding:3px 7px;"
       "text-align:right;white-space:nowrap}th{background:#f3f3f3;font-weight:600}td.name,th.name{text-align:left}"
       "td.best{background:#e7f5e7}tr.ref td.name{font-style:italic}.caption{font-size:13px;color:#444;max-width:1100px;"
       "margin:.2em 0 1.2em}.run{background:#f7f7fb;border:1px solid #dde;padding:.5em 1em;font-size:14px}"
       ".run td,.run th{border:none;text-align:left;padding:1px 10px 1px 0;white-space:normal}"
       "figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#444;"
       "max-width:1100px}code{background:#f5f5f5;padding:1px 4px}nav a{margin-right:1em}.defs{font-size:14px;max-width:1100px}")


def build_index(params, experiments: list[str]) -> Path:
    """reports/index.html: first what was run and each experiment's main table, then the paper
    layouts, efficiency, figures and models; the definitions of metrics, intervals and marks last.
    Tables are rendered from the table data (table.json, paper_table_data), never from Markdown."""
    from ..tracking import git_commit

    infos = {e: json.loads((paths.report_dir(e) / "report.json").read_text()) for e in experiments}
    commit = git_commit()
    built = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>inpaintbench report</title>",
             f"<style>{CSS}</style></head><body>", "<h1>inpaintbench report</h1>",
             f"<p>Built {built} from commit <code>{html.escape(commit[:12])}</code>, suite "
             f"<code>{html.escape(str(params.raw.get('suite')))}</code>. Cells read <code>mean [lo, hi]</code>: the mean "
             "over a bucket's test images and its bootstrap confidence interval; ▲/▼ significantly better/worse than "
             "the experiment's reference method; shaded and bold: the best set of a column (the best mean, underlined, and "
             "every method not significantly worse than it). "
             "<a href='#definitions'>Definitions of the metrics, intervals and marks</a> are at the end.</p>",
             "<nav>" + "".join(f"<a href='#{html.escape(e)}'>{html.escape(e)}</a>" for e in infos) + "</nav>"]
    for e, info in infos.items():
        parts.append(f"<h2 id='{html.escape(e)}'>{html.escape(e)}</h2>"
                     + (f"<p>{html.escape(info['description'])}</p>" if info.get("description") else ""))
        parts.append(run_html(info.get("what_was_run")))
        for ds, data in info.get("table_data", {}).items():
            parts.append(f"<h3>{html.escape(e)} on {html.escape(ds)}</h3>" + table_data_html(data))
        parts.append(f"<p>Tables as files: <a href='experiments/{e}/table.md'>Markdown</a>, "
                     f"<a href='experiments/{e}/table.tex'>LaTeX</a>, <a href='experiments/{e}/table.csv'>CSV</a>.</p>")
        for name, data in info.get("paper_table_data", {}).items():
            note = info.get("paper_table_substitutes", {}).get(name, "")
            note = " ".join(x for x in (run_line(info.get("what_was_run"), data.get("models", [])), note) if x)
            parts.append(f"<h3>Paper layout: {html.escape(name)}</h3>" + paper_table_html(data, note)
                         + f"<p><a href='experiments/{e}/paper_tables/{name}.tex'>LaTeX</a> · "
                           f"<a href='experiments/{e}/paper_tables/{name}.csv'>CSV</a></p>")
        if info.get("efficiency"):
            parts.append("<h3>Parameters and inference time</h3>" + _md_document_to_html(info["efficiency"]))
        parts.append(experiment_extras_html(e, info))
        parts.append(f"<h3>Figures</h3><p><b>FID:</b> {html.escape(info['fid']['reason'])}</p>")
        for fig, cap in info["figures"]:
            parts.append(f"<figure><a href='{html.escape(fig)}'><img src='{html.escape(fig)}' alt='{html.escape(cap)}' "
                         f"loading='lazy'></a><figcaption>{html.escape(cap)}</figcaption></figure>")
        parts.append(models_html(info["models"]))
    fid = next(iter(infos.values()))["fid"] if infos else {"computed": False, "reason": ""}
    parts.append("<h2 id='definitions'>Definitions</h2><div class='defs'>"
                 + _md_inline(metric_definitions((fid["computed"], fid["reason"]), **tables.definition_settings(params, experiments)))
                 + "</div>")
    parts.append("</body></html>")
    _dvc_metrics_and_plots(params, experiments)
    out = paths.REPORTS / "index.html"
    write_text(out, "\n".join(parts))
    return out


def experiment_extras_html(experiment: str, info: dict) -> str:
    """Sections other steps add to an experiment (e.g. compute cost per table): report.json keys
    rendered here, after the tables. Empty when there are none."""
    return cost.cost_html(info.get("cost"))


def what_was_run(params, experiment: str) -> dict:
    """What produced an experiment's tables, derived from the params and the run files: image
    size, the training schedule per learned model (epochs x steps, batch, steps actually run, on
    which device), the test pairs per bucket, the perceptual backbone and teacher, commit and date."""
    import datetime

    from ..tracking import git_commit

    exp = params.experiment(experiment)
    schedules: dict[str, list[str]] = {}
    done, finetune = [], []
    for m in exp["models"]:
        if not params.is_learned(m):
            continue
        cfg = params.training(m, experiment)
        e, s, b = int(cfg.get("epochs", 0)), int(cfg.get("steps_per_epoch", 0)), int(cfg.get("batch_size", 0))
        key = f"{e} epochs × {s} steps = {e * s:,} steps, batch {b}, learning rate {cfg.get('optimizer', {}).get('lr', '?')}"
        schedules.setdefault(key, []).append(m)
        for run in exp["runs"]:
            rj = paths.run_dir(experiment, run["train"], m) / "run.json"
            if rj.exists():
                r = json.loads(rj.read_text())
                stamp = datetime.datetime.fromtimestamp(rj.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                done.append({"model": params.model(m).get("label", m), "train": run["train"], "steps": r.get("steps"),
                             "device": r.get("device"), "seconds": r.get("train_seconds"), "finished": stamp,
                             "commit": r.get("git_commit")})
                if r.get("finetune"):  # the run's second phase (train/phases.py, recorded in run.json)
                    finetune.append({"model_name": m, "model": params.model(m).get("label", m), "train": run["train"],
                                     "describe": _finetune_text(r["finetune"], r.get("steps"))})
    summary_file = paths.summary_csv(experiment)
    n_pairs = {}
    if summary_file.exists():
        s = pd.read_csv(summary_file)
        s = s[s["bucket"] != "all"]
        for (ds, bucket), g in s.groupby(["dataset", "bucket"], sort=False):
            n_pairs.setdefault(ds, {})[bucket] = int(g["count"].max())
    teacher = params.teacher(experiment)
    uses_teacher = any("teacher" in params.model(m).get("requires", []) for m in exp["models"])
    return {"size": exp["size"], "runs": [{"train": r["train"], "eval": r["eval"]} for r in exp["runs"]],
            "schedules": [{"setting": k, "model_names": v, "models": [params.model(m).get("label", m) for m in v]}
                          for k, v in schedules.items()], "trained": done, "finetune": finetune,
            "pairs_per_bucket": n_pairs, "masks": exp.get("masks"),
            "perceptual": _backbone_text(params.perceptual(experiment)),
            "teacher": (teacher.get("kind", "trained") if uses_teacher else None),
            "commit": git_commit(), "seed": params.seed}


def _finetune_text(plan: dict, total) -> str:
    """A run.json fine-tune plan as the box states it: its `describe` string and the share of the
    run it covers (e.g. "phase 2 (fine-tune): steps 4-6 of 6, lr 5e-05, batch norm frozen: encoder;
    the last 50 % of steps")."""
    from ..train import phases

    text = plan.get("describe") or (phases.describe(plan, int(total)) if total else f"phase 2 from step {plan.get('start')}")
    if total and plan.get("steps"):
        text += f"; the last {100 * int(plan['steps']) / int(total):.0f} % of steps"
    return text


def _finetune_lines(run: dict, models: list[str] | None = None) -> list[str]:
    """'Model: describe' per model with a fine-tune phase (the training sets named where they differ)."""
    by: dict[tuple[str, str], list[str]] = {}
    for f in run.get("finetune", []):
        if not models or f.get("model_name") in models:
            by.setdefault((f["model"], f["describe"]), []).append(f["train"])
    texts = {}
    for (model, text), trains in by.items():
        texts.setdefault(model, []).append((text, trains))
    return [f"{model}: {text}" + (f" ({', '.join(trains)})" if len(variants) > 1 else "")
            for model, variants in texts.items() for text, trains in variants]


def run_html(run: dict | None) -> str:
    if not run:
        return ""
    rows = [("image size", f"{run['size']} × {run['size']} px"),
            ("train → evaluate", "; ".join(f"{r['train']} → {', '.join(r['eval'])}" for r in run["runs"])),
            ("test masks", str(run.get("masks"))),
            ("test pairs per bucket", "; ".join(f"{ds}: " + ", ".join(f"{b} n={n}" for b, n in bs.items())
                                                for ds, bs in run["pairs_per_bucket"].items()) or "—")]
    for s in run["schedules"]:
        rows.append(("training", f"{s['setting']} ({', '.join(s['models'])})"))
    if run["trained"]:
        devices = sorted({str(t['device']) for t in run["trained"]})
        last = max(t["finished"] for t in run["trained"])
        commits = sorted({t["commit"][:12] for t in run["trained"] if t.get("commit")})
        total = sum(float(t["seconds"] or 0) for t in run["trained"])
        rows.append(("trained", f"{len(run['trained'])} runs on {', '.join(devices)}, {total:,.0f} s in all, last finished "
                                f"{last}" + (f", commit {', '.join(commits)}" if commits else "")))
    for line in _finetune_lines(run):
        rows.append(("fine-tune phase", line))
    rows.append(("perceptual loss backbone", run["perceptual"]))
    if run.get("teacher"):
        rows.append(("SAHN teacher", run["teacher"]))
    rows.append(("report commit, seed", f"{run['commit'][:12]}, seed {run['seed']}"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<div class='run'><b>What was run</b><table>{body}</table></div>"


def run_line(run: dict | None, models: list[str]) -> str:
    """One sentence of what produced a table's numbers ("Ours: 64 px, ... steps, n = ... per bucket"),
    derived from what_was_run, for the methods of the table."""
    if not run:
        return ""
    sched = [f"{s['setting']} ({', '.join(s['models'])})" for s in run["schedules"]
             if not models or set(s.get("model_names", [])) & set(models)]
    ns = sorted({n for bs in run["pairs_per_bucket"].values() for n in bs.values()})
    ft = _finetune_lines(run, models)
    return (f"Ours: {run['size']} px; training {'; '.join(sched) if sched else 'none (classical methods)'}; "
            + (f"fine-tune phase: {'; '.join(ft)}; " if ft else "")
            + f"n = {', '.join(map(str, ns))} test pairs per bucket.")


def table_data_html(data: dict) -> str:
    """One HTML table per metric (methods × buckets) from report.tables' table data: cells
    `mean [lo, hi]` with ▲/▼, the column's best set shaded and bold, n per bucket in the header;
    the caption (what the marks mean) below, in plain text."""
    from .tables import cell_text

    out = []
    for met in data["metrics"]:
        k = met["metric"]
        if not any(r["cells"][k][b["bucket"]]["mean"] is not None for r in data["rows"] for b in data["buckets"]):
            continue
        head = f"<th class='name'>{html.escape(met['title'])}</th>" + "".join(
            f"<th>{html.escape(b['bucket'])}" + (f"<br><small>n={b['n']}</small>" if b.get("n") is not None else "") + "</th>"
            for b in data["buckets"])
        top = {}
        for b in data["buckets"]:
            vals = [r["cells"][k][b["bucket"]]["mean"] for r in data["rows"] if r["cells"][k][b["bucket"]]["mean"] is not None]
            top[b["bucket"]] = (max if met.get("higher_is_better", True) else min)(vals) if vals else None
        body = []
        for r in data["rows"]:
            cells = []
            for b in data["buckets"]:
                c = r["cells"][k][b["bucket"]]
                text = html.escape(cell_text(c, k))
                if c.get("mean") is not None and c["mean"] == top[b["bucket"]]:
                    text = f"<u>{text}</u>"  # the best mean of the column
                tip = [f"{name} = {c[key]:.4g}" for key, name in (("std", "std"), ("n", "n")) if c.get(key) is not None]
                if c.get("diff") is not None:
                    tip.append(f"vs reference: {c['diff']:+.4g}" + (f" [{c['diff_lo']:.4g}, {c['diff_hi']:.4g}]"
                                                                     if c.get("diff_lo") is not None else ""))
                if c.get("p_holm") is not None:
                    tip.append(f"Holm-adjusted p = {c['p_holm']:.3g}")
                title = f" title='{html.escape('; '.join(tip))}'" if tip else ""
                if c.get("best") and c.get("mean") is not None:
                    cells.append(f"<td class='best'{title}><strong>{text}</strong></td>")
                else:
                    cells.append(f"<td{title}>{text}</td>")
            label = html.escape(r["label"] + (" (ref.)" if r.get("is_reference") else ""))
            body.append(f"<tr{' class=ref' if r.get('is_reference') else ''}><td class='name'>{label}</td>{''.join(cells)}</tr>")
        out.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
    caption = (data.get("caption", "") + " Underlined: the best mean of the column.").strip()
    return "".join(out) + f"<p class='caption'>{html.escape(caption)}</p>"


def paper_table_data(pt) -> dict:
    """A paper-layout table as plain data for the HTML page: header levels, rows (index labels and
    cell texts) and which cells are best (computed by report.paper_tables, shown bold in its LaTeX)."""
    from .paper_tables import _caption, _layout

    wide = _layout(pt.tidy, pt.spec, numeric=False, bold="latex")
    cols = list(wide.columns) if isinstance(wide.columns, pd.MultiIndex) else [(c,) for c in wide.columns]
    rows = []
    for idx, values in zip(wide.index, wide.itertuples(index=False)):
        idx = idx if isinstance(idx, tuple) else (idx,)
        cells = []
        for v in values:
            v = "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
            best = v.startswith("\\textbf{") and v.endswith("}")
            cells.append({"text": v[len("\\textbf{"):-1] if best else v, "best": best})
        rows.append({"index": [str(i) for i in idx], "cells": cells})
    labels = sorted(set(pt.tidy.loc[pt.tidy["model"].astype(str) != "", "model"].astype(str)))  # our model names
    return {"index_names": [str(n or "") for n in wide.index.names], "columns": [[str(x) for x in c] for c in cols],
            "rows": rows, "caption": _caption(pt), "models": labels}


def paper_table_html(data: dict, note: str = "") -> str:
    levels = max((len(c) for c in data["columns"]), default=1)
    head = []
    for lvl in range(levels):
        cells = [f"<th class='name'>{html.escape(n) if lvl == levels - 1 else ''}</th>" for n in data["index_names"]]
        prev, span = None, 0
        groups = []
        for c in data["columns"]:
            label = c[lvl] if lvl < len(c) else ""
            key = tuple(c[:lvl + 1])
            if groups and groups[-1][0] == key:
                groups[-1][2] += 1
            else:
                groups.append([key, label, 1])
        cells += [f"<th colspan='{n}'>{html.escape(label)}</th>" if n > 1 else f"<th>{html.escape(label)}</th>"
                  for _, label, n in groups]
        head.append("<tr>" + "".join(cells) + "</tr>")
    body = []
    prev_idx = None
    for r in data["rows"]:
        idx_cells = []
        for i, v in enumerate(r["index"]):
            same = prev_idx is not None and prev_idx[:i + 1] == r["index"][:i + 1] and i < len(r["index"]) - 1
            idx_cells.append(f"<td class='name'>{'' if same else html.escape(v)}</td>")
        prev_idx = r["index"]
        cells = [f"<td class='best'><strong>{html.escape(c['text'])}</strong></td>" if c["best"] and c["text"]
                 else f"<td>{html.escape(c['text'])}</td>" for c in r["cells"]]
        body.append("<tr>" + "".join(idx_cells) + "".join(cells) + "</tr>")
    caption = html.escape(data.get("caption", "")) + (f" {html.escape(note)}" if note else "")
    return f"<table>{''.join(head)}{''.join(body)}</table><p class='caption'>{caption}</p>"


def models_html(models: dict) -> str:
    rows = "".join(
        "<tr><td class='name'>{}</td><td class='name'>{}</td><td>{}</td><td>{}</td><td>{}</td><td class='name'>{}</td></tr>".format(
            html.escape(v.get("label", m)), html.escape(v["arch"]),
            "" if v.get("trainable_parameters") is None else f"{v['trainable_parameters']:,}",
            "" if v.get("steps") is None else f"{v['steps']:,}",
            "" if v.get("train_seconds") is None else v["train_seconds"], html.escape(str(v.get("device") or "")))
        for m, v in models.items())
    return ("<h3>Models</h3><table><tr><th class='name'>model</th><th class='name'>architecture</th>"
            "<th>trainable parameters</th><th>training steps</th><th>training seconds</th><th class='name'>device</th></tr>"
            f"{rows}</table>")


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
        labels = _labels(params, evaluated_models(params, e))  # with the runs' own released checkpoints
        summary = pd.read_csv(paths.summary_csv(e))
        sel = summary[(summary["bucket"] == "all") & (summary["dataset"] == main_ds) & summary["metric"].isin(HEADLINE)]
        for r in sel.itertuples():
            cell = metrics.setdefault(e, {}).setdefault(labels.get(r.model, r.model), {})
            cell[r.metric] = round(float(r.mean), 4)
            for bound in ("lo", "hi"):  # the bootstrap CI of the mean (report.aggregate), for `dvc metrics show`
                value = getattr(r, bound, float("nan"))
                if pd.notna(value):
                    cell[f"{r.metric}_{bound}"] = round(float(value), 4)
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
