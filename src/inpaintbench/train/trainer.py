"""The one trainer for every learned model.

Per step: a batch of training images (indices, flips and masks derived from the seed and the
global step, so a resumed run sees exactly the batches an uninterrupted one would; built by the
worker processes of train/data.py from a uint8 store), the model's
generator losses, a generator optimizer step, and — when the model has a discriminator — a
discriminator step with its own optimizer. CUDA runs under bf16 autocast (params
``training.amp``). Every ``checkpoint_every`` steps and at each epoch end the full state (model,
optimizers, step, history, MLflow run id) is written atomically to ``last.pt``; a killed job
started again resumes from it and ends with the same weights as an uninterrupted run (on CPU).
After each epoch the model is scored on a fixed set of validation pairs (PSNR, SSIM, L1), and
per-step losses and per-epoch metrics go to MLflow and to CSV files beside the checkpoint.
Losses stay on the device and are read back every ``log_every`` steps on CUDA (no per-step
host sync); ``training.channels_last`` / ``training.compile`` switch on NHWC and torch.compile.
``training.finetune`` adds a second phase over the run's last steps (lower lr, batch norm frozen,
the official PConv / RFR / CTSDG recipes: train/phases.py); its start is a pure function of the
global step, history rows and MLflow (`train/phase`, params `finetune.*`, tag `finetune`) name the
phase, and last.pt records it.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import paths
from ..config import Params, derive_seed
from ..tracking import git_commit
from ..errors import InpaintBenchError
from ..evaluate import load_pairs, score
from ..io import write_csv, write_json
from ..models import registry
from ..models.base import BuildContext
from . import checkpoints, data, phases
from .devices import claim_gpu, resolve_device

DEFAULT_TRAINING = {"batch_size": 8, "epochs": 4, "steps_per_epoch": 50, "checkpoint_every": 50,
                    "val_pairs": 16, "num_threads": 0, "amp": "bf16", "mask_ratio": [0.05, 0.6],
                    "log_every": 1, "masks": "generated", "num_workers": "auto", "channels_last": False,
                    "compile": False}


def _enabled(setting, device: str) -> bool:
    """``training.compile`` / ``training.channels_last``: true, false, or ``cuda`` (only on CUDA)."""
    if setting in ("cuda", "gpu"):
        return device == "cuda"
    if isinstance(setting, bool):
        return setting
    raise InpaintBenchError(f"expected true, false or 'cuda', got {setting!r}")


def make_optimizer(parameters, cfg: dict) -> torch.optim.Optimizer:
    params = list(parameters)
    if not params:
        raise InpaintBenchError("the model has no trainable parameters")
    kind = cfg.get("name", "adam")
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    return opt_cls(params, lr=float(cfg.get("lr", 1e-4)), betas=tuple(cfg.get("betas", (0.9, 0.999))),
                   weight_decay=float(cfg.get("weight_decay", 0.0)))


def train_step(model, image: torch.Tensor, mask: torch.Tensor, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer | None = None, amp: bool = False, frozen_bn=()):
    """One training step: the generator step, then (when there is a discriminator optimizer) the
    discriminator step on the detached prediction. Returns the two StepOutputs (d is None
    without a discriminator). The discriminator's grads are zeroed right before its own step, so
    adversarial generator terms may backpropagate through it. `frozen_bn`: batch-norm modules put
    back in eval mode after ``model.train()`` (the fine-tune phase: running statistics used and
    kept; their affine parameters still train)."""
    model.train()
    for bn in frozen_bn:
        bn.eval()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
        out = model.generator_losses(image, mask)
    opt_g.zero_grad(set_to_none=True)
    out.total.backward()
    opt_g.step()
    d = None
    if opt_d is not None:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            d = model.discriminator_losses(image, mask, out.pred.detach())
        opt_d.zero_grad(set_to_none=True)
        d.total.backward()
        opt_d.step()
    return out, d


def frozen_bn_modules(model, scope: str, model_name: str = "the model") -> list[torch.nn.Module]:
    """The batch-norm layers `training.finetune.freeze_bn` freezes (train/phases.py): `encoder`,
    those inside the model's ``encoder_modules()``; `all`, every one outside the discriminator and
    the frozen perceptual backbone / teacher; `none`, none. A scope that finds none is an error."""
    if scope == "none":
        return []
    bn_types = torch.nn.modules.batchnorm._BatchNorm
    if scope == "encoder":
        encoder = getattr(model, "encoder_modules", None)
        if encoder is None:
            raise InpaintBenchError(
                f"{model_name} ({type(model).__name__}) names no encoder (no encoder_modules method), so "
                f"training.finetune.freeze_bn: encoder cannot apply; use all or none")
        found = [m for part in encoder() for m in part.modules() if isinstance(m, bn_types)]
    else:
        skip = {id(m) for name in ("discriminator", "backbone", "teacher")
                if isinstance(getattr(model, name, None), torch.nn.Module) for m in getattr(model, name).modules()}
        found = [m for m in model.modules() if isinstance(m, bn_types) and id(m) not in skip]
    unique = list({id(m): m for m in found}.values())
    if not unique:
        raise InpaintBenchError(f"{model_name}: training.finetune.freeze_bn: {scope} finds no batch-norm layer to "
                                f"freeze; use freeze_bn: none")
    return unique


def build_model(params: Params, experiment: str, train: str, model_name: str, seed: int, device: str):
    spec = params.model(model_name)
    labels_file = paths.prepared_dir(train) / "labels.txt"
    ctx = BuildContext(
        image_size=params.experiment(experiment)["size"], seed=seed,
        perceptual=params.perceptual(experiment),
        artifacts={r: str(paths.artifact(experiment, train, r)) for r in params.requirements(model_name, experiment)},
        num_labels=len(labels_file.read_text().split()) if labels_file.exists() else 0, device=device,
        teacher=params.teacher(experiment))
    torch.manual_seed(seed)
    model = registry.build(spec["arch"], spec.get("args"), spec.get("loss"), ctx)
    ctx_state = {k: v for k, v in ctx.__dict__.items() if k != "device"}
    return model.to(device), ctx_state


# training settings that do not change the weights a run ends with (speed, logging, validation)
NOT_SHAPING = ("num_threads", "num_workers", "threads", "channels_last", "compile", "checkpoint_every",
               "log_every", "val_pairs")


def settings_hash(params: Params, experiment: str, train: str, model_name: str, cfg: dict) -> str:
    """Hash of everything that shapes a training run (the model's arch/args/loss/optimizers, the
    schedule, masks, image size, perceptual backbone, seed): stored in last.pt, and a resume with a
    different hash is refused (issue 15: a stale last.pt silently kept the old learning rate)."""
    return checkpoints.settings_hash({
        "model": params.model_training_spec(model_name),
        "training": {k: v for k, v in cfg.items() if k not in NOT_SHAPING},
        "size": params.experiment(experiment)["size"], "train": train, "seed": params.seed,
        "perceptual": params.raw.get("perceptual", {})})


def train_job(params: Params, experiment: str, train: str, model_name: str, *, stop_after: int | None = None,
              track: bool = True, progress: bool = True, restart: bool = False) -> Path | None:
    """Train one model of one experiment; returns the final checkpoint (None if stopped early).
    `restart`: discard a last.pt left by an earlier run instead of resuming from it."""
    with claim_gpu() if params.device != "cpu" else contextlib.nullcontext():
        return _train(params, experiment, train, model_name, stop_after=stop_after, track=track, progress=progress,
                      restart=restart)


def _train(params, experiment, train, model_name, *, stop_after, track, progress, restart=False) -> Path | None:
    spec = params.model(model_name)
    if not registry.is_learned(spec["arch"]):
        raise InpaintBenchError(f"model {model_name!r} ({spec['arch']}) is not trained")
    cfg = {**DEFAULT_TRAINING, **params.training(model_name, experiment)}
    device = resolve_device(params.device)
    if cfg["num_threads"]:
        torch.set_num_threads(int(cfg["num_threads"]))
    seed = derive_seed(params.seed, "train", experiment, train, model_name)
    out_dir = paths.run_dir(experiment, train, model_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = params.experiment(experiment)["size"]
    model, ctx_state = build_model(params, experiment, train, model_name, seed, device)
    workers = data.default_workers(cfg["num_workers"], cfg["num_threads"])
    channels_last = _enabled(cfg["channels_last"], device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # The frozen training-only networks (perceptual backbone; SAHN/SPL/SPN's teacher) are lazy, so
    # evaluation never needs their weight files: build them here, after the memory-format change
    # (they follow it) and before the data, optimizers and MLflow run are set up, so that a
    # missing weight file stops the job, naming the file, before any of those exist.
    model.load_training_parts()
    if _enabled(cfg["compile"], device):
        model.generator_losses = torch.compile(model.generator_losses)
    images = data.train_images(paths.prepared_manifest(train), size, workers=max(1, workers))
    mask_bank = None if cfg["masks"] == "generated" else data.maskset_bank(cfg["masks"], size, cfg["mask_ratio"], max(1, workers))
    val = load_pairs(paths.pairs_csv(experiment, train, "val"), size, limit=int(cfg["val_pairs"]))
    opt_g = make_optimizer(model.generator_parameters(), cfg["optimizer"])
    disc = model.discriminator
    opt_d = make_optimizer(disc.parameters(), cfg.get("d_optimizer", cfg["optimizer"])) if disc is not None else None
    epochs, spe = int(cfg["epochs"]), int(cfg["steps_per_epoch"])
    total = epochs * spe
    plan = phases.plan(cfg.get("finetune"), total, f"training.finetune of {model_name}")
    frozen_bn = frozen_bn_modules(model, plan["freeze_bn"], model_name) if plan else []
    state = {"step": 0, "history": [], "epochs": [], "mlflow_run_id": None, "seconds": 0.0}
    if plan:
        state["phase"] = 1
    last = out_dir / "last.pt"
    shaping = settings_hash(params, experiment, train, model_name, cfg)
    if last.exists() and restart:
        print(f"--restart: discarding {last}; training {model_name} from step 0")
        last.unlink()
    if last.exists():
        saved = checkpoints.load(last)
        if saved.get("settings_hash") != shaping:
            raise InpaintBenchError(
                f"{last} was written with other training settings than params now give for {model_name} "
                f"(model args, loss, optimizer, schedule, masks, size or seed changed; settings hash "
                f"{saved.get('settings_hash')} vs {shaping}): resuming would mix two runs. Start over with "
                f"`inpaintbench train {experiment} {train} {model_name} --restart` (or delete {last}), or "
                f"restore the old settings to resume.")
        model.load_state_dict(saved["model"])
        opt_g.load_state_dict(saved["opt_g"])
        if opt_d is not None:
            opt_d.load_state_dict(saved["opt_d"])
        state = saved["state"]
        print(f"resuming {model_name} from step {state['step']} ({last})")

    def enter_phase_2():
        """At the phase boundary (or a resume past it): the phase-2 learning rates, and at the
        boundary itself a new optimizer where the official recipe makes one."""
        nonlocal opt_g, opt_d
        d_cfg = cfg.get("d_optimizer", cfg["optimizer"])
        d_lr = plan["d_lr"] if plan["d_lr"] is not None else \
            float(d_cfg.get("lr", 1e-4)) * plan["lr"] / float(cfg["optimizer"].get("lr", 1e-4))
        if plan["reset_optimizer"] and state["step"] == plan["start"]:
            opt_g = make_optimizer(model.generator_parameters(), {**cfg["optimizer"], "lr": plan["lr"]})
            if opt_d is not None:
                opt_d = make_optimizer(disc.parameters(), {**d_cfg, "lr": d_lr})
        for opt, lr in ((opt_g, plan["lr"]), (opt_d, d_lr)):
            for group in opt.param_groups if opt is not None else []:
                group["lr"] = lr
        state["phase"] = 2

    if plan and state["step"] > plan["start"]:
        enter_phase_2()  # the loaded optimizer state is phase 2's already; this sets the same lr again
    run = None
    if track:
        from ..tracking import Run

        flat = {"model": model_name, "arch": spec["arch"], "experiment": experiment, "train_dataset": train,
                "seed": params.seed, "device": device, "image_size": size,
                "trainable_parameters": sum(p.numel() for p in model.generator_parameters()),
                **{f"args.{k}": v for k, v in spec.get("args", {}).items()},
                **{f"training.{k}": v for k, v in cfg.items()},
                "perceptual": params.perceptual(experiment).get("backbone", "random-vgg16")}
        tags = {"experiment": experiment, "train_dataset": train, "model": model_name}
        if plan:
            flat.update({f"finetune.{k}": v for k, v in plan.items()})
            tags["finetune"] = phases.describe(plan, total)
        run = Run(f"inpaintbench/{experiment}", f"{train}/{model_name}", flat, tags,
                  params.raw.get("mlflow"), run_id=state["mlflow_run_id"], run_file=out_dir / "mlflow_run.json")
        state["mlflow_run_id"] = run.run_id
        print(f"MLflow run {run.run_id} ({'continued' if run.resumed else 'new'}), experiment inpaintbench/{experiment}, "
              f"store {run.uri}", flush=True)
    amp = device == "cuda" and cfg["amp"] == "bf16"
    started = time.perf_counter() - state["seconds"]
    current_epoch = None

    def save_state():
        if run:  # metrics first: a kill right after the checkpoint loses none of the steps it holds
            run.flush()
        state["seconds"] = time.perf_counter() - started
        checkpoints.save(last, {"model": model.state_dict(), "opt_g": opt_g.state_dict(),
                                "opt_d": opt_d.state_dict() if opt_d is not None else None, "state": state,
                                "settings_hash": shaping})

    bar = tqdm(total=total, initial=state["step"], desc=f"train {model_name}", disable=not progress, mininterval=2)
    batches = data.StepBatches(images, seed, int(cfg["batch_size"]), cfg["mask_ratio"], mask_bank)
    loader = iter(data.make_loader(batches, state["step"], total, workers, pin_memory=device == "cuda"))
    log_every = int(cfg["log_every"])
    # Losses stay on the device between read-backs (a float() per step is a host-device sync on
    # CUDA): every `log_every` steps on CUDA (every step on CPU, where reading is free), before
    # each validation, checkpoint and stop, the pending steps are read back at once, checked for
    # divergence and the logged ones written to the history.
    read_every = log_every if device == "cuda" else 1
    pending: list[tuple[int, int, dict]] = []

    def read_back():
        if not pending:
            return
        totals = torch.stack([torch.as_tensor(logs["loss"], dtype=torch.float32).to(device) for _, _, logs in pending]).cpu()
        for (at, ep, logs), loss in zip(pending, totals.tolist()):
            if not np.isfinite(loss):
                pending.clear()
                raise InpaintBenchError(f"training {model_name} diverged at step {at - 1} (loss {loss}); lower the learning rate")
            if at % log_every == 0:
                row = {k: float(v) for k, v in logs.items()}
                state["history"].append({"step": at, "epoch": ep, **row})
                if run:
                    run.log_metrics({f"train/{k}": v for k, v in row.items()}, at)
        bar.set_postfix(loss=f"{totals[-1].item():.4f}", refresh=False)
        pending.clear()

    while state["step"] < total:
        step = state["step"]
        epoch = step // spe
        if epoch != current_epoch:
            model.on_epoch_start(epoch, epochs)
            current_epoch = epoch
        if plan and step == plan["start"]:
            enter_phase_2()
            tqdm.write(f"{model_name}: {phases.describe(plan, total)}")
        phase = phases.phase_at(step, plan)
        image, mask = data.to_device(*next(loader), device, channels_last)
        out, d = train_step(model, image, mask, opt_g, opt_d, amp, frozen_bn if phase == 2 else ())
        logs = {"loss": out.total.detach(), **out.logs}
        if plan:
            logs["phase"] = phase
        if d is not None:
            logs.update({"d_loss": d.total.detach(), **{f"d_{k}": v for k, v in d.logs.items()}})
        state["step"] = step + 1
        pending.append((state["step"], epoch + 1, logs))
        if state["step"] % read_every == 0 or state["step"] % spe == 0 or state["step"] % int(cfg["checkpoint_every"]) == 0 \
                or state["step"] == total or (stop_after is not None and state["step"] >= stop_after):
            read_back()
        bar.update(1)
        if state["step"] % spe == 0:
            m = score(model, val, device)
            row = {"epoch": epoch + 1, "step": state["step"],
                   **{f"val_{k}": float(np.mean([r[k] for r in m])) for k in m[0]},
                   "train_loss": float(np.mean([h["loss"] for h in state["history"] if h["epoch"] == epoch + 1] or [np.nan]))}
            if plan:
                row["phase"] = phases.phase_at(step, plan)
            state["epochs"].append(row)
            tqdm.write(f"{model_name} epoch {epoch + 1}/{epochs} (step {state['step']}): validation PSNR {row['val_psnr']:.2f} dB, "
                       f"SSIM {row['val_ssim']:.4f}, L1 {row['val_l1']:.4f}; mean training loss {row['train_loss']:.4f}")
            if run:
                run.log_metrics({**{f"val/{k[4:]}": v for k, v in row.items() if k.startswith("val_")},
                                 "train/epoch_loss": row["train_loss"]}, state["step"])
                run.flush()
        if state["step"] % int(cfg["checkpoint_every"]) == 0 or state["step"] % spe == 0:
            save_state()
        if stop_after is not None and state["step"] >= stop_after and state["step"] < total:
            save_state()
            bar.close()
            if run:
                run.flush()
            return None
    bar.close()
    seconds = time.perf_counter() - started
    final = paths.checkpoint(experiment, train, model_name)
    checkpoints.save(final, {"model": model.state_dict(), "arch": spec["arch"], "args": spec.get("args", {}),
                             "loss": spec.get("loss", {}), "context": ctx_state, "model_name": model_name,
                             "steps": total, **({"finetune": plan} if plan else {})})
    history_keys = sorted({k for h in state["history"] for k in h} - {"step", "epoch"})
    write_csv(out_dir / "history.csv", state["history"], ["step", "epoch", *history_keys])
    write_csv(out_dir / "epochs.csv", state["epochs"], list(state["epochs"][0].keys()) if state["epochs"] else ["epoch"])
    info = {"model": model_name, "arch": spec["arch"], "steps": total, "train_seconds": round(seconds, 2),
            "device": device, "trainable_parameters": sum(p.numel() for p in model.generator_parameters()),
            "mlflow_run_id": state["mlflow_run_id"], "final_val": state["epochs"][-1] if state["epochs"] else None,
            # what the report names per table (report/build.py: substitutes used)
            "perceptual": params.perceptual(experiment), "requires": params.requirements(model_name, experiment),
            "teacher": params.teacher(experiment) if "teacher" in spec.get("requires", []) else None,
            "git_commit": git_commit(),  # the report's "what was run"
            **({"finetune": {**plan, "describe": phases.describe(plan, total)}} if plan else {})}
    write_json(out_dir / "run.json", info)
    if run:
        run.log_checkpoint(final, {"model_name": model_name, "arch": spec["arch"], "args": spec.get("args", {}),
                                   "loss": spec.get("loss", {}), "steps": total, "image_size": size})
        run.log_metrics({"train/seconds": seconds}, total)
        run.finish()
    last.unlink(missing_ok=True)
    print(f"trained {model_name} on {train}: {total} steps in {seconds:.1f} s on {device} -> {final}")
    return final
