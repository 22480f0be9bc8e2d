"""Parameter count and inference time of any registered model spec (Table 3 of the CCSA paper:
"Model parameters for image inpainting with size of 128*128. Inference time is taken from the
average of 20 inference tests").

    from inpaintbench.report.efficiency import efficiency
    efficiency("ccsa", {"base": 16}, size=128, device="cpu")
    # -> {"arch", "args", "size", "batch", "device", "device_name", "params", "ms", "ms_median", "repeats"}

    uv run python scripts/model_efficiency.py --arch ccsa --args '{"base": 16}' --size 128 --device cpu

params: trainable generator parameters (``generator_parameters()``): frozen loss backbones and
discriminators are not counted. ms: mean wall time of one ``forward(image_in, mask)`` (batch 1
unless asked, eval mode, no grad, CUDA synchronised) over `repeats` runs after `warmup` runs;
ms_median beside it. A classical model (no parameters) is timed on ``inpaint_numpy``.
The input is a seeded random image and an irregular mask with about 40 % holes.

A model with a frozen teacher (SAHN, SPL, SPN) is built for timing without the experiment's
trained teacher: when the teacher kind is `trained`, a frozen TeacherCNN of the trained teacher's
shape (the experiment's `teacher.widths`) with seeded random weights stands in. The generator's
shape depends only on the teacher's channel widths, the generator alone is counted, and inference
never runs the teacher, so parameters and times are those of the trained model; the efficiency
job thus waits for no teacher (a teacher failure cannot block the efficiency table).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inpaintbench.models.base import BuildContext
from inpaintbench.models.registry import build


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"CPU {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def sample_input(size: int, batch: int = 1, seed: int = 0, hole_ratio: float = 0.4):
    """A seeded image in [0,1] and a blob-shaped hole mask (N1HW, 1 = hole) of about `hole_ratio`."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, size, size, generator=g)
    noise = F.interpolate(torch.rand(batch, 1, 8, 8, generator=g), size=(size, size), mode="bilinear",
                          align_corners=False)
    threshold = torch.quantile(noise.flatten(1), 1 - hole_ratio, dim=1).view(batch, 1, 1, 1)
    return image, (noise > threshold).float()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def efficiency(arch: str, args: dict | None = None, size: int = 128, device: str = "cpu", batch: int = 1,
               repeats: int = 20, warmup: int = 3, ctx: BuildContext | None = None, seed: int = 0) -> dict:
    ctx = ctx or BuildContext(image_size=size, seed=seed, perceptual={"backbone": "none"}, device=device)
    torch.manual_seed(seed)
    model = build(arch, args or {}, {}, ctx)
    image, mask = sample_input(size, batch, seed)
    if getattr(model, "learned", True):
        model = model.to(device).eval()
        params = sum(p.numel() for p in model.generator_parameters())
        image, mask = image.to(device), mask.to(device)
        image_in = image * (1 - mask)

        def run():
            with torch.no_grad():
                model(image_in, mask)
    else:
        params = 0
        img_np, mask_np = image[0].permute(1, 2, 0).numpy(), mask[0, 0].numpy()

        def run():
            model.inpaint_numpy(np.ascontiguousarray(img_np), np.ascontiguousarray(mask_np))
    for _ in range(warmup):
        run()
    _sync(device)
    if repeats == 0:  # parameters only
        return {"arch": arch, "args": dict(args or {}), "size": size, "batch": batch, "device": device,
                "device_name": device_name(device), "params": int(params), "ms": float("nan"),
                "ms_median": float("nan"), "repeats": 0}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return {"arch": arch, "args": dict(args or {}), "size": size, "batch": batch, "device": device,
            "device_name": device_name(device), "params": int(params), "ms": statistics.fmean(times),
            "ms_median": statistics.median(times), "repeats": repeats}


EFFICIENCY_FIELDS = ["experiment", "model", "arch", "label", "size", "params", "ms", "ms_median", "params_paper",
                     "ms_paper", "device_name", "teacher"]

#: the `teacher` cell of a model timed with the random-weight stand-in of the trained teacher
TIMING_TEACHER_NOTE = "random-weight frozen teacher of the trained teacher's shape (timing needs no trained weights)"


def timing_teacher(teacher_cfg: dict, folder: str | Path) -> str:
    """A teacher checkpoint for timing: the `trained` teacher's architecture (TeacherCNN with
    the experiment's `teacher.widths`, one placeholder label: the classifier head is never run
    by the inpainting model) with seeded random weights, written into `folder`; returns its path."""
    from ..train.teacher import DEFAULT_TEACHER_CFG, TeacherCNN, save_teacher

    widths = [int(w) for w in {**DEFAULT_TEACHER_CFG, **(teacher_cfg or {})}["widths"]]
    torch.manual_seed(0)
    path = Path(folder) / "timing-teacher.pt"
    save_teacher(path, TeacherCNN(1, widths), ["placeholder"], {"widths": widths},
                 extra={"note": TIMING_TEACHER_NOTE})
    return str(path)


def registry_is_learned(arch: str) -> bool:
    from inpaintbench.models import registry

    return registry.is_learned(arch)


def experiment_efficiency(params, experiment: str, device: str) -> list[dict]:
    """Parameters and inference ms at ``efficiency.size`` (128, as CCSA's Table 3; ``extra_sizes``
    add columns, e.g. 256 as SAHN's Sec. 4.5) for each model
    of an experiment: the setting the experiment trains (args) and, when the model declares
    ``paper_args``, the published setting (its parameters always; its time only when
    ``efficiency.time_paper_scale`` is true, since a 100 M model on a CPU takes minutes)."""
    cfg = {"size": 128, "repeats": 20, "warmup": 3, "time_paper_scale": device.startswith("cuda"),
           **params.raw.get("efficiency", {})}
    with tempfile.TemporaryDirectory(prefix="inpaintbench-efficiency-") as folder:
        return _experiment_efficiency(params, experiment, device, cfg, folder)


def _experiment_efficiency(params, experiment: str, device: str, cfg: dict, folder: str) -> list[dict]:
    from ..train.teacher import teacher_choice

    size = int(cfg["size"])
    teacher_cfg = params.teacher(experiment)
    rows = []
    for model in params.experiment(experiment)["models"]:
        spec = params.model(model)
        # no artifact of the workflow (e.g. the trained teacher) is needed: see the module docstring
        artifacts, teacher_note = {}, ""
        if "teacher" in spec.get("requires", []):
            ctx0 = BuildContext(image_size=size, teacher=teacher_cfg)
            kind = teacher_choice(ctx0, (spec.get("args") or {}).get("teacher"))["kind"]
            if kind == "trained":
                artifacts["teacher"] = timing_teacher(teacher_cfg, folder)
                teacher_note = TIMING_TEACHER_NOTE
            else:
                teacher_note = kind
        ctx = BuildContext(image_size=size, perceptual={"backbone": "none"}, device=device,
                           teacher=teacher_cfg, artifacts=artifacts)
        # A learned model without `paper_args` trains at its published size (the papers' `*-pub`
        # entries): timing it on a CPU takes minutes per model and says little next to the papers'
        # GPU times, so it is timed only on a GPU or when efficiency.time_paper_scale asks.
        timed = bool(cfg["time_paper_scale"]) or "paper_args" in spec or not registry_is_learned(spec["arch"])
        r = efficiency(spec["arch"], spec.get("args"), size, device, repeats=int(cfg["repeats"]) if timed else 0,
                       warmup=int(cfg["warmup"]) if timed else 0, ctx=ctx)
        row = {"experiment": experiment, "model": model, "arch": spec["arch"], "label": spec.get("label", model),
               "size": size, "params": r["params"], "ms": round(r["ms"], 3) if timed else "",
               "ms_median": round(r["ms_median"], 3) if timed else "",
               "params_paper": "", "ms_paper": "", "device_name": r["device_name"] if timed else
               f"not timed on {r['device_name']} (published size; efficiency.time_paper_scale: true times it)",
               "teacher": teacher_note}
        if "paper_args" in spec:
            if cfg["time_paper_scale"]:
                big = efficiency(spec["arch"], spec["paper_args"], size, device, repeats=int(cfg["repeats"]),
                                 warmup=int(cfg["warmup"]), ctx=ctx)
                row.update(params_paper=big["params"], ms_paper=round(big["ms"], 3))
            else:
                net = build(spec["arch"], spec["paper_args"], {}, ctx)
                row["params_paper"] = sum(p.numel() for p in net.generator_parameters())
                del net
        for extra in cfg.get("extra_sizes", []):  # e.g. SAHN reports its time per 256 x 256 image
            if not timed:
                row[f"ms_{int(extra)}"] = ""
                continue
            ctx_x = BuildContext(**{**ctx.__dict__, "image_size": int(extra)})
            rx = efficiency(spec["arch"], spec.get("args"), int(extra), device, repeats=int(cfg["repeats"]),
                            warmup=int(cfg["warmup"]), ctx=ctx_x)
            row[f"ms_{int(extra)}"] = round(rx["ms"], 3)
        rows.append(row)
        print(f"{model}: {row['params']:,} parameters, " + (f"{row['ms']:.2f} ms at {size}px on {r['device_name']}" if timed else row["device_name"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True)
    parser.add_argument("--args", default="{}", help="model args as JSON")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ns = parser.parse_args(argv)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    result = efficiency(ns.arch, json.loads(ns.args), ns.size, ns.device, ns.batch, ns.repeats)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
