"""Evaluation: run a method on the fixed pairs and score the composite, per image.

Per pair: load the image and its mask (the mask must already have the evaluated size), build the
masked input, run the method, composite `out = pred*mask + image*(1-mask)`, and compute PSNR,
SSIM, L1 (full image) and L1 (hole only). The per-image rows go to
results/<experiment>/<train>/<model>/metrics.csv; the first `samples_per_bucket` composites of
each bucket are saved as PNG for the report's qualitative grids.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import paths
from .errors import InpaintBenchError
from .io import load_image, load_mask, read_csv, save_image, write_csv, write_json
from .metrics.quality import image_metrics
from .models import registry
from .models.base import BuildContext, ClassicalModel

METRIC_FIELDS = ["experiment", "train", "dataset", "model", "pair_id", "bucket", "image_id", "mask_id",
                 "hole_ratio", "psnr", "ssim", "l1", "l1_hole"]


def load_pairs(pairs_csv: str | Path, size: int, limit: int | None = None) -> list[dict]:
    """Rows of a pair file with the image (HxWx3) and mask (HxW, 1 = hole) arrays attached."""
    rows = read_csv(pairs_csv)[:limit]
    out = []
    for r in rows:
        image = load_image(r["image_path"])
        if image.shape[:2] != (size, size):
            raise InpaintBenchError(f"image {r['image_path']} is {image.shape[1]}x{image.shape[0]}, expected {size}x{size}; re-run prepare")
        out.append({**r, "image": image, "mask": load_mask(r["mask_path"], size)})
    return out


def to_tensor(arrays: list[np.ndarray], device: str) -> torch.Tensor:
    t = torch.from_numpy(np.stack(arrays))
    t = t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]
    return t.to(device=device, dtype=torch.float32)


def run_method(method, pairs: list[dict], device: str = "cpu", batch_size: int = 16, progress: bool = False):
    """Yield the composite (HxWx3 numpy) for each pair, in order."""
    if isinstance(method, ClassicalModel):
        for p in tqdm(pairs, desc="inpaint", disable=not progress, leave=False):
            out = method.inpaint_numpy(p["image"], p["mask"])
            yield (out * p["mask"][..., None] + p["image"] * (1 - p["mask"][..., None])).astype(np.float32)
        return
    method.eval()
    for i in tqdm(range(0, len(pairs), batch_size), desc="inpaint", disable=not progress, leave=False):
        chunk = pairs[i:i + batch_size]
        image = to_tensor([p["image"] for p in chunk], device)
        mask = to_tensor([p["mask"] for p in chunk], device)
        with torch.no_grad():
            comp = method.inpaint(image, mask).float().clamp(0, 1)
        for c in comp.permute(0, 2, 3, 1).cpu().numpy():
            yield c


def score(method, pairs: list[dict], device: str = "cpu", progress: bool = False) -> list[dict]:
    return [image_metrics(out, p["image"], p["mask"]) for out, p in zip(run_method(method, pairs, device, progress=progress), pairs)]


def load_method(params, experiment: str, train: str, model_name: str, device: str = "cpu"):
    from .train.checkpoints import load as load_ckpt

    spec = params.model(model_name)
    size = params.experiment(experiment)["size"]
    if not registry.is_learned(spec["arch"]):
        return registry.build(spec["arch"], spec.get("args"), spec.get("loss"), BuildContext(image_size=size))
    state = load_ckpt(paths.checkpoint(experiment, train, model_name), map_location=device)
    ctx = BuildContext(**{**state["context"], "device": device})
    model = registry.build(spec["arch"], state["args"], state["loss"], ctx)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


FID_FIELDS = ["experiment", "train", "dataset", "model", "bucket", "metric", "mean", "std", "count"]


def fid_settings(params) -> tuple[bool, str, dict]:
    """(compute?, reason for the report, cfg). ``fid.enabled``: auto (compute when the Inception
    weights are in the torch.hub cache), true (compute; missing weights are an error), false."""
    from .metrics.fid import fid_status

    cfg = dict(params.raw.get("fid", {}))
    enabled = cfg.get("enabled", "auto")
    if enabled is False:
        return False, "FID not computed: disabled in params.yaml (fid.enabled: false).", cfg
    ok, reason = fid_status({**cfg, "enabled": True})
    if not ok and enabled is True:
        from .metrics.fid import build_fid_features

        build_fid_features(cfg)  # raises the error that names the missing file and folder
    return ok, reason, cfg


def fid_rows(real: list[np.ndarray], fake: list[np.ndarray], buckets: list[str], key: dict, cfg: dict, device: str, net) -> list[dict]:
    """FID per bucket and over all pairs, composites against the ground truth of the same pairs."""
    from .metrics.fid import fid_between

    rows = []
    for bucket in [*dict.fromkeys(buckets), "all"]:
        idx = [i for i, b in enumerate(buckets) if bucket in ("all", b)]
        if len(idx) < 2:
            continue
        r = np.stack([real[i] for i in idx]).transpose(0, 3, 1, 2)
        f = np.stack([fake[i] for i in idx]).transpose(0, 3, 1, 2)
        res = fid_between(r, f, device=device, batch_size=int(cfg.get("batch_size", 50)), model=net)
        rows.append({**key, "bucket": bucket, "metric": "fid", "mean": f"{res['fid']:.6f}", "std": "", "count": res["n"]})
    return rows


def evaluate_job(params, experiment: str, train: str, model_name: str, device: str = "cpu") -> Path:
    exp = params.experiment(experiment)
    size = exp["size"]
    run = next((r for r in exp["runs"] if r["train"] == train), None)
    if run is None:
        raise InpaintBenchError(f"experiment {experiment!r} has no run training on {train!r}")
    method = load_method(params, experiment, train, model_name, device)
    n_samples = int(exp.get("samples_per_bucket", 2))
    out_csv = paths.metrics_csv(experiment, train, model_name)
    rows, fid_out = [], []
    compute_fid, fid_reason, fid_cfg = fid_settings(params)
    fid_net = None
    if compute_fid:
        from .metrics.fid import build_fid_features

        fid_net = build_fid_features(fid_cfg).to(device)
    started = time.perf_counter()
    for dataset in run["eval"]:
        pairs = load_pairs(paths.pairs_csv(experiment, dataset, "test"), size)
        seen: dict[str, int] = {}
        outputs = list(run_method(method, pairs, device, progress=True))
        if compute_fid:
            key = {"experiment": experiment, "train": train, "dataset": dataset, "model": model_name}
            fid_out += fid_rows([p["image"] for p in pairs], outputs, [p["bucket"] for p in pairs], key, fid_cfg, device, fid_net)
        for out, p in zip(outputs, pairs):
            m = image_metrics(out, p["image"], p["mask"])
            rows.append({"experiment": experiment, "train": train, "dataset": dataset, "model": model_name,
                         "pair_id": p["pair_id"], "bucket": p["bucket"], "image_id": p["image_id"],
                         "mask_id": p["mask_id"], "hole_ratio": p["hole_ratio"],
                         **{k: f"{v:.6f}" for k, v in m.items()}})
            k = seen.get(p["bucket"], 0)
            if k < n_samples:
                save_image(paths.result_dir(experiment, train, model_name) / "samples" / dataset / f"{p['pair_id']}.png", out)
                seen[p["bucket"]] = k + 1
    write_csv(out_csv, rows, METRIC_FIELDS)
    write_csv(out_csv.parent / "fid.csv", fid_out, FID_FIELDS)
    write_json(out_csv.parent / "fid_status.json", {"computed": compute_fid, "reason": fid_reason})
    print(f"evaluated {model_name} on {len(rows)} pairs in {time.perf_counter() - started:.1f} s -> {out_csv}")
    return out_csv
