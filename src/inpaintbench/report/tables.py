"""Comparison tables: methods × mask-ratio buckets × metrics, per evaluated dataset.

Written as Markdown (mean ± std), LaTeX (booktabs, best mean per column in bold) and CSV (the
tidy summary rows). Written from results files, never from MLflow.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..io import atomic_path, write_text
from ..metrics.quality import HIGHER_IS_BETTER

METRIC_TITLES = {"psnr": "PSNR↑", "ssim": "SSIM↑", "l1": "L1↓", "l1_hole": "L1 hole↓", "fid": "FID↓"}
DIGITS = {"psnr": 2, "ssim": 4, "l1": 4, "l1_hole": 4, "fid": 2}


def _fmt(metric: str, mean: float, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    d = DIGITS.get(metric, 4)
    return f"{mean:.{d}f}" if std is None or math.isnan(std) else f"{mean:.{d}f} ± {std:.{d}f}"


def wide_table(summary: pd.DataFrame, dataset: str, models: list[str], buckets: list[str], metrics: list[str],
               with_std: bool = True) -> pd.DataFrame:
    """Rows: models (in params order); columns: (metric, bucket); cells: formatted mean ± std."""
    sub = summary[summary["dataset"] == dataset]
    cols = pd.MultiIndex.from_tuples([(METRIC_TITLES.get(m, m), b) for m in metrics for b in buckets])
    data = []
    for model in models:
        row = []
        for m in metrics:
            for b in buckets:
                hit = sub[(sub["model"] == model) & (sub["metric"] == m) & (sub["bucket"] == b)]
                row.append(_fmt(m, float(hit["mean"].iloc[0]), float(hit["std"].iloc[0]) if with_std else None)
                           if not hit.empty else "—")
        data.append(row)
    return pd.DataFrame(data, index=pd.Index(models, name="method"), columns=cols)


def best_models(summary: pd.DataFrame, dataset: str, models: list[str], metric: str, bucket: str) -> set[str]:
    sub = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric) & (summary["bucket"] == bucket)
                  & summary["model"].isin(models)]
    if sub.empty:
        return set()
    best = sub["mean"].max() if HIGHER_IS_BETTER.get(metric, True) else sub["mean"].min()
    return set(sub.loc[sub["mean"] == best, "model"])


def _tex_title(metric: str) -> str:
    title = METRIC_TITLES.get(metric, metric).replace("_", r"\_")
    return title.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$")


def latex_table(summary: pd.DataFrame, dataset: str, models: list[str], buckets: list[str], metrics: list[str],
                caption: str) -> str:
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%")
    ncols = len(metrics) * len(buckets)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}", rf"\begin{{tabular}}{{l{'r' * ncols}}}",
             r"\toprule",
             "Method & " + " & ".join(r"\multicolumn{%d}{c}{%s}" % (len(buckets), _tex_title(m)) for m in metrics) + r" \\",
             " & " + " & ".join(esc(b) for _ in metrics for b in buckets) + r" \\", r"\midrule"]
    bold = {(m, b): best_models(summary, dataset, models, m, b) for m in metrics for b in buckets}
    sub = summary[summary["dataset"] == dataset]
    for model in models:
        cells = []
        for m in metrics:
            for b in buckets:
                hit = sub[(sub["model"] == model) & (sub["metric"] == m) & (sub["bucket"] == b)]
                text = _fmt(m, float(hit["mean"].iloc[0])) if not hit.empty else "--"
                cells.append(rf"\textbf{{{text}}}" if model in bold[(m, b)] else text)
        lines.append(esc(model) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_experiment_tables(summary: pd.DataFrame, out_dir: Path, experiment: str, models: list[str],
                            buckets: list[str], metrics: list[str], datasets: list[str], labels: dict[str, str]) -> dict[str, str]:
    """Write table.md / table.tex / table.csv for one experiment; returns {dataset: markdown}."""
    out_dir = Path(out_dir)
    md_parts, tex_parts, md_by_ds = [f"# {experiment}: comparison\n"], [], {}
    for ds in datasets:
        blocks = []
        for metric in metrics:  # Markdown: one small methods × buckets table per metric
            wide = wide_table(summary, ds, models, buckets, [metric])
            wide.columns = [b for _, b in wide.columns]
            wide.index = pd.Index([labels.get(m, m) for m in wide.index], name=METRIC_TITLES.get(metric, metric))
            blocks.append(wide.to_markdown())
        md = "\n\n".join(blocks)
        md_by_ds[ds] = md
        md_parts.append(f"\n## {ds}\n\n{md}\n")
        tex_parts.append(latex_table(summary, ds, models, buckets, metrics, f"{experiment}: {ds} (best in bold)"))
    write_text(out_dir / "table.md", "".join(md_parts))
    write_text(out_dir / "table.tex", "\n".join(tex_parts))
    tidy = summary[summary["dataset"].isin(datasets) & summary["model"].isin(models)]
    with atomic_path(out_dir / "table.csv") as tmp:
        tidy.to_csv(tmp, index=False, float_format="%.6f")
    return md_by_ds
