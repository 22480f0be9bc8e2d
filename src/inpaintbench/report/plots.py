"""Figures with one fixed, legible style: loss curves, per-epoch validation curves, metric vs
mask-ratio bucket, and qualitative grids (masked input, each method, ground truth)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path, load_image, load_mask  # noqa: E402

from cycler import cycler  # noqa: E402

# 20 distinct colours (tab20) and alternating line styles: up to 14 methods stay tellable apart
STYLE = {"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "legend.fontsize": 8, "legend.frameon": False,
         "axes.prop_cycle": cycler(color=[plt.get_cmap("tab20")(i) for i in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 1, 3, 5, 7)])
         + cycler(linestyle=["-", "--"] * 7)}


def _legend(fig, axes) -> None:
    """One legend for the figure, outside the plots on the right."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.92))


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


def loss_curves(histories: dict[str, pd.DataFrame], path: Path, title: str, keys: list[str] | None = None,
                per_epoch: bool = False) -> None:
    """One panel per loss key (default: the total 'loss'), one line per model: per step
    (smoothed), or the mean over each epoch (as SAHN's Figure 5)."""
    keys = keys or ["loss"]
    if per_epoch:
        histories = {k: h.groupby("epoch", as_index=False).mean(numeric_only=True).assign(step=lambda d: d["epoch"])
                     for k, h in histories.items()}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for name, h in histories.items():
                if key in h and h[key].notna().any():
                    y = h[key].to_numpy(float)
                    ax.plot(h["step"], y if per_epoch else _smooth(y, max(1, len(y) // 25)), label=name, lw=1.3,
                            marker="o" if per_epoch else None, ms=3)
            ax.set_title(key)
            ax.set_xlabel("epoch" if per_epoch else "step")
            ax.set_yscale("log" if key == "loss" else "linear")
        _legend(fig, axes)
        fig.suptitle(title, y=1.02)
        _save(fig, path)


def epoch_curves(epochs: dict[str, pd.DataFrame], path: Path, title: str,
                 keys: tuple[str, ...] = ("val_psnr", "val_l1")) -> None:
    """Per-epoch validation metrics per model (the CCSA paper's Figures 4 and 5 plot PSNR and L1)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for name, e in epochs.items():
                if key in e:
                    ax.plot(e["epoch"], e[key], marker="o", ms=3, label=name, lw=1.3)
            ax.set_title("validation " + key.replace("val_", "").upper())
            ax.set_xlabel("epoch")
        _legend(fig, axes)
        fig.suptitle(title, y=1.02)
        _save(fig, path)


def metric_vs_bucket(summary: pd.DataFrame, dataset: str, models: list[str], buckets: list[str], metrics: list[str],
                     path: Path, title: str, labels: dict[str, str]) -> None:
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)
        x = np.arange(len(buckets))
        for ax, metric in zip(axes[0], metrics):
            for model in models:
                sub = summary[(summary["dataset"] == dataset) & (summary["model"] == model) & (summary["metric"] == metric)]
                ys = [sub.loc[sub["bucket"] == b, "mean"].iloc[0] if (sub["bucket"] == b).any() else np.nan for b in buckets]
                ax.plot(x, ys, marker="o", ms=3, lw=1.3, label=labels.get(model, model))
            ax.set_xticks(x, buckets, rotation=20)
            ax.set_title(metric.upper())
            ax.set_xlabel("hole ratio")
        _legend(fig, axes)
        fig.suptitle(title, y=1.02)
        _save(fig, path)


def sample_grid(pairs: list[dict], method_images: dict[str, list[np.ndarray]], path: Path, title: str) -> None:
    """Rows: pairs; columns: masked input, each method's composite, ground truth."""
    cols = ["masked input", *method_images.keys(), "ground truth"]
    n = len(pairs)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(n, len(cols), figsize=(1.25 * len(cols), 1.3 * n + 0.4), squeeze=False)
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
                    ax.set_title(textwrap.fill(cols[j], 11), fontsize=7)
                if j == 0:
                    ax.set_ylabel(p["bucket"], fontsize=7)
        fig.suptitle(title, fontsize=9)
        _save(fig, path)
