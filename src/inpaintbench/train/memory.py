"""How much memory one training job needs, so that Snakemake starts only as many side by side as the
machine holds (workflow/rules/common.smk sets the local `mem_mb` limit from the memory available;
each training job claims its estimate; `--cores all` then never gets a job killed for memory).

Published-size models: the peak RSS of one CPU training job measured with
``uv run python scripts/train_memory.py --all --batch 1`` (table in README.md), at the size the
model was measured at, scaled to the job's batch and size as

    mem_mb = MARGIN * peak_1 * batch * (size / measured_size)**2

i.e. proportional to the pixels a step processes. This counts the process, the weights and the
optimiser state once per image too, so it is an upper bound (SAHN-pub measured 5.1 / 7.9 / 13.7 GB
at batch 1 / 2 / 4 before its deformable convs were checkpointed, below 5.1 x batch). Where batch 1
and 2 were both measured, the line through the two points is used instead. Models at the small
built-in sizes (they declare `paper_args`) take `SMALL_MB`. A model's or experiment's
``training.mem_mb`` in params.yaml overrides the estimate.
"""
from __future__ import annotations

#: model -> (measured size, peak MB at batch 1, peak MB at batch 2 or None); CPU, one thread,
#: scripts/train_memory.py, 2026-12-02 (random VGG16-shaped loss network at VGG16's width; SAHN
#: models with the ImageNet-ResNet-50-shaped teacher).
MEASURED: dict[str, tuple[int, float, float | None]] = {
    "deepfill-v2-pub": (128, 1056, None),
    "rfr-pub": (128, 1591, None),
    "rdn-pub": (128, 4592, None),
    "ccsa-res1att1-pub": (128, 2642, None),
    "ccsa-res0att1-pub": (128, 2618, None),
    "ccsa-res1att0-pub": (128, 2578, None),
    "ccsa-res0att0-pub": (128, 2563, None),
    "edgeconnect-pub": (256, 1436, None),
    "ctsdg-pub": (256, 2339, None),
    "lama-fourier-pub": (256, 1602, None),
    "sahn-pub": (256, 4032, None),  # 4719 MB before its deformable convs were checkpointed
    "sahn-no-unet-pub": (256, 4032, None),  # not measured separately: the full SAHN-pub's peak (an upper bound)
    "sahn-no-msf-pub": (256, 4032, None),   # idem (without MSF it has no deformable convs at all)
}
#: built-in settings (64 px, batch 8, tiny widths): the whole built-in main job peaks at 1.26 GB RSS
#: (README "Measured"); one of its training jobs stays below it.
SMALL_MB = 1300
MARGIN = 1.15  # allocator slack and run-to-run variation above the measured peak


def _per_pixel_batch(model: str) -> float:
    size, peak1, _ = MEASURED[model]
    return peak1 / size ** 2


def estimate_train_mem_mb(params, experiment: str, model: str) -> int:
    cfg = params.training(model, experiment)
    if cfg.get("mem_mb"):
        return int(cfg["mem_mb"])
    spec = params.model(model)
    if "paper_args" in spec:
        return SMALL_MB
    size = int(params.experiment(experiment)["size"])
    batch = int(cfg.get("batch_size", 8))
    if model in MEASURED:
        ref, peak1, peak2 = MEASURED[model]
        scale = (size / ref) ** 2
        if peak2 is not None and peak2 > peak1:
            return int(MARGIN * (peak1 + (peak2 - peak1) * (batch - 1)) * scale)
        return int(MARGIN * peak1 * batch * scale)
    # not measured: the costliest measured model per pixel and image (conservative)
    return int(MARGIN * max(_per_pixel_batch(m) for m in MEASURED) * batch * size ** 2)


def available_mb() -> int:
    """Memory available now (MB) from /proc/meminfo; 0 where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh if ":" in line}
        return info.get("MemAvailable", info.get("MemTotal", 0)) // 1024
    except (OSError, ValueError):
        return 0
