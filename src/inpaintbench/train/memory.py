"""How much memory one training job needs, so that Snakemake starts only as many side by side as the
machine holds (workflow/rules/common.smk sets the local `mem_mb` limit from the memory available;
each training job claims its estimate; `--cores all` then never gets a job killed for memory).

Published-size models: peak RSS of one CPU training job measured with
``uv run python scripts/train_memory.py MODEL --experiment E --batch 1 2 --max-rss-mb 6800``
(table in README.md, "Memory"), at one or more batches at the experiment's size. A job's claim is
``MARGIN`` times

* the measured peak, where the job's batch and size were measured;
* else the line through the two largest measured batches, extrapolated linearly to the job's
  batch: ``fixed + per_image * batch`` (fixed = process, weights, optimiser state; per_image = the
  activations of one image). Checked on measured points: DeepFill v2-pub's line through batch 1 and
  2 misses its measured batch 8 by -0.4 %; SAHN-pub's figures in issue 11 (5.1 / 7.9 GB at batch
  1 / 2) extrapolate to 13.5 GB at batch 4, measured 13.7 GB (-1.5 %), which MARGIN covers. It
  fails where the small-batch peak is the optimiser step rather than the activations: CCSA-pub's
  batch 1 / 2 line predicts 3.0 GB at batch 8, measured 4.4 GB (its batch 2 / 4 line: 4.5 GB); so
  a per-image part measured at a larger size, scaled down by the pixels, is used where it is more;
* else, where only one batch b fitted at the job's size but two were measured at a smaller size:
  the fixed part from the smaller size's line, the per-image part ``(peak_b - fixed) / b`` from the
  job's size (checked on SAHN-pub and on SPL-pub before its trunk was checkpointed, measured
  both ways: +18 % and +14 % at batch 8,
  the fixed part grows a little with the size);
* else (one measured batch b) the peak times batch / b, an upper bound (it counts the fixed part
  once per image).

A job at another size than the measurement scales the per-image part with the pixels,
``(size / measured_size)**2``; the fixed part is scaled too when the job is larger (conservative)
and kept when it is smaller. Models at the small built-in sizes (they declare `paper_args`) take
`SMALL_MB`. A model's or experiment's ``training.mem_mb`` in params.yaml overrides the estimate.
"""
from __future__ import annotations

#: model -> {measured size: {batch: peak RSS MB}}; CPU, one thread, scripts/train_memory.py,
#: 2026-12-02. Optimisers warmed before the one measured step, so Adam's state and the kept
#: gradients are in the peak (what every step of a real job holds); SAHN/SPL/SPN with the
#: experiments' ASL TResNet-L teacher shape (random weights). Each batch in its own process, killed
#: past 6.8 GB (the shared 24 GB machine they were measured on).
MEASURED: dict[str, dict[int, dict[int, float]]] = {
    # ccsa-paper, 128 px
    "deepfill-v2-pub": {128: {1: 1193, 2: 1345, 4: 1657, 8: 2266}},
    "pconv-pub": {256: {2: 1979, 4: 2606}, 128: {2: 1563, 4: 1652}},  # batch 1 cannot train (1x1 batch norm)
    "psr-pub": {128: {2: 1600, 4: 1935}},  # idem
    "rfr-pub": {128: {1: 1652, 2: 1831, 4: 2223, 8: 3003}},
    # dense blocks checkpointed (model arg checkpoint: auto); before: 4,832 MB at batch 1, batch 2 killed
    "rdn-pub": {128: {1: 1622, 2: 2082}},
    # batch 1 -> 2 adds only 27 MB: at small batches the peak is the optimiser step of its 100 M
    # parameters, not the activations; hence measured up to the experiment's batch 8
    "ccsa-res1att1-pub": {128: {1: 2858, 2: 2885, 4: 3415, 8: 4409}},
    # the variants drop modules of RES1ATT1 (same widths): not measured, RES1ATT1's peaks (upper bound)
    "ccsa-res0att1-pub": {128: {1: 2858, 2: 2885, 4: 3415, 8: 4409}},
    "ccsa-res1att0-pub": {128: {1: 2858, 2: 2885, 4: 3415, 8: 4409}},
    "ccsa-res0att0-pub": {128: {1: 2858, 2: 2885, 4: 3415, 8: 4409}},
    # sahn-paper / sahn-paper-ablation, 256 px (a smaller size: the fixed part where batch 2 did not fit)
    "sahn-pub": {256: {1: 4339, 2: 6482}, 128: {1: 2278, 2: 2847}},
    "sahn-no-unet-pub": {256: {1: 4351, 2: 6451}},
    "sahn-no-msf-pub": {256: {1: 2282, 2: 3083}},
    # dense trunk checkpointed (checkpoint: auto); before: SPL 3,911 / 5,949, SPN 4,726 / killed
    "spl-pub": {256: {1: 3457, 2: 4873}},
    "spn-pub": {256: {1: 4209, 2: 5756}},
    "ddnm-pub": {256: {1: 4880}, 128: {1: 3264, 2: 3884}},  # batch 2 at 256 px passed 6.8 GB (killed)
    "edgeconnect-pub": {256: {1: 1709, 2: 2068}},
    "ctsdg-pub": {256: {1: 2877, 2: 3926}},
    "lama-fourier-pub": {256: {1: 1948, 2: 2511}},
}
#: built-in settings (64 px, batch 8, tiny widths): the whole built-in main job peaks at 1.43 GB RSS
#: (README "Measured"); one of its training jobs stays below it.
SMALL_MB = 1300
MARGIN = 1.15  # allocator slack, run-to-run variation and the per-image cost's slight growth with batch


def _points(model: str, size: int) -> tuple[int, dict[int, float]]:
    """The measurement to scale from: the job's size if measured, else the largest measured size."""
    sizes = MEASURED[model]
    ref = size if size in sizes else max(sizes)
    return ref, sizes[ref]


def _line(points: dict[int, float]) -> tuple[float, float]:
    """(fixed, per_image) of the line through the two largest measured batches."""
    b_a, b_b = sorted(points)[-2:]
    per_image = (points[b_b] - points[b_a]) / (b_b - b_a)
    return points[b_b] - per_image * b_b, per_image


def peak_mb(model: str, size: int, batch: int) -> float:
    """Expected peak RSS (MB, without MARGIN) of one training job of a measured model."""
    ref, points = _points(model, size)
    scale = (size / ref) ** 2
    if ref == size and batch in points:
        return float(points[batch])
    batches = sorted(points)
    if len(batches) >= 2:
        fixed, per_image = _line(points)
        # a line at a larger size, scaled down by the pixels, where that is more (a small
        # measured slope can be the optimiser step's batch-independent peak, not the activations)
        per_image = max([per_image] + [_line(p)[1] * (ref / s) ** 2 for s, p in MEASURED[model].items()
                                       if s > ref and len(p) >= 2])
        if per_image > 0:
            return max(fixed, 0.0) * max(scale, 1.0) + per_image * batch * scale
    b0 = batches[-1] if batch >= batches[-1] else batches[0]
    others = [_line(p) for s, p in MEASURED[model].items() if s != ref and len(p) >= 2]
    if ref == size and others:
        # one batch at the job's size (a second did not fit the machine) and a line at another
        # size: the fixed part from that line, the per-image part from the job's size
        fixed = max(f for f, _ in others)
        per_image = (points[b0] - fixed) / b0
        if fixed > 0 and per_image > 0:
            return fixed + per_image * batch
    return points[b0] * max(batch / b0, 1.0) * max(scale, 1.0)


def _rate_per_image_pixel(model: str) -> float:
    """Peak per image and pixel at the model's smallest measured batch (fixed part included)."""
    return max(points[min(points)] / (min(points) * size ** 2) for size, points in MEASURED[model].items())


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
        return int(MARGIN * peak_mb(model, size, batch))
    # not measured: the costliest measured model per pixel and image (conservative)
    return int(MARGIN * max(_rate_per_image_pixel(m) for m in MEASURED) * batch * size ** 2)


def available_mb() -> int:
    """Memory available now (MB) from /proc/meminfo; 0 where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh if ":" in line}
        return info.get("MemAvailable", info.get("MemTotal", 0)) // 1024
    except (OSError, ValueError):
        return 0
