"""Peak memory of one training job of a model: build it as its experiment does, run a few training
steps (generator and discriminator, the trainer's `train_step`) on seeded random images at the
experiment's size, and print the process's peak RSS (CPU) or CUDA max allocated memory.

    uv run python scripts/train_memory.py sahn-pub --experiment sahn-paper --batch 1
    uv run python scripts/train_memory.py --all --batch 1 2      # every *-pub model of the papers' suite

Each measurement runs in a fresh subprocess (peak RSS is per process). Offline, the papers'
ImageNet weights are missing: the perceptual backbone is the VGG16-shaped random network at
width 1.0 (the same shapes, hence the same memory, as ImageNet VGG16) and the teacher is an
ImageNet-ResNet-50-shaped network (the substitute; the paper's ASL TResNet-L is larger).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(model_name: str, experiment: str, batch: int, steps: int, device: str,
            no_deform_checkpoint: bool = False) -> dict:
    import torch

    from inpaintbench.config import load_params
    from inpaintbench.models import registry
    from inpaintbench.models.base import BuildContext
    from inpaintbench.train.trainer import make_optimizer, train_step

    params = load_params("params.yaml")
    spec = params.model(model_name)
    size = params.experiment(experiment)["size"]
    torch.set_num_threads(1)
    ctx = BuildContext(image_size=size, seed=0, perceptual={"backbone": "random-vgg16", "width": 1.0},
                       device=device, teacher={"kind": "imagenet-resnet50"} if "teacher" in spec.get("requires", []) else None)
    if "teacher" in spec.get("requires", []):
        _resnet_stand_in()
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
           "step_s": round(min(times), 3), "params": sum(p.numel() for p in model.generator_parameters())}
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--experiment")
    ap.add_argument("--all", action="store_true", help="every *-pub model of the papers' suite, one subprocess each")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-deform-checkpoint", action="store_true",
                    help="measure SAHN's deformable convs without checkpointing (the earlier footprint)")
    ns = ap.parse_args(argv)
    if not ns.all:
        for b in ns.batch:
            print(json.dumps({**measure(ns.model, ns.experiment, b, ns.steps, ns.device, ns.no_deform_checkpoint),
                              "deform_checkpoint": not ns.no_deform_checkpoint}), flush=True)
        return 0
    for model, experiment in pub_jobs():
        for b in ns.batch:
            cmd = [sys.executable, __file__, model, "--experiment", experiment, "--batch", str(b),
                   "--steps", str(ns.steps), "--device", ns.device]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else \
                json.dumps({"model": model, "batch": b, "error": (out.stderr.strip().splitlines() or ["?"])[-1]})
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
