"""Comparison tables: methods × mask-ratio buckets × metrics, per evaluated dataset.

Every renderer (Markdown, LaTeX, CSV here; the HTML page in ``report.build``) draws from one
structure, the **table data** of a dataset (``table_data``), plain JSON-able dicts::

    {"dataset": "builtin-photos",
     "reference": "ccsa-res1att1" | None, "reference_label": "CCSA RES1ATT1" | None,
     "alpha": 0.05,                      # significance level after Holm
     "ci": "95% percentile bootstrap, 1000 resamples, seed 0",
     "metrics": [{"metric": "psnr", "title": "PSNR↑", "higher_is_better": True, "digits": 2}, ...],
     "buckets": [{"bucket": "(0.1, 0.25]", "n": 16}, ..., {"bucket": "all", "n": 48}],
     "rows": [{"model": "pconv", "label": "PConv", "is_reference": False,
               "cells": {"psnr": {"(0.1, 0.25]": CELL, ...}, ...}}, ...],
     "caption": "..."}                   # explains the marks; renderers print it under the table

    CELL = {"mean": 27.31, "lo": 26.9, "hi": 27.7, "n": 16,   # None where there is no value
            "std": 1.2,                                        # sample std over the images (None: FID/KID)
            "diff": 0.42, "diff_lo": 0.1, "diff_hi": 0.7,      # method - reference (paired), or None
            "p_holm": 0.003,                                   # Wilcoxon vs reference, Holm-adjusted
            "sig": "better" | "worse" | "",                    # vs the reference at alpha
            "best": True}                                      # member of the column's best set

Rules (also in the caption and the report's definitions):

* ``lo``/``hi``: the bootstrap CI of the mean over the bucket's images (FID/KID: over resampled
  pairs), from the summary.
* ``sig``: the paired Wilcoxon signed-rank test of the method against the experiment's reference
  method on the same pairs, Holm-corrected over all (method, metric, bucket) comparisons of this
  table; "better"/"worse" when the adjusted p < alpha, in the metric's direction.
* ``best``: the method with the best mean in the column, and every method not significantly worse
  than it (Wilcoxon against the top method, Holm-corrected within the column).
* FID and KID have no per-image scores: their tests are the bootstrap tests of the paired difference
  on the same resampled pairs of the saved Inception features (``metrics.kid.paired_difference``),
  Holm-corrected in the same families; without saved features the best set is the best value.

Markdown/LaTeX cells read ``mean [lo, hi]`` followed by ▲ (significantly better than the
reference) or ▼ (significantly worse); the best set is bold; the reference row is marked "(ref.)";
column headers carry n per bucket. ``cell_text`` formats one cell for any renderer.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, write_json, write_text
from ..metrics.quality import HIGHER_IS_BETTER as _HIB
from ..metrics.stats import holm

HIGHER_IS_BETTER = {**_HIB, "lpips": False, "kid": False}
METRIC_TITLES = {"psnr": "PSNR↑", "ssim": "SSIM↑", "l1": "L1↓", "l1_hole": "L1 hole↓", "lpips": "LPIPS↓",
                 "fid": "FID↓", "kid": "KID↓"}
DIGITS = {"psnr": 2, "ssim": 4, "l1": 4, "l1_hole": 4, "lpips": 4, "fid": 2, "kid": 4}
BETTER_MARK, WORSE_MARK = "▲", "▼"


def _num(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _fmt(metric: str, mean: float, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    d = DIGITS.get(metric, 4)
    return f"{mean:.{d}f}" if std is None or math.isnan(std) else f"{mean:.{d}f} ± {std:.{d}f}"


def cell_text(cell: dict | None, metric: str, *, marks: bool = True) -> str:
    """``mean [lo, hi]`` plus ▲/▼; "—" when there is no value."""
    if not cell or cell.get("mean") is None:
        return "—"
    d = DIGITS.get(metric, 4)
    text = f"{cell['mean']:.{d}f}"
    if cell.get("lo") is not None and cell.get("hi") is not None:
        text += f" [{cell['lo']:.{d}f}, {cell['hi']:.{d}f}]"
    if marks and cell.get("sig"):
        text += BETTER_MARK if cell["sig"] == "better" else WORSE_MARK
    return text


def _paired_lookup(paired: pd.DataFrame | None, dataset: str):
    """(a, b, metric, bucket) -> (n, diff a-b, lo, hi, p), either order."""
    table: dict = {}
    if paired is None or paired.empty:
        return table
    sub = paired[paired["dataset"] == dataset]
    for r in sub.itertuples():
        table[(r.model, r.other, r.metric, r.bucket)] = (int(r.n), float(r.diff), float(r.lo), float(r.hi), float(r.p))
        table[(r.other, r.model, r.metric, r.bucket)] = (int(r.n), -float(r.diff), -float(r.hi), -float(r.lo), float(r.p))
    return table


def best_set(means: dict[str, float], tests: dict[str, tuple], metric: str, alpha: float) -> set[str]:
    """The top method and every method not significantly worse than it. ``tests[m]`` is the
    paired (n, diff m - top, lo, hi, p) of m against the top method (absent: no test possible, so
    m is in the best set only when it ties the top value)."""
    vals = {m: v for m, v in means.items() if v is not None}
    if not vals:
        return set()
    higher = HIGHER_IS_BETTER.get(metric, True)
    top_value = max(vals.values()) if higher else min(vals.values())
    top = [m for m, v in vals.items() if v == top_value]
    others = [m for m in vals if m not in top]
    p = np.array([tests[m][4] if m in tests else np.nan for m in others])
    adj = holm(p)
    best = set(top)
    for m, a in zip(others, adj):
        if not np.isnan(a) and a >= alpha:
            best.add(m)  # not significantly different from the top, hence not significantly worse
    return best


def table_data(summary: pd.DataFrame, dataset: str, models: list[str], buckets: list[str], metrics: list[str],
               labels: dict[str, str] | None = None, *, paired: pd.DataFrame | None = None,
               reference: str | None = None, alpha: float = 0.05, ci: str = "") -> dict:
    """The structured table of one dataset (see the module docstring)."""
    labels = labels or {}
    sub = summary[(summary["dataset"] == dataset) & summary["model"].isin(models) & summary["metric"].isin(metrics)]
    stat = {(r.model, r.metric, r.bucket): r for r in sub.itertuples()}
    lookup = _paired_lookup(paired, dataset)
    reference = reference if reference in models else None
    cells: dict = {m: {k: {} for k in metrics} for m in models}
    for m in models:
        for k in metrics:
            for b in buckets:
                r = stat.get((m, k, b))
                cells[m][k][b] = {"mean": _num(getattr(r, "mean", None)), "lo": _num(getattr(r, "lo", None)),
                                  "hi": _num(getattr(r, "hi", None)), "n": None if r is None else int(r.count),
                                  "std": _num(getattr(r, "std", None)),
                                  "diff": None, "diff_lo": None, "diff_hi": None, "p_holm": None, "sig": "", "best": False}
    # significance against the reference: Holm over every comparison of this table
    if reference is not None:
        family = [(m, k, b) for m in models if m != reference for k in metrics for b in buckets
                  if (m, reference, k, b) in lookup and cells[m][k][b]["mean"] is not None]
        adj = holm([lookup[(m, reference, k, b)][4] for m, k, b in family]) if family else []
        for (m, k, b), a in zip(family, adj):
            n, diff, lo, hi, _ = lookup[(m, reference, k, b)]
            c = cells[m][k][b]
            c.update(diff=diff, diff_lo=lo, diff_hi=hi, p_holm=float(a))
            if a < alpha and diff != 0:
                c["sig"] = "better" if (diff > 0) == HIGHER_IS_BETTER.get(k, True) else "worse"
    # best set per column
    for k in metrics:
        for b in buckets:
            means = {m: cells[m][k][b]["mean"] for m in models}
            vals = {m: v for m, v in means.items() if v is not None}
            if not vals:
                continue
            higher = HIGHER_IS_BETTER.get(k, True)
            top = (max if higher else min)(vals, key=vals.get)
            tests = {m: lookup[(m, top, k, b)] for m in vals if (m, top, k, b) in lookup}
            for m in best_set(means, tests, k, alpha):
                cells[m][k][b]["best"] = True
    n_per_bucket = []
    for b in buckets:
        ns = [cells[m][k][b]["n"] for m in models for k in metrics if cells[m][k][b]["n"] is not None]
        n_per_bucket.append({"bucket": b, "n": max(ns) if ns else None})
    data = {"dataset": dataset, "reference": reference, "reference_label": labels.get(reference, reference) if reference else None,
            "alpha": alpha, "ci": ci,
            "metrics": [{"metric": k, "title": METRIC_TITLES.get(k, k), "higher_is_better": HIGHER_IS_BETTER.get(k, True),
                         "digits": DIGITS.get(k, 4)} for k in metrics],
            "buckets": n_per_bucket,
            "rows": [{"model": m, "label": labels.get(m, m), "is_reference": m == reference, "cells": cells[m]} for m in models]}
    data["caption"] = caption(data)
    return data


def caption(data: dict) -> str:
    parts = [f"Mean [lo, hi]: the {data['ci'] or 'bootstrap'} confidence interval of the mean over the images of each "
             "bucket (FID/KID: over resampled pairs); n per bucket in the column header."]
    if data["reference"]:
        parts.append(f"{BETTER_MARK}/{WORSE_MARK}: significantly better/worse than the reference {data['reference_label']} "
                     f"(ref.) on the same pairs: two-sided Wilcoxon signed-rank test, Holm-corrected over the table's "
                     f"comparisons, alpha = {data['alpha']}.")
    parts.append("Bold: the best set of the column, the best mean and every method not significantly worse than it "
                 "(Wilcoxon against the top method, Holm within the column; FID/KID: bootstrap test of the paired "
                 "difference on resampled pairs instead of Wilcoxon).")
    return " ".join(parts)


def _row_label(row: dict) -> str:
    return row["label"] + (" (ref.)" if row["is_reference"] else "")


def _header(bucket: dict) -> str:
    return f"{bucket['bucket']} (n={bucket['n']})" if bucket["n"] is not None else bucket["bucket"]


def to_markdown(data: dict) -> str:
    """One methods × buckets table per metric, the caption below."""
    blocks = []
    for met in data["metrics"]:
        k = met["metric"]
        if not any(r["cells"][k][b["bucket"]]["mean"] is not None for r in data["rows"] for b in data["buckets"]):
            continue
        rows = []
        for r in data["rows"]:
            cells = []
            for b in data["buckets"]:
                c = r["cells"][k][b["bucket"]]
                t = cell_text(c, k)
                cells.append(f"**{t}**" if c["best"] and c["mean"] is not None else t)
            rows.append([_row_label(r), *cells])
        frame = pd.DataFrame(rows, columns=[met["title"], *[_header(b) for b in data["buckets"]]])
        blocks.append(frame.to_markdown(index=False, disable_numparse=True))
    return "\n\n".join(blocks)


def _tex_esc(s) -> str:
    return str(s).replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("#", r"\#")


def _tex_title(title: str) -> str:
    return _tex_esc(title).replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")


def _tex_cell(c: dict, metric: str) -> str:
    if c["mean"] is None:
        return "--"
    d = DIGITS.get(metric, 4)
    mean = f"{c['mean']:.{d}f}"
    text = rf"\textbf{{{mean}}}" if c["best"] else mean
    if c["lo"] is not None and c["hi"] is not None:
        text += rf" {{\scriptsize[{c['lo']:.{d}f}, {c['hi']:.{d}f}]}}"
    if c["sig"]:
        text += r"$^{\blacktriangle}$" if c["sig"] == "better" else r"$^{\blacktriangledown}$"
    return text


def to_latex(data: dict, caption_prefix: str = "") -> str:
    metrics = [m for m in data["metrics"]
               if any(r["cells"][m["metric"]][b["bucket"]]["mean"] is not None for r in data["rows"] for b in data["buckets"])]
    nb = len(data["buckets"])
    cap = (caption_prefix + ". " if caption_prefix else "") + data["caption"]
    cap = _tex_esc(cap).replace(BETTER_MARK, r"$^{\blacktriangle}$").replace(WORSE_MARK, r"$^{\blacktriangledown}$")
    lines = [r"% needs \usepackage{booktabs,graphicx,amssymb}", r"\begin{table}[t]", r"\centering", rf"\caption{{{cap}}}",
             r"\resizebox{\textwidth}{!}{%", rf"\begin{{tabular}}{{l{'r' * (nb * len(metrics))}}}", r"\toprule",
             "Method & " + " & ".join(r"\multicolumn{%d}{c}{%s}" % (nb, _tex_title(m["title"])) for m in metrics) + r" \\",
             " & " + " & ".join(_tex_esc(_header(b)) for _ in metrics for b in data["buckets"]) + r" \\", r"\midrule"]
    for r in data["rows"]:
        cells = [_tex_cell(r["cells"][m["metric"]][b["bucket"]], m["metric"]) for m in metrics for b in data["buckets"]]
        lines.append(_tex_esc(_row_label(r)) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["experiment", "dataset", "model", "label", "bucket", "metric", "mean", "lo", "hi", "n", "std", "reference",
              "diff_vs_reference", "diff_lo", "diff_hi", "p_holm", "significance", "best"]


def to_records(data: dict, experiment: str) -> list[dict]:
    out = []
    for r in data["rows"]:
        for met in data["metrics"]:
            for b in data["buckets"]:
                c = r["cells"][met["metric"]][b["bucket"]]
                if c["mean"] is None:
                    continue
                out.append({"experiment": experiment, "dataset": data["dataset"], "model": r["model"], "label": r["label"],
                            "bucket": b["bucket"], "metric": met["metric"], "mean": c["mean"], "lo": c["lo"], "hi": c["hi"],
                            "n": c["n"], "std": c.get("std"), "reference": data["reference"] or "", "diff_vs_reference": c["diff"],
                            "diff_lo": c["diff_lo"], "diff_hi": c["diff_hi"], "p_holm": c["p_holm"],
                            "significance": c["sig"], "best": c["best"]})
    return out


def write_experiment_tables(summary: pd.DataFrame, out_dir: Path, experiment: str, models: list[str],
                            buckets: list[str], metrics: list[str], datasets: list[str], labels: dict[str, str],
                            *, paired: pd.DataFrame | None = None, reference: str | None = None, alpha: float = 0.05,
                            ci: str = "", models_of: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Write table.md / table.tex / table.csv and the table data (table.json, {dataset: data}) for
    one experiment; returns {dataset: markdown}. ``models_of``: the rows of a dataset's table where
    they differ from ``models`` (a run's own released checkpoints are shown on its datasets only)."""
    out_dir = Path(out_dir)
    md_parts, tex_parts, md_by_ds, all_data, records = [f"# {experiment}: comparison\n"], [], {}, {}, []
    for ds in datasets:
        rows = (models_of or {}).get(ds, models)
        data = table_data(summary, ds, rows, buckets, metrics, labels, paired=paired, reference=reference, alpha=alpha, ci=ci)
        all_data[ds] = data
        md = to_markdown(data) + "\n\n" + data["caption"]
        md_by_ds[ds] = md
        md_parts.append(f"\n## {ds}\n\n{md}\n")
        tex_parts.append(to_latex(data, f"{experiment}: {ds}"))
        records += to_records(data, experiment)
    write_text(out_dir / "table.md", "".join(md_parts))
    write_text(out_dir / "table.tex", "\n".join(tex_parts))
    write_json(out_dir / "table.json", all_data)
    frame = pd.DataFrame.from_records(records, columns=CSV_FIELDS)
    with atomic_path(out_dir / "table.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return md_by_ds


# ---------------------------------------------------------------- settings for the report builder
def statistics(params, experiment: str) -> dict:
    """Keyword arguments of ``write_experiment_tables`` beyond the summary: the paired comparisons
    (results/<experiment>/paired.csv, written by the aggregate step), the experiment's
    ``reference_method``, alpha and the CI description."""
    from .. import paths
    from ..evaluate import bootstrap_settings

    settings = bootstrap_settings(params)
    f = paths.summary_csv(experiment).parent / "paired.csv"
    paired = pd.read_csv(f) if f.exists() and f.stat().st_size > 0 else None
    return {"paired": paired, "reference": params.experiment(experiment).get("reference_method"),
            "alpha": settings.alpha, "ci": settings.describe()}


def paper_statistics(params, experiment: str) -> dict:
    """Keyword arguments of ``paper_tables.build_paper_table``: paired, reference, alpha."""
    s = statistics(params, experiment)
    return {"paired": s["paired"], "reference": s["reference"], "alpha": s["alpha"]}


def definition_settings(params, experiments: list[str] | None = None) -> dict:
    """Keyword arguments of ``paper_tables.metric_definitions``: quantize, ci, alpha, lpips_status
    (from the evaluate steps' eval_status.json when one exists, else from the params)."""
    import json

    from .. import paths
    from ..evaluate import bootstrap_settings, quantize_setting

    settings = bootstrap_settings(params)
    out = {"quantize": quantize_setting(params), "ci": settings.describe(), "alpha": settings.alpha}
    for e in experiments or []:
        exp = params.experiment(e)
        for run in exp["runs"]:
            for m in exp["models"]:
                f = paths.result_dir(e, run["train"], m) / "eval_status.json"
                if f.exists():
                    st = json.loads(f.read_text())
                    out["lpips_status"] = (bool(st["lpips"]["computed"]), str(st["lpips"]["reason"]))
                    out["quantize"] = st.get("quantize", out["quantize"])
                    return out
    return out
