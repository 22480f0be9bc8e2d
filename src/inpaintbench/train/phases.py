"""The second training phase: fine-tuning with a lower learning rate and batch norm frozen
(params ``training.finetune``; pure Python, so params validation can check it without torch).

The phase covers the run's last ``steps`` steps (an error unless 1 <= steps < total), or
``round(fraction * total)`` kept within 1 .. total - 1 (a run of one step, e.g. a smoke-test
overlay's, has no second phase); it starts at the global step ``start = total - n`` and is a pure
function of the global step, so a run resumed on either side of the boundary takes the same steps
as an uninterrupted one. From ``start`` on the
generator optimizer runs at ``lr`` (the discriminator's at ``d_lr``, default its own lr scaled by
``lr / generator lr``), the batch-norm layers chosen by ``freeze_bn`` are put in eval mode after
every ``model.train()`` (normalise with their running statistics, which no longer change; their
affine weight and bias keep training, as in every official code below), and with
``reset_optimizer`` a new Adam replaces the phase-1 one (its moments start from zero).

``freeze_bn``: ``encoder`` - the batch norms inside the modules the model names in its
``encoder_modules()``; ``all`` - every batch norm of the generator (not the discriminator's, not
the frozen perceptual backbone's or teacher's); ``none``.

Where each official recipe comes from (read from the official repositories at
naoto0804/pytorch-inpainting-with-partial-conv@8d64e7e, jingyuanli001/RFR-Inpainting@e1cad6a,
Xiefan-Guo/CTSDG@def0274; NVIDIA/partialconv holds only the classification code):

* PConv, Liu et al. 2018 (Sec. 5, training procedure): lr 2e-4, then fine-tune at 5e-5 with
  the batch norm of the encoder frozen (kept on in the decoder). naoto0804/pytorch-inpainting-with-partial-conv
  (train.py ``--finetune``, net.py ``PConvUNet.train``): BatchNorm2d modules whose name contains
  ``enc`` go to eval mode after every ``model.train()``; the Adam state is loaded from the
  checkpoint and only its lr set to 5e-5 (``reset_optimizer: false``); every parameter stays
  in the optimizer (``filter(requires_grad)``), so the BN affine weights still train. Its README:
  500,000 iterations, then 500,000 fine-tuning.
* RFR, jingyuanli001/RFR-Inpainting (model.py ``train(finetune=True)``, modules/RFRNet.py
  ``RFRNet.train``): *every* BatchNorm2d of the generator to eval mode (not only an encoder's),
  a new ``Adam(lr=5e-5)`` over all parameters (``reset_optimizer: true``; its
  ``initialize_model`` also rebuilds the optimizer after loading). README "How long to train"
  (batch 6): Paris StreetView 400k + 200k, CelebA 350k + 150k, Places2 2M + 1M iterations.
* CTSDG, Xiefan-Guo/CTSDG (train.py ``--finetune``, options ``lr_finetune`` 5e-5, ``D2G_lr``
  0.1, models/generator/generator.py ``Generator.train``): ``freeze_ec_bn`` puts *every*
  BatchNorm2d of the generator in eval mode (despite "ec" in its name); new Adam optimizers at
  5e-5 (generator) and 5e-6 (discriminator, 0.1x); the README says "analogous to PConv" and
  gives no iteration split (``train_iter`` 300,000 in all). Note: the official train.py never
  calls ``generator.train()`` after setting the flag, so as released its freeze never takes
  effect; we follow what the flag is written to do.
"""
from __future__ import annotations

import math

from ..errors import InpaintBenchError

FREEZE_BN = ("encoder", "all", "none")
KEYS = ("enabled", "steps", "fraction", "lr", "d_lr", "freeze_bn", "reset_optimizer")


def plan(finetune: dict | None, total: int, where: str = "training.finetune") -> dict | None:
    """The phase-2 plan of a run of `total` steps, or None when there is none.
    Returns {start, steps, lr, d_lr, freeze_bn, reset_optimizer}; `start` is the 0-based global
    step the phase begins with. Bad values are an InpaintBenchError naming `where`."""
    if not finetune or not finetune.get("enabled", True):
        return None
    unknown = sorted(set(finetune) - set(KEYS))
    if unknown:
        raise InpaintBenchError(f"{where}: unknown key(s) {unknown}; known: {', '.join(KEYS)}")
    has_steps, has_fraction = "steps" in finetune, "fraction" in finetune
    if has_steps == has_fraction:
        raise InpaintBenchError(f"{where}: give exactly one of `steps` (the run's last N steps) or `fraction` "
                                f"(that share of the run), got {'both' if has_steps else 'neither'}")
    if has_steps:
        n, what = int(finetune["steps"]), f"steps: {finetune['steps']}"
    else:
        fraction = float(finetune["fraction"])
        if not 0 < fraction < 1:
            raise InpaintBenchError(f"{where}.fraction: needs 0 < fraction < 1, got {fraction}")
        if total < 2:
            return None  # no room for two phases (a shrunk schedule): train as phase 1 only
        n, what = min(max(int(math.floor(fraction * total + 0.5)), 1), total - 1), f"fraction: {fraction}"
    if not 1 <= n < total:
        raise InpaintBenchError(
            f"{where}: {what} gives {n} fine-tune steps of the run's {total} (epochs x steps_per_epoch); it needs "
            f"at least 1 and fewer than {total} (phase 1 keeps at least one step)")
    if "lr" not in finetune:
        raise InpaintBenchError(f"{where}: `lr` is missing (the official recipes fine-tune at 5.0e-5)")
    lr = float(finetune["lr"])
    d_lr = finetune.get("d_lr")
    for key, value in (("lr", lr), ("d_lr", d_lr)):
        if value is not None and not (float(value) > 0 and math.isfinite(float(value))):
            raise InpaintBenchError(f"{where}.{key}: needs a positive learning rate, got {value}")
    if "freeze_bn" not in finetune:
        raise InpaintBenchError(f"{where}: `freeze_bn` is missing: encoder, all or none")
    freeze = finetune["freeze_bn"]
    if freeze not in FREEZE_BN:
        raise InpaintBenchError(f"{where}.freeze_bn: {freeze!r} is not one of {', '.join(FREEZE_BN)}")
    return {"start": total - n, "steps": n, "lr": lr, "d_lr": None if d_lr is None else float(d_lr),
            "freeze_bn": freeze, "reset_optimizer": bool(finetune.get("reset_optimizer", False))}


def phase_at(step: int, finetune_plan: dict | None) -> int:
    """1 or 2: the phase of the 0-based global step `step`."""
    return 2 if finetune_plan is not None and step >= finetune_plan["start"] else 1


def describe(finetune_plan: dict, total: int) -> str:
    p = finetune_plan
    return (f"phase 2 (fine-tune): steps {p['start'] + 1}-{total} of {total}, lr {p['lr']:g}"
            + (f", discriminator lr {p['d_lr']:g}" if p["d_lr"] is not None else "")
            + f", batch norm frozen: {p['freeze_bn']}" + (", new optimizer" if p["reset_optimizer"] else ""))
