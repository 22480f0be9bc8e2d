"""Benchmark of the CCSA semantic coherent attention generation (Sec. 3.2.2, Eq. 2) and of the
model's size and speed (Table 3 setting: 128x128 input).

1. Times the vectorised generation (`sca_generate`: one loop over hole positions, every image
   and channel per step) against the plain Python loop (`sca_generate_loop`: one image, one
   hole patch at a time) on the same inputs, forward only; checks they agree. Also times
   forward + backward of the hand-written backward against autograd through the recursion.
2. Prints parameters and inference ms at 128x128 for the small default and the paper-scale
   settings (via scripts/model_efficiency.py, generic over registered models).

    OMP_NUM_THREADS=1 uv run python scripts/bench_ccsa_generation.py [--device cpu] [--threads 1]
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inpaintbench.report.efficiency import device_name, efficiency  # noqa: E402

from inpaintbench.models.base import BuildContext  # noqa: E402
from inpaintbench.models.ccsa import DEFAULT_ARGS, PAPER_SCALE_ARGS  # noqa: E402
from inpaintbench.models.ccsa import build as build_ccsa  # noqa: E402
from inpaintbench.models.layers import ccsa_attention as A  # noqa: E402


def median_ms(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def generation_case(batch: int, side: int, channels: int, device: str, seed: int = 0):
    """Features of one CCSA level (ReLU features) and blob holes of about 40 %, per image."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.relu(torch.randn(batch, side * side, channels, generator=g))
    noise = F.interpolate(torch.rand(batch, 1, 4, 4, generator=g), size=(side, side), mode="bilinear")
    hole = (noise > torch.quantile(noise.flatten(1), 0.6, dim=1).view(batch, 1, 1, 1)).float().flatten(1)
    feat, hole = feat.to(device), hole.to(device)
    match, dmax = A.sca_search(feat, hole)
    return feat, hole, match, dmax


def bench_generation(batch: int, side: int, channels: int, device: str, repeats: int) -> dict:
    feat, hole, match, dmax = generation_case(batch, side, channels, device)
    with torch.no_grad():
        fast_out = A.sca_generate(feat, hole, match, dmax)
        loop_out = A.sca_generate_loop(feat, hole, match, dmax)
        fast = median_ms(lambda: A.sca_generate(feat, hole, match, dmax), repeats, device)
        loop = median_ms(lambda: A.sca_generate_loop(feat, hole, match, dmax), max(3, repeats // 4), device)
    order, _ = A.hole_order(hole)
    index = order.unsqueeze(-1).expand(-1, -1, channels)
    seq_query = feat.gather(1, index).requires_grad_()
    seq_match = match.gather(1, index).requires_grad_()
    seq_dmax = dmax.gather(1, order).requires_grad_()

    def fwd_bwd(fn):
        return lambda: fn(seq_query, seq_match, seq_dmax).sum().backward()

    custom = median_ms(fwd_bwd(A.generate_sequence), repeats, device)
    autograd = median_ms(fwd_bwd(A.generate_sequence_autograd), repeats, device)
    return {"batch": batch, "grid": f"{side}x{side}", "channels": channels, "max_holes": int(order.shape[1]),
            "max_abs_diff": float((fast_out - loop_out).abs().max()), "vectorised_ms": fast, "loop_ms": loop,
            "speedup": loop / fast, "custom_fwd_bwd_ms": custom, "autograd_fwd_bwd_ms": autograd,
            "bwd_speedup": autograd / custom}


def train_step_ms(args: dict, perceptual: dict, steps: int = 10) -> tuple[float, float]:
    """Median (CPU-time ms, wall ms) of one generator step: batch 8, 64x64, Adam, as the trainer."""
    torch.manual_seed(0)
    model = build_ccsa(args, {}, BuildContext(image_size=64, perceptual=perceptual))
    opt = torch.optim.Adam(model.generator_parameters(), lr=1e-4, betas=(0.9, 0.999))
    g = torch.Generator().manual_seed(0)
    image = torch.rand(8, 3, 64, 64, generator=g)
    mask = (F.interpolate(torch.rand(8, 1, 8, 8, generator=g), size=64, mode="bilinear") > 0.6).float()
    cpu, wall = [], []
    for _ in range(steps + 2):
        c0, w0 = time.process_time(), time.perf_counter()
        out = model.generator_losses(image, mask)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return statistics.median(cpu[2:]), statistics.median(wall[2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CCSA generation and efficiency benchmark")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper-scale model")
    parser.add_argument("--step-time", action="store_true",
                        help="also time one training step (batch 8, 64x64) of the four small variants")
    ns = parser.parse_args(argv)
    torch.set_num_threads(ns.threads)
    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print("device:", device_name(ns.device))
    print("\n# SCA generation (Eq. 2): vectorised vs plain Python loop, forward, median ms")
    for batch, side, channels in [(8, 16, 32), (8, 32, 32)]:  # finest CCSA level at 64 px and 128 px input
        r = bench_generation(batch, side, channels, ns.device, ns.repeats)
        print(f"batch {r['batch']} grid {r['grid']} C {r['channels']} (<= {r['max_holes']} hole patches): "
              f"vectorised {r['vectorised_ms']:.2f} ms, plain loop {r['loop_ms']:.2f} ms, "
              f"ratio {r['speedup']:.1f}x (max |diff| {r['max_abs_diff']:.1e}); "
              f"fwd+bwd: custom backward {r['custom_fwd_bwd_ms']:.2f} ms, autograd {r['autograd_fwd_bwd_ms']:.2f} ms "
              f"({r['bwd_speedup']:.1f}x)")
    print("\n# Model size and inference at 128x128 (batch 1, mean of 20 runs; Table 3: 100 M, 4.69 ms on RTX 3080)")
    settings = [("default", DEFAULT_ARGS)] + ([] if ns.skip_paper else [("paper-scale", PAPER_SCALE_ARGS)])
    for name, args in settings:
        r = efficiency("ccsa", args, size=128, device=ns.device, repeats=ns.repeats)
        print(f"{name:12s} {args}: params {r['params']:,} ({r['params'] / 1e6:.2f} M), "
              f"inference {r['ms']:.2f} ms (median {r['ms_median']:.2f}) on {r['device_name']}")
    if ns.step_time:
        print("\n# Training step, batch 8, 64x64, small default, median of 10 (CPU time / wall)")
        for perceptual in ({"backbone": "none"}, {"backbone": "random-vgg16", "width": 0.25}):
            for res in (0, 1):
                for att in (0, 1):
                    cpu, wall = train_step_ms({**DEFAULT_ARGS, "res": bool(res), "att": bool(att)}, perceptual)
                    print(f"ccsa-res{res}att{att} perceptual {perceptual}: {cpu:.1f} ms CPU, {wall:.1f} ms wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
