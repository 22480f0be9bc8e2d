"""Evaluation: run a method on the fixed pairs and score the composite, per image.

Per pair: load the image and its mask (the mask must already have the evaluated size), build the
masked input, run the method, composite `out = pred*mask + image*(1-mask)`, round it to 8 bits
(``evaluation.quantize: uint8``, the default: exactly the PNG a saved result would be, the
papers' and LaMa's protocol; ``none`` scores the float composite), and compute PSNR, SSIM, L1
(full image), L1 (hole only) and, when its backbone is available, LPIPS. The per-image rows go to
results/<experiment>/<train>/<model>/metrics.csv; the first `samples_per_bucket` composites of
each bucket are saved as PNG for the report's qualitative grids.

FID and KID (when the Inception weights are available) come from one pass of the Inception
network over the ground truth and the composites of a dataset; the features are saved
(``features_<dataset>.npz``: ``real``, ``fake``, ``bucket``) and FID, KID and their bootstrap CIs
per bucket are computed from them (``metrics.kid``) into fid.csv.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import paths
from .errors import InpaintBenchError
from .io import atomic_path, load_image, load_mask, read_csv, save_image, write_csv, write_json
from .metrics.lpips_score import lpips_batch
from .metrics.quality import image_metrics
from .models import registry
from .models.base import BuildContext, ClassicalModel

METRIC_FIELDS = ["experiment", "train", "dataset", "model", "pair_id", "bucket", "image_id", "mask_id",
                 "hole_ratio", "psnr", "ssim", "l1", "l1_hole", "lpips"]
QUANTIZE = ("uint8", "none")


def quantize_setting(params) -> str:
    q = str(dict(params.raw.get("evaluation") or {}).get("quantize", "uint8"))
    if q not in QUANTIZE:
        raise InpaintBenchError(f"params.yaml: evaluation.quantize must be one of {', '.join(QUANTIZE)}, got {q!r}")
    return q


def quantize(image: np.ndarray, mode: str = "uint8") -> np.ndarray:
    """The composite as the 8-bit PNG `io.save_image` writes would hold it (round half to even,
    clipped), back in [0, 1] as float32; unchanged for mode "none"."""
    if mode == "none":
        return np.asarray(image, dtype=np.float32)
    return (np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255) / 255.0).astype(np.float32)


def load_pairs(pairs_csv: str | Path, size: int, limit: int | None = None) -> list[dict]:
    """Rows of a pair file with the image (HxWx3) and mask (HxW, 1 = hole) arrays attached."""
    from .integrity import verify_sha256

    rows = read_csv(pairs_csv)[:limit]
    out = []
    for r in rows:
        # the prepared image must still be the one its manifest promises (hashed once per process)
        verify_sha256(r["image_path"], r.get("image_sha256", ""), f"the manifest (via {pairs_csv})")
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
    if "weights" in spec:  # released checkpoint of the official code (models/released.py)
        from .models.released import build_released

        return build_released(model_name, spec, device, size)
    if not registry.is_learned(spec["arch"]):
        return registry.build(spec["arch"], spec.get("args"), spec.get("loss"), BuildContext(image_size=size))
    state = load_ckpt(paths.checkpoint(experiment, train, model_name), map_location=device)
    ctx = BuildContext(**{**state["context"], "device": device})
    model = registry.build(spec["arch"], state["args"], state["loss"], ctx)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


FID_FIELDS = ["experiment", "train", "dataset", "model", "bucket", "metric", "mean", "std", "count", "lo", "hi"]


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


def bootstrap_settings(params):
    from .metrics.stats import BootstrapSettings

    return BootstrapSettings.from_params(dict(params.raw.get("evaluation") or {}).get("bootstrap"))


def feature_rows(real: np.ndarray, fake: np.ndarray, buckets: list[str], key: dict, cfg: dict, settings) -> list[dict]:
    """FID and KID per bucket and over all pairs from Inception features (row i = pair i), with
    bootstrap CIs over resampled pairs (``fid.ci_resamples``, default 200: each FID resample
    costs an SVD of up to n x n)."""
    from .metrics.fid import FEATURE_DIM, activation_stats, frechet_distance, frechet_distance_from_features
    from .metrics.kid import DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS, feature_cis, kid

    rows = []
    buckets = np.asarray(buckets)
    for bucket in [*dict.fromkeys(buckets.tolist()), "all"]:
        sel = np.ones(len(buckets), bool) if bucket == "all" else buckets == bucket
        if sel.sum() < 2:
            continue
        r, f = real[sel], fake[sel]
        n = int(sel.sum())
        fid = (frechet_distance_from_features(r, f) if n < FEATURE_DIM
               else frechet_distance(*activation_stats(r), *activation_stats(f)))
        k = kid(r, f, subsets=int(cfg.get("kid_subsets", DEFAULT_SUBSETS)),
                subset_size=int(cfg.get("kid_subset_size", DEFAULT_SUBSET_SIZE)), seed=settings.seed)
        ci = feature_cis(r, f, settings, resamples=int(cfg.get("ci_resamples", 200))) if n >= 3 else {}
        for metric, value in (("fid", fid), ("kid", k)):
            rows.append({**key, "bucket": bucket, "metric": metric, "mean": f"{value:.6f}", "std": "", "count": n,
                         "lo": f"{ci[metric + '_lo']:.6f}" if ci else "", "hi": f"{ci[metric + '_hi']:.6f}" if ci else ""})
    return rows


def lpips_settings(params) -> tuple[bool, str, dict]:
    from .metrics.lpips_score import lpips_status

    cfg = dict(params.raw.get("lpips") or {})
    ok, reason = lpips_status(cfg)  # enabled: true with the backbone missing raises, naming the file
    return ok, reason, cfg


def evaluate_job(params, experiment: str, train: str, model_name: str, device: str = "cpu") -> Path:
    exp = params.experiment(experiment)
    size = exp["size"]
    run = next((r for r in exp["runs"] if r["train"] == train), None)
    if run is None:
        raise InpaintBenchError(f"experiment {experiment!r} has no run training on {train!r}")
    method = load_method(params, experiment, train, model_name, device)
    n_samples = int(exp.get("samples_per_bucket", 2))
    out_csv = paths.metrics_csv(experiment, train, model_name)
    q = quantize_setting(params)
    settings = bootstrap_settings(params)
    rows, fid_out = [], []
    compute_fid, fid_reason, fid_cfg = fid_settings(params)
    compute_lpips, lpips_reason, lpips_cfg = lpips_settings(params)
    fid_net = lpips_net = None
    if compute_fid:
        from .metrics.fid import build_fid_features

        fid_net = build_fid_features(fid_cfg).to(device)
    if compute_lpips:
        from .metrics.lpips_score import build_lpips

        lpips_net = build_lpips(lpips_cfg).to(device)
    started = time.perf_counter()
    for dataset in run["eval"]:
        pairs = load_pairs(paths.pairs_csv(experiment, dataset, "test"), size)
        seen: dict[str, int] = {}
        outputs = [quantize(o, q) for o in run_method(method, pairs, device, progress=True)]
        if compute_fid:
            from .metrics.fid import extract_features

            key = {"experiment": experiment, "train": train, "dataset": dataset, "model": model_name}
            bs = int(fid_cfg.get("batch_size", 50))
            real_f = extract_features(fid_net, np.stack([p["image"] for p in pairs]).transpose(0, 3, 1, 2), device=device, batch_size=bs)
            fake_f = extract_features(fid_net, np.stack(outputs).transpose(0, 3, 1, 2), device=device, batch_size=bs)
            feat_file = out_csv.parent / f"features_{dataset}.npz"
            feat_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(feat_file, suffix=".npz") as tmp:
                np.savez_compressed(tmp, real=real_f.astype(np.float32), fake=fake_f.astype(np.float32),
                                    bucket=np.array([p["bucket"] for p in pairs]), pair_id=np.array([p["pair_id"] for p in pairs]))
            fid_out += feature_rows(real_f, fake_f, [p["bucket"] for p in pairs], key, fid_cfg, settings)
        lp = (np.concatenate([lpips_batch(lpips_net, np.stack(outputs[i:i + 32]), np.stack([p["image"] for p in pairs[i:i + 32]]), device)
                              for i in range(0, len(pairs), 32)]) if compute_lpips and pairs else None)
        for i, (out, p) in enumerate(zip(outputs, pairs)):
            m = image_metrics(out, p["image"], p["mask"])
            rows.append({"experiment": experiment, "train": train, "dataset": dataset, "model": model_name,
                         "pair_id": p["pair_id"], "bucket": p["bucket"], "image_id": p["image_id"],
                         "mask_id": p["mask_id"], "hole_ratio": p["hole_ratio"],
                         **{k: f"{v:.6f}" for k, v in m.items()}, "lpips": f"{lp[i]:.6f}" if lp is not None else ""})
            k = seen.get(p["bucket"], 0)
            if k < n_samples:
                save_image(paths.result_dir(experiment, train, model_name) / "samples" / dataset / f"{p['pair_id']}.png", out)
                seen[p["bucket"]] = k + 1
    write_csv(out_csv, rows, METRIC_FIELDS)
    write_csv(out_csv.parent / "fid.csv", fid_out, FID_FIELDS)
    write_json(out_csv.parent / "fid_status.json", {"computed": compute_fid, "reason": fid_reason})
    write_json(out_csv.parent / "eval_status.json", {"quantize": q, "lpips": {"computed": compute_lpips, "reason": lpips_reason},
                                                     "fid": {"computed": compute_fid, "reason": fid_reason}})
    print(f"evaluated {model_name} on {len(rows)} pairs in {time.perf_counter() - started:.1f} s -> {out_csv}")
    return out_csv
