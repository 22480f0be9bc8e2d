"""Peak memory of one training job of a model: build it as its experiment does, run a few training
steps (generator and discriminator, the trainer's `train_step`) on seeded random images at the
experiment's size, and print the process's peak RSS (CPU) or CUDA max allocated memory.

    uv run python scripts/train_memory.py sahn-pub --experiment sahn-paper --batch 1 2 --steps 1
    uv run python scripts/train_memory.py --all --batch 1 2      # every *-pub model of the papers' suite
    uv run python scripts/train_memory.py spl-pub --experiment sahn-paper --batch 1 2 --max-rss-mb 6800
    uv run python scripts/train_memory.py --disk         # checkpoint and data sizes of the papers' suite

Each measurement (model, batch) runs in a fresh subprocess (peak RSS is per process);
``--max-rss-mb`` kills a measurement whose resident memory passes the limit and reports it as
exceeded (for a shared machine). Before the measured steps the optimisers are warmed: every
parameter gets a zero gradient and each optimiser takes one step (Adam with zero gradients and no
weight decay leaves the weights unchanged; the memory does not depend on them anyway), so the first measured step already holds what every later step of a real
job holds: Adam's two state tensors per parameter and the gradients kept from the previous step
(`train_step` frees them only after the next forward pass). Without the warm-up (``--cold``, how
the README's peaks marked "cold" were measured) a one-step measurement misses them.

Offline, the papers' weights are missing: the perceptual backbone is the VGG16-shaped random
network at width 1.0 (the same shapes, hence the same memory, as ImageNet VGG16) and the teacher
is the experiment's teacher kind with seeded random weights of the same shapes (``--teacher`` for
another: ASL TResNet-L through timm, or the ImageNet-ResNet-50 shape, which needs a stand-in file
in the torch.hub cache).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _random_asl_teacher() -> None:
    """Let `build_teacher(kind='asl-tresnet-l')` build timm's TResNet-L with seeded random weights
    (memory and time do not depend on the values) when the ASL file is absent."""
    from inpaintbench.train import teacher
    from inpaintbench.train.perceptual import hub_checkpoint_dir

    if (hub_checkpoint_dir() / teacher.ASL_TRESNET_L_FILE).exists():
        return
    teacher.cached_weights = lambda name, *a, **k: name
    teacher.load_asl_tresnet = lambda path: teacher.TResNetTaps(teacher._tresnet_l(num_classes=0))


def warm_optimizer(opt) -> None:
    """Allocate `opt`'s state and leave a (zero) gradient on every parameter, as a real job has
    them after its first step; zero gradients make Adam's update zero, so no weight changes."""
    import torch

    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    opt.step()


def measure(model_name: str, experiment: str, batch: int, steps: int, device: str,
            no_deform_checkpoint: bool = False, warm: bool = True, teacher_kind: str | None = None,
            size: int | None = None) -> dict:
    import torch

    from inpaintbench.config import load_params
    from inpaintbench.models import registry
    from inpaintbench.models.base import BuildContext
    from inpaintbench.train.trainer import make_optimizer, train_step

    params = load_params("params.yaml")
    spec = params.model(model_name)
    size = size or params.experiment(experiment)["size"]
    torch.set_num_threads(1)
    needs_teacher = "teacher" in spec.get("requires", [])
    teacher_kind = teacher_kind or params.teacher(experiment).get("kind", "imagenet-resnet50")
    ctx = BuildContext(image_size=size, seed=0, perceptual={"backbone": "random-vgg16", "width": 1.0},
                       device=device, teacher={"kind": teacher_kind} if needs_teacher else None)
    if needs_teacher and teacher_kind in ("imagenet-resnet50", "resnet50"):
        _resnet_stand_in()
    elif needs_teacher and teacher_kind == "asl-tresnet-l":
        _random_asl_teacher()
    torch.manual_seed(0)
    model = registry.build(spec["arch"], spec.get("args"), spec.get("loss"), ctx).to(device)
    if no_deform_checkpoint:  # the footprint before SAHN's deformable convs were checkpointed
        from inpaintbench.models.layers.sahn_deform import DeformableConv2d

        for m in model.modules():
            if isinstance(m, DeformableConv2d):
                m.checkpoint = False
    cfg = params.training(model_name, experiment)
    opt_g = make_optimizer(model.generator_parameters(), cfg["optimizer"])
    opt_d = make_optimizer(model.discriminator.parameters(), cfg.get("d_optimizer", cfg["optimizer"])) \
        if model.discriminator is not None else None
    if warm:
        for opt in (opt_g, opt_d):
            if opt is not None:
                warm_optimizer(opt)
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        image = torch.rand(batch, 3, size, size, generator=g).to(device)
        mask = (torch.rand(batch, 1, size // 8, size // 8, generator=g) > 0.6).float()
        mask = torch.nn.functional.interpolate(mask, size=(size, size)).to(device)
        start = time.perf_counter()
        train_step(model, image, mask, opt_g, opt_d, amp=device == "cuda")
        times.append(time.perf_counter() - start)
    out = {"model": model_name, "experiment": experiment, "size": size, "batch": batch, "device": device,
           "step_s": round(min(times), 3), "params": sum(p.numel() for p in model.generator_parameters()),
           "warm": warm, "teacher": teacher_kind if needs_teacher else None}
    if device == "cuda":
        out["peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    else:
        out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _resnet_stand_in() -> None:
    """An ImageNet-ResNet-50-shaped file in the torch.hub cache when the real one is absent
    (seeded random values; memory and time do not depend on the values)."""
    import torch
    from torchvision.models import resnet50

    from inpaintbench.train.perceptual import hub_checkpoint_dir
    from inpaintbench.train.teacher import RESNET50_FILE

    path = hub_checkpoint_dir() / RESNET50_FILE
    if not path.exists():
        raise SystemExit(f"{path} is missing; set TORCH_HOME to a folder holding a (stand-in) {RESNET50_FILE}")


def pub_jobs() -> list[tuple[str, str]]:
    from inpaintbench.config import load_params

    params = load_params("params.yaml")
    seen, jobs = set(), []
    for e in params.active_experiments("papers"):
        for m in params.experiment(e)["models"]:
            if m.endswith("-pub") and params.is_learned(m) and m not in seen:
                seen.add(m)
                jobs.append((m, e))
    return jobs


# Images per prepared dataset of the papers' suite (train, val, test), from the sources' published
# counts (src/inpaintbench/data/sources.py notes, docs/datasets.md) and the params' split
# settings; Places: at most 5,000 training + 100 validation images per category (Places365-Standard).
PAPERS_IMAGES = {
    "celeba-ccsa": (27_000, 200, 3_000),        # subset n 30,000, holdout 10 %; val from outside the 30,000
    "urban100-128": (0, 0, 100),
    "dtd-128": (0, 0, 5_640),                   # split: test puts every image in test
    "celeba-sahn": (162_770, 19_867, 12_000),   # official split, test capped at 12,000
    "places2-sahn": (22_800, 200, 2_500),       # <= 5 categories x 5,100, 500 per category test
    "paris-sahn": (14_700, 200, 100),           # 14,900 train (200 of them carved out for val) + 100 test
}
PAPERS_MASKS = {"nvidia-test": 12_000, "qd-imd-train": 50_000, "qd-imd-test": 10_000}


def checkpoint_sizes() -> list[dict]:
    """Bytes of every *-pub model's final checkpoint (its state dict) and of its resumable
    `last.pt` (state dict + Adam's two fp32 tensors per trainable generator and discriminator
    parameter), built as the papers' suite builds it (random weights, same shapes)."""
    import torch

    from inpaintbench.config import load_params
    from inpaintbench.models import registry
    from inpaintbench.models.base import BuildContext

    _random_asl_teacher()
    params = load_params("params.yaml")
    rows = []
    for model_name, experiment in pub_jobs():
        spec = params.model(model_name)
        needs = "teacher" in spec.get("requires", [])
        ctx = BuildContext(image_size=params.experiment(experiment)["size"], seed=0,
                           perceptual={"backbone": "random-vgg16", "width": 1.0},
                           teacher={"kind": params.teacher(experiment).get("kind")} if needs else None)
        torch.manual_seed(0)
        model = registry.build(spec["arch"], spec.get("args"), spec.get("loss"), ctx)
        state = sum(v.numel() * v.element_size() for v in model.state_dict().values())
        g = sum(p.numel() for p in model.generator_parameters())
        d = sum(p.numel() for p in model.discriminator.parameters()) if model.discriminator is not None else 0
        rows.append({"model": model_name, "g": g, "d": d, "model_pt": state, "last_pt": state + 8 * (g + d)})
        del model
    return rows


def disk_markdown() -> str:
    """The papers' suite's disk, as README tables: checkpoints per model and per suite, data."""
    from inpaintbench.config import load_params
    from inpaintbench.data.sources import SOURCES

    params = load_params("params.yaml")
    ckpt = {r["model"]: r for r in checkpoint_sizes()}
    gb = lambda n: f"{n / 1e9:,.2f} GB"  # noqa: E731
    mb = lambda n: f"{n / 1e6:,.0f} MB"  # noqa: E731
    lines = ["| model | generator + discriminator parameters | `model.pt` | `last.pt` while training |",
             "|---|---|---|---|"]
    for m, r in ckpt.items():
        lines.append(f"| `{m}` | {r['g'] / 1e6:.1f} M + {r['d'] / 1e6:.1f} M | {mb(r['model_pt'])} | {mb(r['last_pt'])} |")
    jobs, final, peak_job = 0, 0, 0
    for e in params.active_experiments("papers"):
        for run in params.experiment(e)["runs"]:
            for m in params.experiment(e)["models"]:
                if m in ckpt:
                    jobs += 1
                    final += ckpt[m]["model_pt"]
                    peak_job = max(peak_job, 2 * ckpt[m]["last_pt"])
    lines += ["", f"{jobs} training jobs: final checkpoints {gb(final)} in all; a running job also holds its `last.pt` "
              f"(twice while it is rewritten atomically: at most {gb(peak_job)})."]
    down = {name: sum(f.size or 0 for f in SOURCES[name].files) for name in ("celeba", "places365", "dtd")}
    lines += ["", "| data | images train / val / test | size | `data/prepared` (PNG, at most size² x 3 B each) "
              "| training store `data/cache/train` (uint8, exact) |", "|---|---|---|---|---|"]
    tot_prep = tot_store = 0
    for ds, (tr, va, te) in PAPERS_IMAGES.items():
        size = int(params.raw["datasets"][ds]["size"])
        prep, store = (tr + va + te) * size * size * 3, tr * size * size * 3
        tot_prep, tot_store = tot_prep + prep, tot_store + store
        lines.append(f"| `{ds}` | {tr:,} / {va:,} / {te:,} | {size} | {gb(prep)} | {gb(store)} |")
    qd_store = PAPERS_MASKS["qd-imd-train"] * 256 * 256
    lines.append(f"| `qd-imd-train` masks (SAHN training) | {PAPERS_MASKS['qd-imd-train']:,} | 256 | (binary PNG, small) "
                 f"| {gb(qd_store)} |")
    lines += ["", f"Downloads with published sizes (kept after extraction): "
              + ", ".join(f"{k} {gb(v)}" for k, v in down.items())
              + f"; prepared at most {gb(tot_prep)}, training stores {gb(tot_store + qd_store)}."]
    return "\n".join(lines)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_one(model: str, experiment: str, batch: int, ns) -> dict:
    """One measurement in a fresh subprocess; killed (and reported as exceeded) past --max-rss-mb."""
    cmd = [sys.executable, __file__, model, "--experiment", experiment, "--batch", str(batch), "--steps", str(ns.steps),
           "--device", ns.device, "--_child"] + (["--no-deform-checkpoint"] if ns.no_deform_checkpoint else []) \
        + (["--cold"] if ns.cold else []) + (["--teacher", ns.teacher] if ns.teacher else []) \
        + (["--size", str(ns.size)] if ns.size else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = 0.0
    while proc.poll() is None:
        seen = max(seen, _rss_mb(proc.pid))
        if ns.max_rss_mb and seen > ns.max_rss_mb:
            proc.kill()
            proc.communicate()
            return {"model": model, "experiment": experiment, "batch": batch,
                    "error": f"resident memory passed --max-rss-mb {ns.max_rss_mb} (killed)"}
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    lines = stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"model": model, "experiment": experiment, "batch": batch, "error": (stderr.strip().splitlines() or ["?"])[-1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--experiment")
    ap.add_argument("--all", action="store_true", help="every *-pub model of the papers' suite, one subprocess each")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-deform-checkpoint", action="store_true",
                    help="measure SAHN's deformable convs without checkpointing (the earlier footprint)")
    ap.add_argument("--cold", action="store_true",
                    help="no optimiser warm-up (misses Adam's state and the kept gradients in a one-step measurement)")
    ap.add_argument("--teacher", help="teacher kind for SAHN/SPL/SPN (default: the experiment's)")
    ap.add_argument("--size", type=int, help="image size (default: the experiment's); e.g. batch 1 and 2 at a "
                    "smaller size give the fixed part where batch 2 at the experiment's size does not fit")
    ap.add_argument("--max-rss-mb", type=float, default=0, help="kill a measurement past this resident memory")
    ap.add_argument("--disk", action="store_true",
                    help="print the papers' suite's disk needs (checkpoints per model, data) as Markdown")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.disk:
        print(disk_markdown())
        return 0
    if ns._child:
        out = measure(ns.model, ns.experiment, ns.batch[0], ns.steps, ns.device, ns.no_deform_checkpoint,
                      warm=not ns.cold, teacher_kind=ns.teacher, size=ns.size)
        print(json.dumps({**out, "deform_checkpoint": not ns.no_deform_checkpoint}), flush=True)
        return 0
    if ns.all:
        jobs = pub_jobs()
    else:
        if not ns.model or not ns.experiment:
            ap.error("name a model and --experiment, or pass --all")
        jobs = [(ns.model, ns.experiment)]
    for model, experiment in jobs:
        for b in ns.batch:
            print(json.dumps(run_one(model, experiment, b, ns)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
