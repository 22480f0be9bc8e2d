"""Training-speed benchmark: input pipeline, model step, both together, peak memory.

Per model (a `models:` entry of params.yaml, built as the trainer builds it):

* pipeline samples/s: the trainer's input pipeline (train/data.py: uint8 store, per-step batches
  with generated stroke masks, DataLoader with `--workers` processes) alone, over a seeded
  random uint8 image store at the model's size;
* model step ms: `train_step` (generator + discriminator step) on one fixed batch on the device;
* step ms with the pipeline attached: the same steps fed by the pipeline (the ratio to the model
  step shows whether the pipeline hides behind the model), in blocks alternating with the model
  step alone (`--rounds` pairs: medians, the ratio taken pair by pair);
* peak memory: CUDA max allocated during the steps; on CPU the process's peak RSS (ru_maxrss:
  the whole process, so the largest model benchmarked so far in this process).

On CUDA each model runs three ways: fp32 eager, bf16 autocast, bf16 + torch.compile.

    uv run python scripts/bench_train.py --model pconv --size 64 --batch 8
    uv run python scripts/bench_train.py --all-pub --json benchmarks/train-cuda.json   # on a GPU machine
    uv run python scripts/bench_train.py --all-pub --flops   # CPU: FLOPs/memory counts for the cost estimate
    uv run python scripts/bench_train.py --pipeline-only --json benchmarks/pipeline-cpu.json  # the input pipeline alone

`--all-pub` runs every ``*-pub`` model of params.yaml at its experiment's resolution and batch
(a few steps each); `--json` writes the rows, which report/cost.py reads (the cost per table).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import registry
from inpaintbench.report import cost
from inpaintbench.report.cost import build_for_benchmark as build
from inpaintbench.report.cost import settings_of
from inpaintbench.report.efficiency import device_name
from inpaintbench.train import data
from inpaintbench.train.trainer import train_step


def random_store(n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pipeline_rate(store: np.ndarray, batch: int, workers: int, steps: int) -> float:
    return pipeline_measure(store, batch, workers, steps)["samples_per_s"]


def pipeline_measure(store: np.ndarray, batch: int, workers: int, steps: int, convert: bool = False) -> dict:
    """Deliver `steps` batches (generated masks, ratio 0.05-0.6) after 4 start-up batches: samples/s
    (wall), the main process's CPU time per sample and, with workers, the workers' CPU time per
    sample (their whole life, start-up batches and fork included, from RUSAGE_CHILDREN once the
    loader has reaped them). `convert`: also `to_device` each batch on the CPU (the main-side
    uint8 -> float32 conversion the trainer does), timed apart."""
    batches = data.StepBatches(store, 0, batch, (0.05, 0.6))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    loader = iter(data.make_loader(batches, 0, steps + 4, workers, pin_memory=torch.cuda.is_available()))
    for _ in range(4):  # start-up (worker fork, first prefetch) is not throughput
        next(loader)
    convert_s = convert_cpu = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        b = next(loader)
        if convert:
            c, cc = time.perf_counter(), time.process_time()
            data.to_device(*b, "cpu")
            convert_s, convert_cpu = convert_s + time.perf_counter() - c, convert_cpu + time.process_time() - cc
    wall, main_cpu = time.perf_counter() - start - convert_s, time.process_time() - cpu - convert_cpu
    del loader, b  # shuts the workers down (joined: their CPU time lands in RUSAGE_CHILDREN)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = steps * batch
    worker_cpu = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime)
    row = {"size": int(store.shape[1]), "batch": batch, "workers": workers, "steps": steps,
           "samples_per_s": round(n / wall, 1), "main_cpu_ms_per_sample": round(main_cpu * 1e3 / n, 4)}
    if workers:
        row["worker_cpu_ms_per_sample"] = round(worker_cpu * 1e3 / ((steps + 4) * batch), 4)
    if convert:
        row["to_device_ms_per_batch"] = round(convert_s * 1e3 / steps, 3)
        row["to_device_cpu_ms_per_batch"] = round(convert_cpu * 1e3 / steps, 3)
    return row


def pipeline_only(ns) -> int:
    """`--pipeline-only`: the input pipeline alone, in-process (0 workers, one core: the cost of
    a sample, load-robust-ish) and with each `--workers` count, `--repeats` times; medians."""
    store = random_store(256, ns.pipeline_size)
    print("command:", shlex.join(["python", *sys.argv]))
    load = start_load = os.getloadavg()
    print(f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} cores")
    rows = []
    for workers in sorted({0, *ns.pipeline_workers}):
        runs = [pipeline_measure(store, ns.batch or 8, workers, ns.pipeline_steps, convert=True) for _ in range(ns.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in ("size", "batch", "workers", "steps")}
        row = {**runs[0], **{k: round(v, 4) for k, v in med.items()}, "repeats": ns.repeats,
               "samples_per_s_runs": [r["samples_per_s"] for r in runs]}
        rows.append(row)
        extra = f", workers' CPU {row['worker_cpu_ms_per_sample']:.3f} ms/sample" if workers else ""
        print(f"pipeline {ns.pipeline_size}px batch {row['batch']} workers {workers}: {row['samples_per_s']:,.0f} samples/s "
              f"(median of {ns.repeats}: {', '.join(f'{v:,.0f}' for v in row['samples_per_s_runs'])}), main CPU "
              f"{row['main_cpu_ms_per_sample']:.3f} ms/sample{extra}; to_device {row['to_device_ms_per_batch']:.2f} ms/batch")
    load = os.getloadavg()
    print(f"load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps({"command": shlex.join(["python", *sys.argv]), "device": device_name("cpu"),
                                       "torch": torch.__version__, "cores": os.cpu_count(),
                                       "load_average_start": [round(v, 2) for v in start_load],
                                       "load_average_end": [round(v, 2) for v in load], "pipeline": True, "rows": rows},
                                      indent=1) + "\n")
        print("wrote", ns.json)
    return 0


def peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_model(params, model_name: str, size: int, batch: int, device: str, steps: int, workers: int,
                store: np.ndarray, mode: str = "fp32", rounds: int = 3) -> dict:
    amp, compiled = mode.startswith("bf16"), mode.endswith("compile")
    with tempfile.TemporaryDirectory() as tmp:
        model, opt_g, opt_d = build(params, model_name, size, device, Path(tmp))
    if compiled:
        model.generator_losses = torch.compile(model.generator_losses)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    batches = data.StepBatches(store, 1, batch, (0.05, 0.6))
    image, mask = data.to_device(*batches[0], device)
    for _ in range(2 if not compiled else 3):  # warm-up (compilation, cudnn autotune, allocator)
        train_step(model, image, mask, opt_g, opt_d, amp)
    sync(device)
    # Blocks of `steps` steps alone (one fixed batch) and `steps` steps fed by the pipeline, in
    # turn, `rounds` times: the ratio is taken block pair by block pair (a drifting machine load
    # moves both blocks of a pair alike), the figures are the medians over the rounds.
    loader = iter(data.make_loader(batches, 1, rounds * steps + 3, workers, pin_memory=device.startswith("cuda")))
    for _ in range(2):
        train_step(model, *data.to_device(*next(loader), device), opt_g, opt_d, amp)
    sync(device)
    alone, fed = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, image, mask, opt_g, opt_d, amp)
        sync(device)
        alone.append((time.perf_counter() - start) * 1000 / steps)
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, *data.to_device(*next(loader), device), opt_g, opt_d, amp)
        sync(device)
        fed.append((time.perf_counter() - start) * 1000 / steps)
    model_ms, with_pipeline_ms = statistics.median(alone), statistics.median(fed)
    ratio = statistics.median(f / a for f, a in zip(fed, alone))
    return {"model": model_name, "arch": params.model(model_name)["arch"], "size": size, "batch": batch,
            "device": device, "device_name": device_name(device), "mode": mode, "workers": workers,
            "threads": torch.get_num_threads(), "model_step_ms": round(model_ms, 2),
            "step_with_pipeline_ms": round(with_pipeline_ms, 2), "ratio": round(ratio, 3), "rounds": rounds,
            "peak_mb": round(peak_mb(device), 1),
            "peak_kind": "cuda max allocated" if device.startswith("cuda") else "process peak RSS",
            "steps": steps}


def count_flops(params, names: list[str], size: int | None, force: bool = False) -> int:
    """Merge FLOP/memory counts of `names` into benchmarks/train-flops-cpu.json (one row per model, size)."""
    path = cost.FLOPS_FILE
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    rows = {(r["model"], r["size"]): r for r in old["rows"]}
    for name, s in dict.fromkeys((n, size or sz) for n in names for sz, _ in settings_of(params, n)):
        if (name, s) in rows and not force:
            print(f"{name:20s} {s}px: already in {path} (--force to count again)")
            continue
        start = time.perf_counter()
        try:
            r = cost.measure_step(params, name, s)
        except (InpaintBenchError, RuntimeError, ValueError) as exc:  # e.g. a size the model cannot take
            print(f"{name:20s} {s}px: not counted: {str(exc).splitlines()[0]}")
            continue
        rows[(name, s)] = r
        write_rows(path, rows)  # after every model: a long run that is stopped keeps what it counted
        print(f"{name:20s} {s}px: {r['flops_per_sample'] / 1e9:,.1f} GFLOP per sample per step (counted at {r['measured_at']}px, "
              f"x{r['scale']:g}), saved activations {r['saved_bytes_per_sample'] / 2**20:,.0f} MiB/sample, "
              f"{r['trainable_parameters'] / 1e6:.1f} M params ({time.perf_counter() - start:.0f} s)")
    print("wrote", path)
    return 0


def write_rows(path: Path, rows: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"command": shlex.join(["python", *sys.argv]), "torch": torch.__version__,
                               "rows": sorted(rows.values(), key=lambda r: (r["model"], r["size"]))}, indent=1) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="a models: entry of params.yaml (repeatable)")
    ap.add_argument("--all-pub", action="store_true", help="every *-pub model at its experiment's size and batch")
    ap.add_argument("--size", type=int, help="image side (default: the model's experiment's size, else 64)")
    ap.add_argument("--batch", type=int, help="batch size (default: the experiment's training batch)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per block (model alone / with the pipeline)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating block pairs per model (medians, ratio per pair)")
    ap.add_argument("--workers", type=int, default=2, help="input-pipeline worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", default=None, help="comma list of fp32,bf16,bf16-compile (default: all on CUDA, fp32 on CPU)")
    ap.add_argument("--pipeline-size", type=int, default=256, help="image side of the pipeline-only measurement")
    ap.add_argument("--pipeline-only", action="store_true",
                    help="only the input pipeline: in-process and with --pipeline-workers, samples/s and CPU time per sample")
    ap.add_argument("--pipeline-workers", type=lambda v: [int(x) for x in v.split(",")], default=[2],
                    help="--pipeline-only: comma list of worker counts (0 = in-process is always measured)")
    ap.add_argument("--pipeline-steps", type=int, default=100, help="--pipeline-only: timed batches per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="--pipeline-only: measurements per worker count (median)")
    ap.add_argument("--flops", action="store_true",
                    help=f"only count FLOPs and saved activations per sample (CPU) into {cost.FLOPS_FILE} (report/cost.py)")
    ap.add_argument("--measure-at", type=int, help=f"--flops: count at most at this size and scale (default {cost.MEASURE_MAX_SIZE})")
    ap.add_argument("--force", action="store_true", help="--flops: count again models already in the file")
    ap.add_argument("--json", type=Path, help="write the rows here (report/cost.py reads benchmarks/train-<device>.json)")
    ns = ap.parse_args(argv)
    torch.set_num_threads(ns.threads)
    if ns.pipeline_only:
        return pipeline_only(ns)
    params = load_params()
    names = list(ns.model or [])
    if ns.all_pub:
        names += [m for m in params.raw["models"] if m.endswith("-pub") and registry.is_learned(params.model(m)["arch"])]
    if not names:
        ap.error("give --model NAME or --all-pub")
    if ns.flops:
        if ns.measure_at:
            cost.MEASURE_MAX_SIZE = ns.measure_at
        return count_flops(params, names, ns.size, ns.force)
    modes = ns.modes.split(",") if ns.modes else (["fp32", "bf16", "bf16-compile"] if ns.device.startswith("cuda") else ["fp32"])
    print("command:", shlex.join(["python", *sys.argv]))
    print("device:", device_name(ns.device), f"| torch threads {ns.threads} | pipeline workers {ns.workers}")
    store256 = random_store(256, ns.pipeline_size)
    rate = pipeline_rate(store256, 8, ns.workers, 40)
    print(f"input pipeline alone at {ns.pipeline_size}px, batch 8, generated masks: {rate:,.0f} samples/s")
    rows = [{"pipeline": True, "size": ns.pipeline_size, "batch": 8, "workers": ns.workers, "samples_per_s": round(rate, 1)}]
    for name, size, batch in dict.fromkeys((n, ns.size or sz, ns.batch or b) for n in names for sz, b in settings_of(params, n)):
        store = random_store(64, size)
        for mode in modes:
            try:
                r = bench_model(params, name, size, batch, ns.device, ns.steps, ns.workers, store, mode, ns.rounds)
            except (InpaintBenchError, RuntimeError) as exc:  # e.g. CUDA out of memory: say so, go on
                print(f"{name} {mode}: failed: {str(exc).splitlines()[0]}")
                rows.append({"model": name, "mode": mode, "size": size, "batch": batch, "error": str(exc).splitlines()[0]})
                if ns.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                continue
            rows.append(r)
            print(f"{name:20s} {size}px batch {batch} {mode:12s}: model step {r['model_step_ms']:8.1f} ms, "
                  f"with pipeline {r['step_with_pipeline_ms']:8.1f} ms (x{r['ratio']:.2f}), peak {r['peak_mb']:,.0f} MB ({r['peak_kind']})")
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps({"command": shlex.join(["python", *sys.argv]), "device": device_name(ns.device),
                                       "torch": torch.__version__, "rows": rows}, indent=1) + "\n")
        print("wrote", ns.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
