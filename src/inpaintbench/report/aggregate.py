"""Per-bucket summaries of the per-image metrics (mean ± std, count), and overall ("all")."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..errors import InpaintBenchError
from ..io import atomic_path
from ..metrics.quality import METRICS

SUMMARY_FIELDS = ["experiment", "train", "dataset", "model", "bucket", "metric", "mean", "std", "count"]
ALL = "all"


def summarise(per_image: pd.DataFrame, bucket_order: list[str]) -> pd.DataFrame:
    rows = []
    keys = ["experiment", "train", "dataset", "model"]
    for key, group in per_image.groupby(keys, sort=False):
        for bucket in [*bucket_order, ALL]:
            sel = group if bucket == ALL else group[group["bucket"] == bucket]
            if sel.empty:
                continue
            for metric in METRICS:
                values = sel[metric].astype(float).to_numpy()
                rows.append({**dict(zip(keys, key)), "bucket": bucket, "metric": metric,
                             "mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                             "count": int(len(values))})
    return pd.DataFrame(rows, columns=SUMMARY_FIELDS)


def aggregate_experiment(params, experiment: str) -> Path:
    exp = params.experiment(experiment)
    frames, fids = [], []
    for run in exp["runs"]:
        for model in exp["models"]:
            f = paths.metrics_csv(experiment, run["train"], model)
            if not f.exists():
                raise InpaintBenchError(f"{f} is missing; run the evaluate step for {model} first")
            frames.append(pd.read_csv(f, dtype={"pair_id": str, "mask_id": str}))
            fid = f.parent / "fid.csv"
            if fid.exists() and fid.stat().st_size > 0:
                fids.append(pd.read_csv(fid))
    per_image = pd.concat(frames, ignore_index=True)
    summary = summarise(per_image, [b.label for b in params.buckets(experiment)])
    fids = [f for f in fids if not f.empty]
    if fids:
        summary = pd.concat([summary, *[f[SUMMARY_FIELDS] for f in fids]], ignore_index=True)
    out = paths.summary_csv(experiment)
    with atomic_path(out) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6f")
    return out
