"""Reproduced tables in the papers' layouts: the published value beside ours and the difference.

Input: our summary (columns ``experiment, train, dataset, model, bucket, metric, mean, std,
count``) and a table spec from params.yaml (``report.paper_tables.<name>``)::

    paper: ccsa                 # ccsa | sahn
    table: "2"                  # a table id of inpaintbench.report.reference
    methods: {pconv: Pconv, deepfill-v2: DeepFill, rfr: RFR, ccsa-res1att1: Our}  # our model -> paper row
    datasets: {urban100: Urban100, dtd: DTD, celeba-ccsa: CelebA}  # our dataset -> paper label
    buckets: {"(0.25, 0.35]": "0.3", "(0.35, 0.45]": "0.4", "(0.45, 0.55]": "0.5"}
    metrics: [psnr, ssim, l1]
    # optional:
    dataset: dtd                # instead of `datasets` when the paper table has one dataset
    bucket: "(0.25, 0.35]"      # instead of `buckets` when the paper table has one bucket
    experiment: main            # filter on the summary's experiment column
    train: celeba-ccsa          # filter on the train column (a string, or {our dataset: train})
    layout: methods-rows        # methods-rows (CCSA style) | methods-columns (SAHN style)
    kind: comparison            # comparison | ablation (default: ablation for ccsa table 4)
    baseline: RES0ATT0          # ablation only: the paper label of the baseline row
    decimals: {psnr: 2}
    caption: "..."
    reference: ccsa-res1att1    # our model the significance marks compare against (default: the
                                # experiment's reference_method when it is one of `methods`)

Every method row the paper has is kept with its published numbers; a row we do not
implement has an empty "ours" cell, never a made-up one. Our values are converted to the
paper's printed units (SAHN's MAE is printed x1e-1). Differences are ours minus paper.
Best values are bold per metric/dataset/bucket, computed separately among the published values
and among ours (the captions say so). An FID of ours over fewer than 2048 images is marked †.

With CIs in the summary (``lo``/``hi``) our cells read ``mean [lo, hi]`` (the bootstrap CI, in the
paper's units); with the paired comparisons (``paired``, from ``report.aggregate``) and a reference
model, our cells carry ▲/▼ (significantly better/worse than the reference: Wilcoxon signed-rank,
Holm over the table's comparisons; tidy columns ``ours_lo``, ``ours_hi``, ``p_holm``, ``sig``) and
our bold marks the *best set* (the best mean and every method not significantly worse than it,
as in ``report.tables``) instead of the single best mean.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import InpaintBenchError
from ..io import write_csv, write_text
from .reference import HIGHER_IS_BETTER, published
# the spec half (validated in every workflow job, without pandas) lives in table_spec.py
from .table_spec import DEFAULT_DECIMALS, KINDS, LAYOUTS, TableSpec, parse_spec  # noqa: F401 (re-exported)

SUMMARY_COLUMNS = ["experiment", "train", "dataset", "model", "bucket", "metric", "mean", "std", "count"]
VALUE_KINDS = ("paper", "ours", "diff")
FID_FULL_RANK = 2048
PCT_DECIMALS = 2
METRIC_LABELS = {"psnr": "PSNR", "ssim": "SSIM", "l1": "L1", "l1_hole": "L1 (hole)", "fid": "FID",
                 "params_m": "Parameters (M)", "inference_ms": "Inference time (ms)", "storage": "Storage"}
IMPROVEMENT_LABEL = "Improvement compared with baseline"
BOLD_RULE = "Bold: best value per column, computed separately among the published values and among ours."
FID_FOOTNOTE = "†: our FID over fewer than 2048 images (covariance not full rank; not comparable with the paper's)."
MISSING_FOOTNOTE = "–: published cell missing or garbled in the source text."


# ---------------------------------------------------------------- building
@dataclass
class PaperTable:
    """A reproduced table: ``tidy`` has one row per cell (metric, dataset, bucket, method, row)
    with ``paper``, ``ours``, ``diff`` and bookkeeping; ``frame`` is the paper layout."""

    spec: TableSpec
    tidy: pd.DataFrame

    @property
    def frame(self) -> pd.DataFrame:
        return _layout(self.tidy, self.spec, numeric=True)


def _select_ours(summary: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    missing = set(SUMMARY_COLUMNS) - set(summary.columns)
    if missing:
        raise InpaintBenchError(f"summary lacks columns {sorted(missing)}; expected {SUMMARY_COLUMNS}")
    ours = summary[summary["model"].astype(str).isin(spec.methods) & summary["dataset"].astype(str).isin(spec.datasets)
                   & summary["bucket"].astype(str).isin(spec.buckets) & summary["metric"].astype(str).isin(spec.metrics)].copy()
    if spec.experiment is not None:
        ours = ours[ours["experiment"].astype(str) == str(spec.experiment)]
    if isinstance(spec.train, dict):
        wanted = ours["dataset"].astype(str).map(lambda d: spec.train.get(d))
        ours = ours[ours["train"].astype(str) == wanted.astype(str)]
    elif spec.train is not None:
        ours = ours[ours["train"].astype(str) == str(spec.train)]
    key = ["model", "dataset", "bucket", "metric"]
    dup = ours[ours.duplicated(key, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        options = dup[(dup[key] == first[key]).all(axis=1)][["experiment", "train"]].drop_duplicates()
        raise InpaintBenchError(
            f"table {spec.name}: several summary rows for model={first['model']} dataset={first['dataset']} "
            f"bucket={first['bucket']} metric={first['metric']} (experiment/train: "
            f"{options.to_dict('records')}); set `experiment:` and/or `train:` in the table spec."
        )
    ours["method"] = ours["model"].astype(str).map(spec.methods)
    ours["our_dataset"], ours["our_bucket"] = ours["dataset"].astype(str), ours["bucket"].astype(str)
    ours["dataset"] = ours["dataset"].astype(str).map(spec.datasets)
    ours["bucket"] = ours["bucket"].astype(str).map(spec.buckets)
    return ours


def _metric_scale(pub: pd.DataFrame, metric: str) -> float:
    scales = set(pub.loc[pub["metric"] == metric, "scale"])
    if len(scales) > 1:
        raise InpaintBenchError(f"published {metric} cells use several units {sorted(scales)}")
    return float(scales.pop()) if scales else 1.0


def _better(metric: str) -> bool:
    return HIGHER_IS_BETTER.get(metric, True)


def _best_flags(tidy: pd.DataFrame, col: str, group: list[str]) -> pd.Series:
    flags = pd.Series(False, index=tidy.index)
    for _, part in tidy.groupby(group, sort=False, dropna=False):
        vals = part[col].astype(float)
        if vals.notna().sum() < 2:
            continue  # a single value is not a "best"
        # improvement rows are gains / reductions in %: larger is better for every metric
        higher = part["row"].iloc[0] == "improvement" or _better(part["metric"].iloc[0])
        target = vals.max() if higher else vals.min()
        flags.loc[vals.index[np.isclose(vals, target, rtol=0, atol=1e-12)]] = True
    return flags


def build_paper_table(summary: pd.DataFrame, spec: TableSpec | Mapping, name: str = "table", *,
                      paired: pd.DataFrame | None = None, reference: str | None = None, alpha: float = 0.05) -> PaperTable:
    """Our summary beside the published table described by ``spec``. ``paired`` (report.aggregate's
    paired.csv) and a reference model (``spec.reference``, else ``reference`` when it is one of the
    table's methods) add significance marks and the best-set rule for our values."""
    if not isinstance(spec, TableSpec):
        spec = parse_spec(spec, name)
    pub = published(spec.paper, spec.table)
    pub = pub[pub["metric"].isin(spec.metrics) & pub["dataset"].isin(spec.datasets.values())
              & pub["bucket"].isin(spec.buckets.values())]
    ours = _select_ours(summary, spec)
    scales = {m: _metric_scale(pub, m) for m in spec.metrics}

    methods = list(dict.fromkeys(list(pub["method"]) + list(spec.methods.values())))
    model_of = {label: model for model, label in spec.methods.items()}
    records = []
    for metric in spec.metrics:
        for dataset in dict.fromkeys(spec.datasets.values()):
            for bucket in dict.fromkeys(spec.buckets.values()):
                for method in methods:
                    p = pub[(pub["metric"] == metric) & (pub["dataset"] == dataset) & (pub["bucket"] == bucket) & (pub["method"] == method)]
                    o = ours[(ours["metric"] == metric) & (ours["dataset"] == dataset) & (ours["bucket"] == bucket) & (ours["method"] == method)]
                    if p.empty and method not in model_of:
                        continue  # a paper row that this table block does not have
                    paper_val = float(p["value"].iloc[0]) if len(p) else math.nan
                    ours_val = float(o["mean"].iloc[0]) / scales[metric] if len(o) else math.nan
                    count = float(o["count"].iloc[0]) if len(o) else math.nan
                    ci = {c: (float(o[c].iloc[0]) / scales[metric] if len(o) and c in o and pd.notna(o[c].iloc[0]) else math.nan)
                          for c in ("lo", "hi")}
                    records.append({
                        "metric": metric, "dataset": dataset, "bucket": bucket, "method": method, "row": "value",
                        "model": model_of.get(method, ""), "paper": paper_val, "ours": ours_val,
                        "diff": ours_val - paper_val,
                        "ours_std": float(o["std"].iloc[0]) / scales[metric] if len(o) else math.nan,
                        "ours_count": count,
                        "fid_flagged": bool(metric == "fid" and len(o) and count < FID_FULL_RANK),
                        "unit": str(p["unit"].iloc[0]) if len(p) else "",
                        "note": str(p["note"].iloc[0]) if len(p) else "",
                        "ours_lo": ci["lo"], "ours_hi": ci["hi"],
                        "_key": (str(o["train"].iloc[0]), str(o["our_dataset"].iloc[0]), str(o["our_bucket"].iloc[0])) if len(o) else None,
                    })
    tidy = pd.DataFrame.from_records(records, columns=[
        "metric", "dataset", "bucket", "method", "row", "model", "paper", "ours", "diff", "ours_std",
        "ours_count", "fid_flagged", "unit", "note", "ours_lo", "ours_hi", "_key"])
    if spec.kind == "ablation":
        tidy = _add_improvements(tidy, spec, pub)
    group = ["metric", "dataset", "bucket", "row"]
    tidy["best_paper"] = _best_flags(tidy, "paper", group)
    tidy["best_ours"] = _best_flags(tidy, "ours", group)
    ref = spec.reference or (reference if reference in spec.methods else None)
    tidy["p_holm"], tidy["sig"] = math.nan, ""
    if paired is not None and not paired.empty:
        _significance(tidy, paired, ref, alpha)
    tidy["reference"] = spec.methods.get(ref, "") if ref else ""
    return PaperTable(spec=spec, tidy=tidy.drop(columns=["_key"]))


def _pair_lookup(paired: pd.DataFrame) -> dict:
    out = {}
    for r in paired.itertuples():
        k = (str(r.train), str(r.dataset), str(r.bucket), str(r.metric))
        out[(*k, r.model, r.other)] = (float(r.diff), float(r.p))
        out[(*k, r.other, r.model)] = (-float(r.diff), float(r.p))
    return out


def _significance(tidy: pd.DataFrame, paired: pd.DataFrame, ref: str | None, alpha: float) -> None:
    """▲/▼ against ``ref`` (Holm over the table) and our best set per column, in place."""
    from ..metrics.stats import holm
    from .tables import best_set

    look = _pair_lookup(paired)
    values = tidy[(tidy["row"] == "value") & tidy["model"].astype(bool) & tidy["ours"].notna()]
    if ref:
        rv = values[values["model"] == ref]
        ref_key = dict(zip(zip(rv["metric"], rv["dataset"], rv["bucket"]), rv["_key"]))
        family = []
        for i, r in values[values["model"] != ref].iterrows():
            k = ref_key.get((r["metric"], r["dataset"], r["bucket"]))
            if k is not None and k == r["_key"] and (*k, r["metric"], r["model"], ref) in look:
                family.append((i, *look[(*k, r["metric"], r["model"], ref)]))
        if family:
            adj = holm([p for _, _, p in family])
            for (i, diff, _), a in zip(family, adj):
                tidy.loc[i, "p_holm"] = float(a)
                if a < alpha and diff != 0:
                    tidy.loc[i, "sig"] = "better" if (diff > 0) == _better(tidy.loc[i, "metric"]) else "worse"
    for _, part in values.groupby(["metric", "dataset", "bucket"], sort=False):
        metric = part["metric"].iloc[0]
        keys = set(part["_key"])
        if len(part) < 2 or len(keys) != 1:
            continue
        k = keys.pop()
        means = dict(zip(part["model"], part["ours"].astype(float)))
        top = (max if _better(metric) else min)(means, key=means.get)
        tests = {m: (0, look[(*k, metric, m, top)][0], 0, 0, look[(*k, metric, m, top)][1])
                 for m in means if (*k, metric, m, top) in look}
        if len(tests) < len(means) - 1:
            continue  # no per-image pairs (FID): keep the best-value rule
        best = best_set(means, tests, metric, alpha)
        tidy.loc[part.index, "best_ours"] = part["model"].isin(best).to_numpy()


# ---------------------------------------------------------------- ablation
def improvement_vs_baseline(values: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per-method improvement over ``baseline`` in percent, as the CCSA paper computes it
    (Table 4): PSNR and SSIM as relative gain 100 * (v - b) / b, L1 (and any lower-is-better
    metric) as relative reduction 100 * (b - v) / b. ``values``: index = method, columns =
    metrics. The baseline row is NaN (printed "—")."""
    if baseline not in values.index:
        raise InpaintBenchError(f"baseline {baseline!r} is not among the methods {list(values.index)}")
    base = values.loc[baseline]
    out = pd.DataFrame(index=values.index, columns=values.columns, dtype=float)
    for metric in values.columns:
        b = float(base[metric])
        v = values[metric].astype(float)
        out[metric] = 100.0 * ((v - b) if _better(metric) else (b - v)) / b
    out.loc[baseline] = math.nan
    return out


_PCT_METRIC = {"psnr": "psnr_gain_pct", "ssim": "ssim_gain_pct", "l1": "l1_reduction_pct"}


def _add_improvements(tidy: pd.DataFrame, spec: TableSpec, pub_all: pd.DataFrame) -> pd.DataFrame:
    printed = published(spec.paper, spec.table)
    values = tidy[tidy["row"] == "value"]
    ours_wide = values.pivot_table(index="method", columns="metric", values="ours", aggfunc="first", dropna=False)
    rows = []
    have_ours = spec.baseline in ours_wide.index and ours_wide.loc[spec.baseline].notna().any()
    ours_imp = improvement_vs_baseline(ours_wide, spec.baseline) if have_ours else None
    for method in dict.fromkeys(values["method"]):
        for metric in spec.metrics:
            pct = _PCT_METRIC.get(metric)
            p = printed[(printed["method"] == method) & (printed["metric"] == pct)] if pct else printed.iloc[0:0]
            paper_pct = float(p["value"].iloc[0]) if len(p) else math.nan
            ours_pct = float(ours_imp.loc[method, metric]) if ours_imp is not None and method in ours_imp.index else math.nan
            rows.append({"metric": metric, "dataset": values["dataset"].iloc[0], "bucket": values["bucket"].iloc[0],
                         "method": method, "row": "improvement", "model": values.loc[values["method"] == method, "model"].iloc[0],
                         "paper": paper_pct, "ours": ours_pct, "diff": ours_pct - paper_pct, "ours_std": math.nan,
                         "ours_count": math.nan, "fid_flagged": False, "unit": "%", "note": "",
                         "ours_lo": math.nan, "ours_hi": math.nan, "_key": None})
    imp = pd.DataFrame.from_records(rows, columns=tidy.columns)
    both = pd.concat([tidy, imp], ignore_index=True)
    order = {m: i for i, m in enumerate(dict.fromkeys(values["method"]))}
    both["_m"] = both["method"].map(order)
    both["_r"] = both["row"].map({"value": 0, "improvement": 1})
    both["_k"] = both["metric"].map({m: i for i, m in enumerate(spec.metrics)})
    return both.sort_values(["_m", "_r", "_k"], kind="stable").drop(columns=["_m", "_r", "_k"]).reset_index(drop=True)


# ---------------------------------------------------------------- layout + formatting
def _metric_label(spec: TableSpec, metric: str, tidy: pd.DataFrame, latex: bool = False) -> str:
    label = METRIC_LABELS.get(metric, metric)
    if spec.paper == "sahn" and metric == "l1":
        label = "MAE (x1e-1)" if not latex else r"MAE ($\times 10^{-1}$)"
    arrow = ("↑" if _better(metric) else "↓") if not latex else (r"$\uparrow$" if _better(metric) else r"$\downarrow$")
    return f"{label} {arrow}"


def _fmt(value: float, decimals: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{decimals}f}"


def _cells(tidy: pd.DataFrame, spec: TableSpec, *, bold: str | None) -> pd.DataFrame:
    """String cells per tidy row: paper / ours / diff, with bold and footnote markers."""
    out = pd.DataFrame(index=tidy.index, columns=list(VALUE_KINDS), dtype=object)
    for i, r in tidy.iterrows():
        dec = PCT_DECIMALS if r["row"] == "improvement" else spec.decimals.get(r["metric"], 4)
        pct = "%" if r["row"] == "improvement" else ""
        paper = _fmt(r["paper"], dec)
        if paper:
            paper += pct
        elif r["row"] == "value" and r["method"] in _paper_methods(spec):
            paper = "–"  # the paper has the row but the cell is missing/garbled
        elif r["row"] == "improvement":
            paper = "—"
        ours = _fmt(r["ours"], dec)
        if ours:
            lo, hi = r.get("ours_lo", math.nan), r.get("ours_hi", math.nan)
            if r["row"] == "value" and pd.notna(lo) and pd.notna(hi):
                ours += f" [{lo:.{dec}f}, {hi:.{dec}f}]"
            ours += pct + ("†" if r["fid_flagged"] else "")
            ours += {"better": "▲", "worse": "▼"}.get(r.get("sig", "") or "", "")
        diff = _fmt(r["diff"], dec)
        if diff and not diff.startswith("-"):
            diff = "+" + diff
        if bold:
            if r["best_paper"] and paper not in ("", "–", "—"):
                paper = _bold(paper, bold)
            if r["best_ours"] and ours:
                ours = _bold(ours, bold)
        out.loc[i] = [paper, ours, diff + (pct if diff else "")]
    return out


def _paper_methods(spec: TableSpec) -> set[str]:
    return set(published(spec.paper, spec.table)["method"])


def _bold(text: str, style: str) -> str:
    return f"**{text}**" if style == "markdown" else rf"\textbf{{{text}}}"


def _layout(tidy: pd.DataFrame, spec: TableSpec, *, numeric: bool, bold: str | None = None, latex: bool = False) -> pd.DataFrame:
    """Pivot the tidy cells into the paper's layout (numbers, or formatted strings)."""
    if numeric:
        cells = tidy[list(VALUE_KINDS)]
    else:
        cells = _cells(tidy, spec, bold=bold)
    long = pd.concat([tidy[["metric", "dataset", "bucket", "method", "row"]], cells], axis=1)
    long["metric"] = [_metric_label(spec, m, tidy, latex) for m in long["metric"]]
    long = long.melt(id_vars=["metric", "dataset", "bucket", "method", "row"], value_vars=list(VALUE_KINDS), var_name="kind")
    datasets = list(dict.fromkeys(tidy["dataset"]))
    if spec.kind == "ablation":
        long["method"] = np.where(long["row"] == "improvement", IMPROVEMENT_LABEL, long["method"])
        long["method_key"] = long.groupby(["metric", "kind"]).cumcount()
        index, columns = ["method_key", "method"], ["metric", "kind"]
    elif spec.layout == "methods-rows":
        index, columns = ["metric", "method"], ["dataset", "bucket", "kind"]
    else:
        index = ["metric", "bucket"] if len(datasets) == 1 else ["metric", "dataset", "bucket"]
        columns = ["method", "kind"]
    wide = long.pivot_table(index=index, columns=columns, values="value", aggfunc="first", sort=False, dropna=False)
    wide = wide.reindex(columns=_ordered_columns(long, columns))
    wide = wide.reindex(index=pd.MultiIndex.from_frame(long[index].drop_duplicates()))
    if spec.kind == "ablation":
        wide.index = wide.index.droplevel("method_key")
    empty = [i for i in range(wide.columns.nlevels) if set(map(str, wide.columns.get_level_values(i))) == {""}]
    if empty and len(empty) < wide.columns.nlevels:  # e.g. efficiency tables: no dataset/bucket
        wide.columns = wide.columns.droplevel(empty)
    if not numeric:
        wide = wide.fillna("")
    wide.columns.names = [None] * wide.columns.nlevels
    wide.index.names = [{"metric": "Metric", "method": "Method", "dataset": "Dataset", "bucket": "Mask ratio"}.get(n, n)
                        for n in wide.index.names]
    return wide


def _ordered_columns(long: pd.DataFrame, columns: list[str]) -> pd.MultiIndex:
    seen = long[columns].drop_duplicates()
    seen["_kind"] = seen["kind"].map({k: i for i, k in enumerate(VALUE_KINDS)})
    keys = [c for c in columns if c != "kind"]
    first = {c: {v: i for i, v in enumerate(dict.fromkeys(long[c]))} for c in keys}
    for c in keys:
        seen["_" + c] = seen[c].map(first[c])
    seen = seen.sort_values(["_" + c for c in keys] + ["_kind"])
    return pd.MultiIndex.from_frame(seen[columns])


def _caption(pt: PaperTable) -> str:
    spec = pt.spec
    base = spec.caption or f"{spec.paper.upper()} Table {spec.table}: published (paper) vs reproduced (ours)"
    parts = [base + ".", "diff = ours − paper, in the paper's units."]
    t = pt.tidy
    if t["ours_lo"].notna().any():
        n = sorted({int(c) for c in t.loc[t["ours_lo"].notna(), "ours_count"].dropna()})
        parts.append("Ours: mean [bootstrap CI of the mean, evaluation.bootstrap] over n = " + ", ".join(map(str, n)) + " images per cell.")
    if (t["sig"] != "").any() or t["p_holm"].notna().any():
        parts.append(f"▲/▼: significantly better/worse than our {t['reference'].iloc[0]} on the same pairs "
                     "(two-sided Wilcoxon signed-rank; FID: bootstrap test of the paired difference; Holm over this table's "
                     "comparisons, alpha 0.05).")
        parts.append("Bold: best published value per column; among ours, the best mean and every method not "
                     "significantly worse than it (Wilcoxon against the top, Holm within the column).")
    else:
        parts.append(BOLD_RULE)
    if spec.kind == "ablation":
        parts.append(f"Improvement vs {spec.baseline}: PSNR/SSIM relative gain, L1 relative reduction, in %.")
    if pt.tidy["fid_flagged"].any():
        parts.append(FID_FOOTNOTE)
    if (t["paper"].isna() & (t["row"] == "value") & t["method"].isin(_paper_methods(spec))).any():
        parts.append(MISSING_FOOTNOTE)
    return " ".join(parts)


def _flat_header(frame: pd.DataFrame) -> pd.DataFrame:
    flat = frame.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [" ".join(str(x) for x in col if str(x)) for col in flat.columns]
    return flat.reset_index()


def to_markdown(pt: PaperTable) -> str:
    """The table in Markdown (flattened two-level header), caption above."""
    wide = _layout(pt.tidy, pt.spec, numeric=False, bold="markdown")
    return f"**{_caption(pt)}**\n\n" + _flat_header(wide).to_markdown(index=False, disable_numparse=True) + "\n"


_LATEX_SPECIAL = re.compile(r"([&%$#_{}])")


def _tex(text) -> str:
    text = str(text)
    if text.startswith(r"\textbf{") or "$" in text:
        return _tex_marks(text.replace("%", r"\%").replace("†", r"$^\dagger$"))
    return _tex_marks(_LATEX_SPECIAL.sub(r"\\\1", text).replace("~", r"\textasciitilde{}").replace("†", r"$^\dagger$").replace("−", "-"))


def _tex_marks(text: str) -> str:  # ▲/▼ need amssymb
    return text.replace("▲", r"$^{\blacktriangle}$").replace("▼", r"$^{\blacktriangledown}$")


def to_latex(pt: PaperTable) -> str:
    """The table as a booktabs LaTeX ``table`` (best values bold, see the caption)."""
    wide = _layout(pt.tidy, pt.spec, numeric=False, bold="latex", latex=True)
    wide = wide.map(_tex)
    keep_math = lambda x: x if "$" in str(x) else _tex(x)  # noqa: E731 (metric labels carry LaTeX math)
    if isinstance(wide.index, pd.MultiIndex):
        wide.index = pd.MultiIndex.from_tuples([tuple(keep_math(x) for x in idx) for idx in wide.index], names=wide.index.names)
    else:
        wide.index = pd.Index([keep_math(x) for x in wide.index], name=wide.index.name)
    if isinstance(wide.columns, pd.MultiIndex):
        wide.columns = pd.MultiIndex.from_tuples([tuple(_tex(x) for x in col) for col in wide.columns])
    else:
        wide.columns = [_tex(c) for c in wide.columns]
    body = wide.to_latex(escape=False, multicolumn=True, multicolumn_format="c", multirow=True,
                         column_format="l" * wide.index.nlevels + "r" * wide.shape[1])
    label = "tab:" + re.sub(r"[^A-Za-z0-9]+", "-", f"{pt.spec.paper}-{pt.spec.table}-{pt.spec.name}")
    caption = _tex(_caption(pt))
    return ("% needs \\usepackage{booktabs,multirow,graphicx,amssymb}\n\\begin{table}[t]\n\\centering\n\\small\n" + f"\\caption{{{caption}}}\n\\label{{{label}}}\n"
            + "\\resizebox{\\textwidth}{!}{%\n" + body + "}\n\\end{table}\n")


def write_paper_table(pt: PaperTable, out_dir: str | Path, stem: str | None = None) -> dict[str, Path]:
    """Write <stem>.md, <stem>.tex and <stem>.csv (tidy cells) atomically; return the paths."""
    out_dir = Path(out_dir)
    stem = stem or f"{pt.spec.paper}_table{pt.spec.table}"
    paths = {"md": out_dir / f"{stem}.md", "tex": out_dir / f"{stem}.tex", "csv": out_dir / f"{stem}.csv"}
    write_text(paths["md"], to_markdown(pt))
    write_text(paths["tex"], to_latex(pt))
    tidy = pt.tidy.copy()
    records = [{k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()} for rec in tidy.to_dict("records")]
    write_csv(paths["csv"], records, list(tidy.columns))
    return paths


# ---------------------------------------------------------------- metric definitions
def metric_definitions(fid_status: tuple[bool, str] | None = None, *, quantize: str = "uint8", ci: str | None = None,
                       alpha: float = 0.05, lpips_status: tuple[bool, str] | None = None) -> str:
    """The paragraph that defines every reported metric and the statistics (for the report).
    ``ci``: the bootstrap settings in words (``BootstrapSettings.describe()``)."""
    protocol = ("rounded to 8 bits per channel before scoring (`evaluation.quantize: uint8`), exactly the PNG a saved "
                "result holds: the papers' and LaMa's protocol of scoring saved 8-bit images"
                if quantize == "uint8" else
                "scored as float, not rounded to 8 bits (`evaluation.quantize: none`; the papers score saved 8-bit PNGs, "
                "so means can differ from theirs in the last digits)")
    text = (
        "**Metrics.** Every metric scores the composite `out = pred * mask + image * (1 - mask)` "
        f"(mask 1 = hole), with images as float RGB in [0, 1] at the evaluated resolution, {protocol}. "
        "**PSNR** = 10 log10(1 / MSE) over all pixels and channels (data range 1). "
        "**SSIM** (Wang et al. 2004) with an 11x11 Gaussian window of sigma 1.5, data range 1, "
        "K1 = 0.01, K2 = 0.03, population (not sample) covariances, mean over the valid (un-padded) region, per channel and "
        "averaged (equal to scikit-image `structural_similarity(gaussian_weights=True, sigma=1.5, "
        "use_sample_covariance=False, data_range=1, channel_axis=...)`). "
        "**L1** is the mean absolute error over the full image, all channels (the papers' "
        "\"L1 error\" / \"MAE\"; SAHN prints it in units of 1e-1, and the SAHN tables here are "
        "converted to those units); **L1 (hole)** is the mean absolute error over hole pixels only. "
        "**LPIPS** (Zhang et al. 2018) via the `lpips` package (v0.1 linear layers shipped with it, ImageNet "
        "AlexNet backbone from the torchvision cache), inputs scaled to [-1, 1]; lower is better. "
        "**FID** (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to the "
        "2048-d pool3 features of pytorch-fid's Inception network (TensorFlow FID weights, "
        "images resized bilinearly to 299x299) of the ground-truth and the composited images of a "
        "bucket; with fewer than 2048 images per set the covariance is not full rank and the value "
        "is flagged (†): it is biased upward and not comparable with published FID. "
        "**KID** (Bińkowski et al. 2018), from the same features: the unbiased squared MMD with the kernel "
        "(x·y/2048 + 1)^3, averaged over 100 random subsets of min(1000, n) images per set (one full-set estimate "
        "when n ≤ 1000); unbiased, so meaningful for the small buckets where FID is flagged. "
        "Mask-ratio buckets are intervals of the hole fraction of the binarised mask; n, the number of images of a "
        "bucket, is in every table's column header. "
        "**Uncertainty.** Each mean is shown as `mean [lo, hi]`, the confidence interval of the mean over the bucket's "
        f"images ({ci or 'bootstrap'}: the images are resampled with replacement; BCa = bias-corrected and "
        "accelerated, jackknife acceleration). FID and KID intervals resample the pairs of the two saved Inception "
        "feature sets (the same pairs on both sides); the FID interval is shifted by the bootstrap bias estimate "
        "because a resample holds fewer distinct images. "
        "**Paired tests.** Scores on the same pairs are paired: each experiment names a reference method, and "
        "every other method is compared with it on the same pairs by the mean paired difference (with its bootstrap "
        "CI) and the two-sided Wilcoxon signed-rank test (zero differences dropped; exact null distribution for n ≤ 50 "
        "without ties, else permutations for n ≤ 13 or the tie-corrected normal approximation). "
        f"The p-values are Holm-corrected over all comparisons of a table (family-wise error {alpha}); ▲/▼ mark a "
        "method significantly better/worse than the reference. **Best** in a column is a set, not one number: the "
        "method with the best mean and every method not significantly worse than it (Wilcoxon against the top "
        "method, Holm within the column), bold in Markdown and LaTeX. FID and KID have no per-image scores: their tests "
        "compare two methods on the same resampled pairs of the saved features (bootstrap CI of the difference, "
        "p-value by inverting it), Holm-corrected in the same families."
    )
    if fid_status is not None:
        available, reason = fid_status
        text += " " + (reason if reason else ("FID computed." if available else "FID not computed."))
    if lpips_status is not None:
        text += " " + (lpips_status[1] or ("LPIPS computed." if lpips_status[0] else "LPIPS not computed."))
    return text
