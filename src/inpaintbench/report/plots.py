"""Figures with one fixed, legible style: training loss per model, per-epoch validation curves,
metric vs mask-ratio bucket, and qualitative grids (input, each method, ground truth).

Conventions: every axis has a label with its unit; epoch axes have integer ticks; each method
keeps one style (colour × marker × line style, 40 distinct combinations, so 15+ methods stay
tellable apart) across all figures of a report; the legend sits under the panels, in columns.
A model's total training loss is its own objective (different terms and weights per
architecture), so total losses are drawn one panel per model, each with its own y-axis, never
overlaid on one axis; loss *terms* shared by a family (e.g. the CCSA variants' hole L1) may share
a panel, one per term.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..io import atomic_path, load_image, load_mask  # noqa: E402

STYLE = {"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "legend.fontsize": 8, "legend.frameon": False}

_COLORS = [plt.get_cmap("tab10")(i) for i in range(10)]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_LINES = ["-", "--", "-.", ":"]

#: y-axis label (with unit) per metric / curve key
UNITS = {"psnr": "PSNR (dB)", "ssim": "SSIM (0–1)", "l1": "L1 (mean |error|, 0–1)",
         "l1_hole": "L1 in the hole (0–1)", "lpips": "LPIPS (distance)", "fid": "FID", "kid": "KID",
         "loss": "loss (model's objective)"}


def style_for(i: int) -> dict:
    """The i-th method's style: 10 colours × 4 line styles, markers cycling independently (40
    distinct colour/line combinations; the marker separates further)."""
    return {"color": _COLORS[i % 10], "linestyle": _LINES[(i // 10) % 4], "marker": _MARKERS[i % len(_MARKERS)]}


def styles(names) -> dict[str, dict]:
    return {n: style_for(i) for i, n in enumerate(dict.fromkeys(names))}


def _legend(fig, handles_labels: dict) -> None:
    """One legend for the whole figure, under the panels, in as many columns as fit."""
    if not handles_labels:
        return
    ncol = min(len(handles_labels), 5)
    fig.legend(list(handles_labels.values()), list(handles_labels.keys()), loc="upper center",
               bbox_to_anchor=(0.5, 0.0), ncol=ncol, handlelength=3.0)


def _collect(ax, into: dict) -> None:
    for h, l in zip(*ax.get_legend_handles_labels()):
        into.setdefault(l, h)


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if len(y) < 3 or window < 2:
        return y
    window = min(window, len(y))
    kernel = np.ones(window) / window
    pad = np.concatenate([np.full(window - 1, y[0]), y])
    return np.convolve(pad, kernel, mode="valid")


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _integer_epochs(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def loss_curves(histories: dict[str, pd.DataFrame], path: Path, title: str, order: list[str] | None = None) -> None:
    """The total training loss per step (moving average over ~4 % of the steps), one panel per
    model with its own y-axis: the models' objectives differ, so they are never overlaid."""
    names = [n for n, h in histories.items() if "loss" in h and h["loss"].notna().any()]
    sty = styles(order or histories)
    rows, cols = _grid(max(1, len(names)))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            h = histories[name]
            y = h["loss"].to_numpy(float)
            ax.plot(h["step"], _smooth(y, max(1, len(y) // 25)), lw=1.3, color=sty.get(name, style_for(0))["color"])
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("training step")
            ax.set_ylabel(UNITS["loss"])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
            if (y > 0).all() and y.max() / max(y.min(), 1e-12) > 20:
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(names):]:
            ax.set_visible(False)
        fig.suptitle(title, y=1.0)
        fig.tight_layout()
        _save(fig, path)


def loss_terms(histories: dict[str, pd.DataFrame], path: Path, title: str, keys: list[str],
               names: dict[str, str] | None = None, order: list[str] | None = None) -> None:
    """Per-epoch mean of named loss terms: one panel per term (one objective per axis), one line
    per model of the family (as SAHN's Figure 5)."""
    names = names or {}
    per_epoch = {k: h.groupby("epoch", as_index=False).mean(numeric_only=True) for k, h in histories.items()}
    keys = [k for k in keys if any(k in h and h[k].notna().any() for h in per_epoch.values())]
    sty = styles(order or histories)
    rows, cols = _grid(max(1, len(keys)))
    handles: dict = {}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.6 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            for name, h in per_epoch.items():
                if key in h and h[key].notna().any():
                    ax.plot(h["epoch"], h[key], label=name, lw=1.3, ms=4, **sty.get(name, {}))
            ax.set_title(names.get(key, key), fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("mean loss term per epoch")
            _integer_epochs(ax)
            _collect(ax, handles)
        for ax in list(axes.flat)[len(keys):]:
            ax.set_visible(False)
        fig.suptitle(title, y=1.0)
        fig.tight_layout()
        _legend(fig, handles)
        _save(fig, path)


def epoch_curves(epochs: dict[str, pd.DataFrame], path: Path, title: str,
                 keys: tuple[str, ...] = ("val_psnr", "val_l1"), order: list[str] | None = None) -> None:
    """Per-epoch validation metrics per model (the CCSA paper's Figures 4 and 5 plot PSNR and L1)."""
    sty = styles(order or epochs)
    handles: dict = {}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            metric = key.replace("val_", "")
            for name, e in epochs.items():
                if key in e:
                    ax.plot(e["epoch"], e[key], label=name, lw=1.3, ms=4, **sty.get(name, {}))
            ax.set_title("validation " + metric.upper().replace("_", " "))
            ax.set_xlabel("epoch")
            ax.set_ylabel(UNITS.get(metric, metric))
            _integer_epochs(ax)
            _collect(ax, handles)
        fig.suptitle(title, y=1.02)
        fig.tight_layout()
        _legend(fig, handles)
        _save(fig, path)


def metric_vs_bucket(summary: pd.DataFrame, dataset: str, models: list[str], buckets: list[str], metrics: list[str],
                     path: Path, title: str, labels: dict[str, str]) -> None:
    """Mean of each metric per hole-ratio bucket, one line per method (styles as elsewhere)."""
    sty = styles(labels.get(m, m) for m in models)
    handles: dict = {}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.7 * len(metrics), 3.0), squeeze=False)
        x = np.arange(len(buckets))
        for ax, metric in zip(axes[0], metrics):
            for model in models:
                sub = summary[(summary["dataset"] == dataset) & (summary["model"] == model) & (summary["metric"] == metric)]
                ys = [sub.loc[sub["bucket"] == b, "mean"].iloc[0] if (sub["bucket"] == b).any() else np.nan for b in buckets]
                name = labels.get(model, model)
                ax.plot(x, ys, lw=1.3, ms=4, label=name, **sty[name])
            ax.set_xticks(x, buckets, rotation=20)
            ax.set_title(metric.upper().replace("_", " "))
            ax.set_xlabel("hole ratio (fraction of the image)")
            ax.set_ylabel(UNITS.get(metric, metric))
            _collect(ax, handles)
        fig.suptitle(title, y=1.02)
        fig.tight_layout()
        _legend(fig, handles)
        _save(fig, path)


def pick_samples(pairs: list[dict], available, per_bucket: int = 1, candidates: int = 64) -> list[dict]:
    """Per bucket, the pairs whose ground truth shows the most content: highest standard deviation
    of the image, among those not nearly black or white (mean brightness within [0.12, 0.88]
    when any is), restricted to pairs every method has a saved sample for (`available(pair)`);
    the first `candidates` such pairs of each bucket (pair files are in seeded random order) are
    looked at, so large test sets are not all decoded."""
    by_bucket: dict[str, list[tuple[float, int, dict]]] = {}
    for i, p in enumerate(pairs):
        if len(by_bucket.get(p["bucket"], [])) >= candidates or not available(p):
            continue
        img = load_image(p["image_path"])
        by_bucket.setdefault(p["bucket"], []).append((float(img.std()), float(img.mean()), i, p))
    chosen = []
    for bucket, cands in by_bucket.items():
        lit = [c for c in cands if 0.12 <= c[1] <= 0.88] or cands
        lit.sort(key=lambda c: (-c[0], c[2]))
        chosen += [c[3] for c in lit[:per_bucket]]
    return chosen


def sample_grid(pairs: list[dict], method_images: dict[str, list[np.ndarray]], path: Path, title: str,
                tile_inches: float = 1.9) -> None:
    """Rows: pairs (labelled with the hole-ratio bucket); columns: the input with its holes shown
    in white, each method's composite, the ground truth."""
    cols = ["input (holes white)", *method_images.keys(), "ground truth"]
    n = len(pairs)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(max(n, 1), len(cols), figsize=(tile_inches * len(cols), tile_inches * max(n, 1) + 0.5),
                                 squeeze=False)
        for i, p in enumerate(pairs):
            image = load_image(p["image_path"])
            mask = load_mask(p["mask_path"])
            masked = image * (1 - mask[..., None]) + mask[..., None] * np.array([1.0, 1.0, 1.0])
            tiles = [masked, *[imgs[i] for imgs in method_images.values()], image]
            for j, tile in enumerate(tiles):
                ax = axes[i][j]
                ax.imshow(np.clip(tile, 0, 1), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(textwrap.fill(cols[j], 16), fontsize=8)
                if j == 0:
                    ax.set_ylabel(f"hole {p['bucket']}", fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        _save(fig, path)
