"""Per-bucket summaries of the per-image metrics and the paired comparisons between methods.

``results/<experiment>/summary.csv`` (one row per train, dataset, model, bucket, metric):
``mean``, ``std`` (sample, ddof 1), ``count`` (n images in the bucket), ``lo``/``hi`` (the
bootstrap CI of the mean over the bucket's images, ``evaluation.bootstrap``; for FID and KID the
CI over resampled pairs computed by the evaluate step). Buckets are the experiment's plus "all".

``results/<experiment>/paired.csv``: for every two methods a, b (a before b in the experiment's
model order) on the same pairs of a (train, dataset, bucket) and every per-image metric: ``n``,
``diff`` = mean of a - b over the pairs, its bootstrap CI ``lo``/``hi``, and ``p``, the two-sided
Wilcoxon signed-rank p-value, *uncorrected*: the tables apply Holm within each table (family =
the comparisons shown in that table), see ``report.tables``. FID and KID rows (when the evaluate
step saved Inception features) compare the two set metrics on the same resampled pairs:
``diff`` its bootstrap CI and a bootstrap p-value (``metrics.kid.paired_difference``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..errors import InpaintBenchError
from ..io import atomic_path, read_frame
from ..metrics.quality import METRICS
from ..metrics.stats import BootstrapSettings, ci_from_boot, resample_counts, wilcoxon_p

PER_IMAGE_METRICS = (*METRICS, "lpips")
SUMMARY_FIELDS = ["experiment", "train", "dataset", "model", "bucket", "metric", "mean", "std", "count", "lo", "hi"]
PAIRED_FIELDS = ["experiment", "train", "dataset", "bucket", "metric", "model", "other", "n", "diff", "lo", "hi", "p"]
ALL = "all"


def _metrics_present(per_image: pd.DataFrame) -> list[str]:
    return [m for m in PER_IMAGE_METRICS if m in per_image.columns and per_image[m].notna().any()]


def _blocks(per_image: pd.DataFrame, models: list[str] | None, bucket_order: list[str]):
    """(experiment, train, dataset, metric, bucket, models, values models x pairs), the pairs
    aligned across models by pair_id; a model with a missing value in a block is left out of it."""
    metrics = _metrics_present(per_image)
    for (experiment, train, dataset), group in per_image.groupby(["experiment", "train", "dataset"], sort=False):
        order = [m for m in (models or []) if m in set(group["model"])]
        order += [m for m in dict.fromkeys(group["model"]) if m not in order]
        bucket_of = group.drop_duplicates("pair_id").set_index("pair_id")["bucket"]
        for metric in metrics:
            wide = group.pivot_table(index="pair_id", columns="model", values=metric, aggfunc="first")
            buckets = bucket_of.reindex(wide.index).to_numpy()
            for bucket in [*bucket_order, ALL]:
                sel = np.ones(len(wide), bool) if bucket == ALL else buckets == bucket
                if not sel.any():
                    continue
                block = wide.loc[sel]
                cols = [m for m in order if m in block.columns and block[m].notna().all()]
                if cols:
                    yield experiment, train, dataset, metric, bucket, cols, block[cols].to_numpy(dtype=np.float64).T


def _stats(per_image, models, bucket_order, settings, *, pairs: bool):
    summary, paired = [], []
    for experiment, train, dataset, metric, bucket, cols, x in _blocks(per_image, models, bucket_order):
        k, n = x.shape
        key = {"experiment": experiment, "train": train, "dataset": dataset}
        finite = np.isfinite(x).all(-1)
        boot = x[finite] @ resample_counts(n, settings).T / n if n > 1 and finite.any() else None
        lo, hi = np.full(k, np.nan), np.full(k, np.nan)
        if boot is not None:
            lo[finite], hi[finite] = ci_from_boot(x[finite], boot, settings)
        elif n == 1:
            lo, hi = x[:, 0].copy(), x[:, 0].copy()
        for j, m in enumerate(cols):
            summary.append({**key, "model": m, "bucket": bucket, "metric": metric, "mean": float(x[j].mean()),
                            "std": float(np.std(x[j], ddof=1)) if n > 1 else 0.0, "count": int(n),
                            "lo": float(lo[j]), "hi": float(hi[j])})
        if not pairs or n < 2 or k < 2:
            continue
        combos = [(i, j) for i in range(k) for j in range(i + 1, k) if finite[i] and finite[j]]
        if not combos:
            continue
        row = np.cumsum(finite) - 1  # row of each model in boot
        a, b = np.array([c[0] for c in combos]), np.array([c[1] for c in combos])
        d = x[a] - x[b]
        dlo, dhi = ci_from_boot(d, boot[row[a]] - boot[row[b]], settings)  # resampled mean differences
        p = wilcoxon_p(d)
        for t, (i, j) in enumerate(combos):
            paired.append({**key, "bucket": bucket, "metric": metric, "model": cols[i], "other": cols[j], "n": int(n),
                           "diff": float(d[t].mean()), "lo": float(dlo[t]), "hi": float(dhi[t]), "p": float(p[t])})
    return pd.DataFrame(summary, columns=SUMMARY_FIELDS), pd.DataFrame(paired, columns=PAIRED_FIELDS)


def summarise(per_image: pd.DataFrame, bucket_order: list[str], settings: BootstrapSettings = BootstrapSettings()) -> pd.DataFrame:
    """Mean, std, n and bootstrap CI per (experiment, train, dataset, model, bucket, metric)."""
    return _stats(per_image, None, bucket_order, settings, pairs=False)[0]


def paired_table(per_image: pd.DataFrame, models: list[str], bucket_order: list[str],
                 settings: BootstrapSettings = BootstrapSettings()) -> pd.DataFrame:
    """Every pair of methods on the same pairs, per (experiment, train, dataset, bucket, metric)."""
    return _stats(per_image, models, bucket_order, settings, pairs=True)[1]


def feature_pairs(params, experiment: str, models: list[str], bucket_order: list[str], settings: BootstrapSettings) -> pd.DataFrame:
    """FID and KID comparisons of every two methods from the saved Inception features
    (features_<dataset>.npz of the evaluate step), on the same pairs and the same resamples:
    rows as in paired.csv, ``p`` the bootstrap p-value of ``metrics.kid.paired_difference``."""
    from ..metrics.kid import feature_boot, paired_difference

    resamples = int(dict(params.raw.get("fid") or {}).get("ci_resamples", 200))
    rows = []
    for run in params.experiment(experiment)["runs"]:
        evaluated = set(params.run_models(experiment, run["train"]))  # a run's released entries: that run only
        for dataset in run["eval"]:
            feats = {}
            for m in [m for m in models if m in evaluated]:
                f = paths.result_dir(experiment, run["train"], m) / f"features_{dataset}.npz"
                if f.exists():
                    with np.load(f) as z:
                        feats[m] = {k: z[k] for k in ("real", "fake", "bucket", "pair_id")}
            if len(feats) < 2:
                continue
            first = next(iter(feats.values()))
            feats = {m: v for m, v in feats.items() if np.array_equal(v["pair_id"], first["pair_id"])}
            order = [m for m in models if m in feats]
            for bucket in [*bucket_order, ALL]:
                sel = np.ones(len(first["bucket"]), bool) if bucket == ALL else first["bucket"] == bucket
                if sel.sum() < 3:
                    continue
                boots = {m: feature_boot(feats[m]["real"][sel], feats[m]["fake"][sel], settings, resamples) for m in order}
                for i, a in enumerate(order):
                    for b in order[i + 1:]:
                        for metric in ("fid", "kid"):
                            diff, lo, hi, p = paired_difference(boots[a], boots[b], metric, settings.level)
                            rows.append({"experiment": experiment, "train": run["train"], "dataset": dataset, "bucket": bucket,
                                         "metric": metric, "model": a, "other": b, "n": int(sel.sum()), "diff": diff,
                                         "lo": lo, "hi": hi, "p": p})
    return pd.DataFrame(rows, columns=PAIRED_FIELDS)


def evaluated_models(params, experiment: str) -> list[str]:
    """The experiment's models (with its present `released`), then every run's own present
    released checkpoints (config.Params.run_released), in that order: the model order of the
    summary's paired comparisons and of the report."""
    exp = params.experiment(experiment)
    extra = [m for run in exp["runs"] for m in params.run_released(experiment, run["train"])]
    return list(dict.fromkeys([*exp["models"], *extra]))


def aggregate_experiment(params, experiment: str) -> Path:
    from ..evaluate import bootstrap_settings

    exp = params.experiment(experiment)
    settings = bootstrap_settings(params)
    frames, fids = [], []
    models = evaluated_models(params, experiment)
    for run in exp["runs"]:
        for model in params.run_models(experiment, run["train"]):  # a run's own released entries: that run only
            f = paths.metrics_csv(experiment, run["train"], model)
            if not f.exists():
                raise InpaintBenchError(f"{f} is missing; run the evaluate step for {model} first")
            frames.append(read_frame(f, dtype={"pair_id": str, "mask_id": str}))  # checked: not cut short
            fid = f.parent / "fid.csv"
            if fid.exists() and fid.stat().st_size > 0:
                fids.append(read_frame(fid))
    per_image = pd.concat(frames, ignore_index=True)
    buckets = [b.label for b in params.buckets(experiment)]
    summary, paired = _stats(per_image, models, buckets, settings, pairs=True)
    feature_rows = feature_pairs(params, experiment, models, buckets, settings)
    if not feature_rows.empty:
        paired = pd.concat([paired, feature_rows], ignore_index=True)
    fids = [f.reindex(columns=SUMMARY_FIELDS) for f in fids if not f.empty]
    if fids:
        summary = pd.concat([summary, *fids], ignore_index=True)
    out = paths.summary_csv(experiment)
    with atomic_path(out) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6f")
    with atomic_path(out.parent / "paired.csv") as tmp:
        paired.to_csv(tmp, index=False, float_format="%.6g")
    return out
