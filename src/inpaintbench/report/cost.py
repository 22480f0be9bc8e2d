"""What each paper table costs to train: GPU-hours and peak memory per training job.

For every table of an experiment, the jobs behind it are the training jobs of its learned
methods on the table's training dataset; each runs ``epochs * steps_per_epoch`` steps at the
experiment's size and batch (params ``training``). Per job:

GPU-hours and peak memory come from separate sources:

* **measured** where a CUDA benchmark file exists (``benchmarks/train-cuda.json``, written by
  ``scripts/bench_train.py --all-pub --json benchmarks/train-cuda.json`` on a GPU machine): step
  ms with the input pipeline attached, in the trainer's precision (bf16 when ``training.amp``
  is bf16, + compile when ``training.compile``), and CUDA max allocated;
* otherwise **estimated** from FLOPs counted on the CPU (``benchmarks/train-flops-cpu.json``,
  written by ``scripts/bench_train.py --flops``): ``torch.utils.flop_counter`` over one full
  training step (generator + discriminator, forward + backward) of one sample, times the batch,
  at an assumed sustained ``ASSUMED_TFLOPS``; memory = weights, gradients and both Adam moments
  (16 bytes per parameter) + the tensors autograd saves for the backward pass (counted with
  saved-tensor hooks) times the batch. Models above ``MEASURE_MAX_SIZE`` px are counted at that
  size and scaled by the pixel ratio (convolutional costs grow with the pixel count). FLOPs
  count matmuls and convolutions only (grid sampling, FFTs and element-wise work are not), so
  the estimate is a lower bound on work; it is labelled as an estimate wherever it is shown.

Peak memory per job, in this order: CUDA max allocated from the CUDA benchmark file; else the
peak CPU RSS of ``train/memory.py`` (``MEASURED``, written by ``scripts/train_memory.py``):
measured at the job's size and batch, or extrapolated linearly to the job's batch by
``memory.peak_mb`` (the figure the training job's ``mem_mb`` claim is built on, without its
margin), labelled "CPU RSS, measured at batch b / extrapolated to B"; else, only where nothing is
measured, the FLOP-count estimate above. GPU-hours stay the FLOP estimate without a CUDA file.

Teacher training and evaluation are not included (a small fraction of a paper-scale job).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

BENCH_DIR = Path("benchmarks")
CUDA_FILE = BENCH_DIR / "train-cuda.json"
FLOPS_FILE = BENCH_DIR / "train-flops-cpu.json"
#: sustained throughput assumed for the estimate: ~10 % of an H200/H100's dense bf16 peak, what
#: small-batch convolutional inpainting networks typically reach (stated beside every estimate)
ASSUMED_TFLOPS = 100.0
MEASURE_MAX_SIZE = 128


# ---------------------------------------------------------------- measurement (CPU)
def build_for_benchmark(params, model_name: str, size: int, device: str, folder: Path):
    """The model of `model_name` as the trainer builds it (a seeded random teacher stands in for
    a trained one: same shapes, so the same cost), with its optimizers."""
    from ..models import registry
    from ..models.base import BuildContext
    from ..train.trainer import make_optimizer

    spec = params.model(model_name)
    experiment = experiment_of(params, model_name)
    artifacts = {}
    if "teacher" in spec.get("requires", []):
        from ..train.teacher import TeacherCNN, save_teacher

        widths = params.teacher(experiment).get("widths", [8, 16, 32, 64]) if experiment else [8, 16, 32, 64]
        torch.manual_seed(0)
        labels = [f"label{i}" for i in range(8)]
        artifacts["teacher"] = str(folder / "teacher.pt")
        save_teacher(artifacts["teacher"], TeacherCNN(len(labels), widths), labels, {"widths": widths})
    extra = {"teacher": {**params.teacher(experiment), "kind": "trained"}} if experiment and "teacher" in BuildContext.__dataclass_fields__ else {}
    ctx = BuildContext(image_size=size, seed=0, perceptual=dict(params.raw.get("perceptual", {"backbone": "random-vgg16"})),
                       artifacts=artifacts, num_labels=8, device=device, **extra)
    torch.manual_seed(0)
    model = registry.build(spec["arch"], spec.get("args"), spec.get("loss"), ctx).to(device)
    cfg = params.training(model_name, experiment)
    opt_g = make_optimizer(model.generator_parameters(), cfg["optimizer"])
    opt_d = (make_optimizer(model.discriminator.parameters(), cfg.get("d_optimizer", cfg["optimizer"]))
             if model.discriminator is not None else None)
    return model, opt_g, opt_d


def settings_of(params, model: str) -> list[tuple[int, int]]:
    """(size, batch) of every experiment that trains `model` ((64, 8) when none does)."""
    out = [(int(exp["size"]), int(params.training(model, name).get("batch_size", 8)))
           for name, exp in params.raw["experiments"].items() if model in exp.get("models", [])]
    return list(dict.fromkeys(out)) or [(64, 8)]


def experiment_of(params, model: str) -> str | None:
    """The first experiment that lists `model` (its size and training settings apply)."""
    return next((name for name, exp in params.raw["experiments"].items() if model in exp.get("models", [])), None)


class _FlopCount:
    """Counts FLOPs of every aten op with a formula in torch.utils.flop_counter (matmuls, convs,
    attention), forward and backward alike. A plain dispatch mode: FlopCounterMode's module
    tracking breaks double backward (`autograd.grad(..., create_graph=True)`, LaMa's R1)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    counter.total += int(formula(*args, **kwargs, out_val=out))
                return out

        self.total = 0
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def measure_step(params, model_name: str, size: int) -> dict:
    """FLOPs and saved-activation bytes per sample of one training step at `size` (or at
    MEASURE_MAX_SIZE, scaled), parameters and optimizer bytes; on the CPU."""
    import tempfile

    import torch.nn.functional as F

    from ..train.trainer import train_step

    at = min(size, MEASURE_MAX_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        model, opt_g, opt_d = build_for_benchmark(params, model_name, at, "cpu", Path(tmp))
    g = torch.Generator().manual_seed(0)
    n = 2  # two samples (batch norm at a 1x1 bottleneck needs more than one), counts divided by 2
    image = torch.rand(n, 3, at, at, generator=g)
    mask = (F.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=at, mode="bilinear") > 0.6).float()
    saved = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()} | {
        b.untyped_storage().data_ptr() for b in model.buffers()}

    def pack(t):
        try:
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            key = (id(t), t.numel() * t.element_size())
        if key[0] not in weights:  # weights saved for the backward are in state_bytes, not activations
            saved[key] = key[1]
        return t

    with _FlopCount() as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        train_step(model, image, mask, opt_g, opt_d)
    params_n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    scale = (size / at) ** 2
    return {"model": model_name, "size": size, "measured_at": at, "scale": scale,
            "flops_per_sample": float(counter.total) * scale / n,
            "saved_bytes_per_sample": float(sum(saved.values())) * scale / n,
            "trainable_parameters": int(params_n), "state_bytes": int(params_n) * 16}


# ---------------------------------------------------------------- cost per table
def _load(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _cuda_row(bench: dict | None, model: str, size: int, batch: int, mode: str) -> dict | None:
    if not bench:
        return None
    rows = [r for r in bench.get("rows", []) if r.get("model") == model and r.get("size") == size
            and r.get("batch") == batch and "error" not in r]
    return next((r for r in rows if r.get("mode") == mode), None) or next((r for r in rows if r.get("mode") == "fp32"), None)


def measured_memory(model: str, size: int, batch: int) -> tuple[float, str] | None:
    """(peak GB, label) of one training job from train/memory.py's measured CPU peak RSS
    (MB = MiB: VmRSS / ru_maxrss in KiB over 1024), measured at (size, batch) or extrapolated to
    the job's batch; None where the model was not measured."""
    from ..train import memory

    if model not in memory.MEASURED:
        return None
    ref, points = memory._points(model, size)
    mb = memory.peak_mb(model, size, batch)
    if ref == size and batch in points:
        label = f"CPU RSS, measured at batch {batch} ({size} px)"
    else:
        at = "/".join(str(b) for b in sorted(points))
        sizes = "" if ref == size else f", scaled to {size} px"
        fixed = sorted(s for s, p in memory.MEASURED[model].items() if s != ref and len(p) >= 2)
        if len(points) == 1 and ref == size and fixed:  # memory.peak_mb: fixed part from another size's line
            sizes += f", fixed part from the {'/'.join(map(str, fixed))} px line"
        label = f"CPU RSS, measured at batch {at} ({ref} px) / extrapolated to {batch}{sizes}"
    return mb / 1024, label


def job_cost(params, experiment: str, model: str, cuda: dict | None, flops: dict | None) -> dict:
    cfg = params.training(model, experiment)
    size = int(params.experiment(experiment)["size"])
    batch = int(cfg.get("batch_size", 8))
    steps = int(cfg.get("epochs", 1)) * int(cfg.get("steps_per_epoch", 1))
    mode = "bf16" if cfg.get("amp", "bf16") == "bf16" else "fp32"
    if cfg.get("compile") in (True, "cuda"):
        mode += "-compile" if mode == "bf16" else ""
    row = {"model": model, "steps": steps, "batch": batch, "size": size}
    r = _cuda_row(cuda, model, size, batch, mode)
    if r:
        where = f"measured ({r.get('device_name', 'CUDA')}, {r['mode']})"
        return {**row, "source": where, "gpu_hours": steps * r["step_with_pipeline_ms"] / 3.6e6,
                "peak_gb": r["peak_mb"] / 1024, "memory_source": f"CUDA max allocated, {where}", "estimate": False}
    rss = measured_memory(model, size, batch)
    mem = {"peak_gb": rss[0], "memory_source": rss[1]} if rss else {}
    f = next((x for x in (flops or {}).get("rows", []) if x["model"] == model and x["size"] == size), None)
    if f:
        seconds = steps * batch * f["flops_per_sample"] / (ASSUMED_TFLOPS * 1e12)
        peak = f["state_bytes"] + batch * f["saved_bytes_per_sample"]
        flop_mem = {"peak_gb": peak / 2**30, "memory_source": "estimate (parameter state + saved activations)"}
        return {**row, "source": f"estimate (CPU-counted FLOPs at {ASSUMED_TFLOPS:g} TFLOP/s)", "gpu_hours": seconds / 3600,
                **(mem or flop_mem), "estimate": True, "tflops_per_step": batch * f["flops_per_sample"] / 1e12}
    return {**row, "source": "not measured (scripts/bench_train.py --flops)", "gpu_hours": None, "peak_gb": None,
            "memory_source": "not measured (scripts/train_memory.py)", **mem, "estimate": True}


def table_costs(params, experiment: str, cuda_file: Path = CUDA_FILE, flops_file: Path = FLOPS_FILE) -> list[dict]:
    """One entry per paper table of `experiment`: its training jobs and their sum / max."""
    from ..models.registry import is_learned

    exp = params.experiment(experiment)
    cuda, flops = _load(cuda_file), _load(flops_file)
    out = []
    for spec in exp.get("tables", []):
        trains = [spec["train"]] if spec.get("train") else [run["train"] for run in exp["runs"]]
        models = [m for m in spec.get("methods", {}) if is_learned(params.model(m)["arch"])]
        jobs = [{**job_cost(params, experiment, m, cuda, flops), "train": t} for t in trains for m in models]
        hours = [j["gpu_hours"] for j in jobs]
        known = [j["peak_gb"] for j in jobs if j["peak_gb"] is not None]
        largest = max((j for j in jobs if j["peak_gb"] is not None), key=lambda j: j["peak_gb"], default=None)
        complete = largest is not None and len(known) == len(jobs)
        out.append({"table": spec["name"], "paper": spec.get("paper", ""), "paper_table": str(spec.get("table", "")),
                    "jobs": jobs, "gpu_hours": None if None in hours else float(sum(hours)),
                    "peak_gb_per_job": largest["peak_gb"] if complete else None,
                    "peak_job": f"{largest['train']}/{largest['model']}" if complete else None,
                    "peak_source": largest["memory_source"] if complete else None,
                    "estimate": any(j["estimate"] for j in jobs)})
    return out


def _fmt(v: float, digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def _peak_basis(c: dict) -> str:
    """Where the table's peak memory figure comes from: the largest job and its source."""
    return f"{c['peak_job']}: {c['peak_source']}" if c.get("peak_job") else "-"


def cost_markdown(costs: list[dict]) -> str:
    """The cost table (one row per paper table, then one per job)."""
    if not costs:
        return ""
    lines = ["| table | jobs | GPU-hours (all jobs) | peak memory per job (GB) | GPU-hours basis | peak memory basis |",
             "|---|---|---|---|---|---|"]
    for c in costs:
        basis = "; ".join(sorted({j["source"] for j in c["jobs"]})) or "-"
        lines.append(f"| {c['paper']} {c['paper_table']} ({c['table']}) | {len(c['jobs'])} | {_fmt(c['gpu_hours'], 2)}"
                     f"{' (estimate)' if c['estimate'] else ''} | {_fmt(c['peak_gb_per_job'], 2)} | {basis} | "
                     f"{_peak_basis(c)} |")
    lines += ["", "| job | steps x batch @ px | GPU-hours | peak GB | GPU-hours basis | peak memory basis |",
              "|---|---|---|---|---|---|"]
    seen = set()
    for c in costs:
        for j in c["jobs"]:
            key = (j["train"], j["model"])
            if key in seen:
                continue
            seen.add(key)
            lines.append(f"| {j['train']}/{j['model']} | {j['steps']:,} x {j['batch']} @ {j['size']} | {_fmt(j['gpu_hours'], 2)} | "
                         f"{_fmt(j['peak_gb'], 2)} | {j['source']} | {j.get('memory_source', '-')} |")
    return "\n".join(lines) + "\n"


def cost_html(costs: list[dict] | None) -> str:
    if not costs:
        return ""
    from html import escape

    rows = "".join(
        f"<tr><td>{escape(c['paper'])} {escape(c['paper_table'])} ({escape(c['table'])})</td><td>{len(c['jobs'])}</td>"
        f"<td>{_fmt(c['gpu_hours'], 2)}{' (estimate)' if c['estimate'] else ''}</td><td>{_fmt(c['peak_gb_per_job'], 2)}</td>"
        f"<td>{escape('; '.join(sorted({j['source'] for j in c['jobs']})) or '-')}</td>"
        f"<td>{escape(_peak_basis(c))}</td></tr>" for c in costs)
    return ("<h2>Training cost per table</h2><p>GPU-hours of the training jobs behind each table (steps from params) and "
            "the largest peak memory of one job. GPU-hours: measured on CUDA where benchmarks/train-cuda.json has the job, "
            f"else estimated from FLOPs counted on the CPU at an assumed {ASSUMED_TFLOPS:g} TFLOP/s. Peak memory: CUDA max "
            "allocated from that file, else the peak CPU RSS measured by scripts/train_memory.py (train/memory.py) at the "
            "job's batch or extrapolated linearly to it, else (nothing measured) estimated from parameter state and saved "
            "activations (report/cost.py).</p>"
            "<table><tr><th>table</th><th>jobs</th><th>GPU-hours</th><th>peak GB per job</th><th>GPU-hours basis</th>"
            f"<th>peak memory basis</th></tr>{rows}</table>")
