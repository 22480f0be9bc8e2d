"""Per-bucket summaries of the per-image metrics and the paired comparisons between methods.

``results/<experiment>/summary.csv`` (one row per train, dataset, model, bucket, metric):
``mean``, ``std`` (sample, ddof 1), ``count`` (n images in the bucket), ``lo``/``hi`` (the
bootstrap CI of the mean over the bucket's images, ``evaluation.bootstrap``; for FID and KID the
CI over resampled pairs computed by the evaluate step). Buckets are the experiment's plus "all".

``results/<experiment>/paired.csv``: for every two methods a, b (a before b in the experiment's
model order) on the same pairs of a (train, dataset, bucket) and every per-image metric: ``n``,
``diff`` = mean of a - b over the pairs, its bootstrap CI ``lo``/``hi``, and ``p``, the two-sided
Wilcoxon signed-rank p-value, *uncorrected*: the tables apply Holm within each table (family =
the comparisons shown in that table), see ``report.tables``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..errors import InpaintBenchError
from ..io import atomic_path, read_frame
from ..metrics.quality import METRICS
from ..metrics.stats import BootstrapSettings, bootstrap_mean_ci, paired_comparison

PER_IMAGE_METRICS = (*METRICS, "lpips")
SUMMARY_FIELDS = ["experiment", "train", "dataset", "model", "bucket", "metric", "mean", "std", "count", "lo", "hi"]
PAIRED_FIELDS = ["experiment", "train", "dataset", "bucket", "metric", "model", "other", "n", "diff", "lo", "hi", "p"]
ALL = "all"


def _metrics_present(per_image: pd.DataFrame) -> list[str]:
    return [m for m in PER_IMAGE_METRICS if m in per_image.columns and per_image[m].notna().any()]


def summarise(per_image: pd.DataFrame, bucket_order: list[str], settings: BootstrapSettings = BootstrapSettings()) -> pd.DataFrame:
    """Mean, std, n and bootstrap CI per (experiment, train, dataset, model, bucket, metric)."""
    rows = []
    keys = ["experiment", "train", "dataset", "model"]
    metrics = _metrics_present(per_image)
    for key, group in per_image.groupby(keys, sort=False):
        for bucket in [*bucket_order, ALL]:
            sel = group if bucket == ALL else group[group["bucket"] == bucket]
            if sel.empty:
                continue
            present = [m for m in metrics if sel[m].notna().all()]
            if not present:
                continue
            values = sel[present].astype(float).to_numpy().T  # metrics x images, one bootstrap call
            lo, hi = bootstrap_mean_ci(values, settings)
            for j, metric in enumerate(present):
                v = values[j]
                rows.append({**dict(zip(keys, key)), "bucket": bucket, "metric": metric,
                             "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                             "count": int(len(v)), "lo": float(lo[j]), "hi": float(hi[j])})
    return pd.DataFrame(rows, columns=SUMMARY_FIELDS)


def paired_table(per_image: pd.DataFrame, models: list[str], bucket_order: list[str],
                 settings: BootstrapSettings = BootstrapSettings()) -> pd.DataFrame:
    """Every pair of methods on the same pairs, per (experiment, train, dataset, bucket, metric)."""
    rows = []
    metrics = _metrics_present(per_image)
    for (experiment, train, dataset), group in per_image.groupby(["experiment", "train", "dataset"], sort=False):
        present = [m for m in models if m in set(group["model"])]
        for metric in metrics:
            wide = group.pivot_table(index="pair_id", columns="model", values=metric, aggfunc="first")
            bucket_of = group.drop_duplicates("pair_id").set_index("pair_id")["bucket"].reindex(wide.index)
            cols = [m for m in present if m in wide.columns and wide[m].notna().all()]
            combos = [(a, b) for i, a in enumerate(cols) for b in cols[i + 1:]]
            if not combos:
                continue
            for bucket in [*bucket_order, ALL]:
                sel = np.ones(len(wide), bool) if bucket == ALL else (bucket_of == bucket).to_numpy()
                if sel.sum() < 2:
                    continue
                arr = wide.loc[sel, cols].to_numpy(dtype=np.float64).T  # models x pairs
                pos = {m: i for i, m in enumerate(cols)}
                x = np.stack([arr[pos[a]] for a, _ in combos])
                y = np.stack([arr[pos[b]] for _, b in combos])
                res = paired_comparison(x, y, settings)
                for i, (a, b) in enumerate(combos):
                    rows.append({"experiment": experiment, "train": train, "dataset": dataset, "bucket": bucket,
                                 "metric": metric, "model": a, "other": b, "n": int(res.n[i]), "diff": float(res.diff[i]),
                                 "lo": float(res.lo[i]), "hi": float(res.hi[i]), "p": float(res.p[i])})
    return pd.DataFrame(rows, columns=PAIRED_FIELDS)


def aggregate_experiment(params, experiment: str) -> Path:
    from ..evaluate import bootstrap_settings

    exp = params.experiment(experiment)
    settings = bootstrap_settings(params)
    frames, fids = [], []
    for run in exp["runs"]:
        for model in exp["models"]:
            f = paths.metrics_csv(experiment, run["train"], model)
            if not f.exists():
                raise InpaintBenchError(f"{f} is missing; run the evaluate step for {model} first")
            frames.append(read_frame(f, dtype={"pair_id": str, "mask_id": str}))  # checked: not cut short
            fid = f.parent / "fid.csv"
            if fid.exists() and fid.stat().st_size > 0:
                fids.append(read_frame(fid))
    per_image = pd.concat(frames, ignore_index=True)
    buckets = [b.label for b in params.buckets(experiment)]
    summary = summarise(per_image, buckets, settings)
    fids = [f.reindex(columns=SUMMARY_FIELDS) for f in fids if not f.empty]
    if fids:
        summary = pd.concat([summary, *fids], ignore_index=True)
    paired = paired_table(per_image, list(exp["models"]), buckets, settings)
    out = paths.summary_csv(experiment)
    with atomic_path(out) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6f")
    with atomic_path(out.parent / "paired.csv") as tmp:
        paired.to_csv(tmp, index=False, float_format="%.6g")
    return out
