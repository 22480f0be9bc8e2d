"""The fine-tune phase (training.finetune, train/phases.py): the official PConv / RFR / CTSDG
recipes' second phase at lr 5e-5 with batch norm frozen. Frozen BN keeps its running statistics
in phase 2 (and updates them in phase 1), its affine weights still train (as every official code
does: all parameters stay in the optimizer), the lr is the phase's, a resume on either side of
the boundary gives the same weights as an uninterrupted run, logs/MLflow/checkpoints name the
phase, bad values are clear errors, and loss still falls with the phase on."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import prepare_tiny, tiny_params, write_params
from inpaintbench import paths
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import registry
from inpaintbench.train import checkpoints, phases, trainer
from inpaintbench.train.trainer import frozen_bn_modules, train_job, train_step

from model_batches import NO_BACKBONE, box_mask, one_thread, photo_batch  # noqa: F401 (autouse fixture)

# tiny run (conftest): 2 epochs x 3 steps = 6 steps, checkpoint every 2, lr 1e-3; phase 2 = steps 4-6
FT = {"steps": 3, "lr": 5.0e-5, "freeze_bn": "encoder"}
CTSDG_TINY = {"arch": "ctsdg", "args": {"base": 4, "depth": 4, "disc_base": 4, "edge_mid": 4},
              "training": {"d_optimizer": {"name": "adam", "lr": 1.0e-4}}}


@pytest.fixture
def prepared(project):
    return prepare_tiny(project, textures=False, test=False)


def _params(finetune, model="pconv", **training):
    p = load_params()
    if model not in p.raw["models"]:
        p.raw["models"][model] = copy.deepcopy(CTSDG_TINY)
    p.raw["models"][model].setdefault("training", {})["finetune"] = finetune
    p.raw["training"].update(training)
    return p


def _bn_stats(bns):
    return [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bns]


def _record(monkeypatch, encoder, other):
    """Wrap the trainer's step: after each step, the lr of both optimizers, the running stats of
    the `encoder(model)` / `other(model)` batch norms, the encoder BN weights and Adam's step count."""
    seen = []
    original = trainer.train_step

    def recording(model, image, mask, opt_g, opt_d=None, amp=False, frozen_bn=()):
        out = original(model, image, mask, opt_g, opt_d, amp, frozen_bn)
        enc, rest = encoder(model), other(model)
        first = next(iter(opt_g.state.values()))
        seen.append({"lr": opt_g.param_groups[0]["lr"], "d_lr": opt_d.param_groups[0]["lr"] if opt_d else None,
                     "enc": _bn_stats(enc), "rest": _bn_stats(rest), "frozen": len(frozen_bn),
                     "enc_weight": [m.weight.detach().clone() for m in enc], "adam_step": int(first["step"])})
        return out

    monkeypatch.setattr(trainer, "train_step", recording)
    return seen


def _changed(a, b):
    return any(not torch.equal(x[0], y[0]) or not torch.equal(x[1], y[1]) for x, y in zip(a, b))


def _bns(modules):
    return [m for part in modules for m in part.modules() if isinstance(m, torch.nn.BatchNorm2d)]


# ---- the plan --------------------------------------------------------------------------------
def test_plan_is_a_pure_function_of_the_step():
    p = phases.plan({"fraction": 0.3, "lr": 5e-5, "freeze_bn": "all"}, 500)    # RFR CelebA: 350k + 150k
    assert p == {"start": 350, "steps": 150, "lr": 5e-5, "d_lr": None, "freeze_bn": "all", "reset_optimizer": False}
    assert [phases.phase_at(s, p) for s in (0, 349, 350, 499)] == [1, 1, 2, 2]
    assert phases.plan({"steps": 2, "lr": 1e-4, "freeze_bn": "none"}, 6)["start"] == 4
    assert phases.plan({"steps": 2, "lr": 1e-4, "enabled": False}, 6) is None and phases.plan(None, 6) is None
    assert phases.phase_at(10 ** 9, None) == 1
    # a fraction stays inside the run; a run of one step (a smoke overlay's) has no second phase
    ft = {"lr": 5e-5, "freeze_bn": "all"}
    assert phases.plan({**ft, "fraction": 0.01}, 6)["steps"] == 1 and phases.plan({**ft, "fraction": 0.99}, 6)["steps"] == 5
    assert phases.plan({**ft, "fraction": 0.5}, 2)["start"] == 1 and phases.plan({**ft, "fraction": 0.5}, 1) is None


@pytest.mark.parametrize("finetune, message", [
    ({"lr": 5e-5, "freeze_bn": "all"}, "exactly one of `steps`.*neither"),
    ({"steps": 2, "fraction": 0.5, "lr": 5e-5, "freeze_bn": "all"}, "exactly one.*both"),
    ({"steps": 6, "lr": 5e-5, "freeze_bn": "all"}, "6 fine-tune steps of the run's 6.*fewer than 6"),
    ({"steps": 0, "lr": 5e-5, "freeze_bn": "all"}, "gives 0 fine-tune steps.*at least 1"),
    ({"fraction": 1.0, "lr": 5e-5, "freeze_bn": "all"}, "0 < fraction < 1"),
    ({"steps": 2, "freeze_bn": "all"}, "`lr` is missing"),
    ({"steps": 2, "lr": 5e-5}, "`freeze_bn` is missing: encoder, all or none"),
    ({"steps": 2, "lr": 5e-5, "freeze_bn": "decoder"}, "freeze_bn: 'decoder' is not one of encoder, all, none"),
])
def test_plan_errors_are_clear(finetune, message):
    with pytest.raises(InpaintBenchError, match=message):
        phases.plan(finetune, 6, "where")


@pytest.mark.parametrize("finetune, message", [
    ({**FT, "freeze": "encoder"}, "freeze"),                               # schema: additionalProperties false
    ({**FT, "lr": -1.0}, "lr"),                                            # schema: lr > 0
    ({**FT, "freeze_bn": "decoder"}, "freeze_bn"),                         # schema: enum
    ({"steps": 3, "lr": 5e-5}, "freeze_bn"),                               # schema: required
    ({**FT, "steps": 9}, "training.finetune of pconv in experiment tiny: steps: 9 gives 9"),  # config: in the run
    ({**FT, "fraction": 0.5}, "exactly one"),
])
def test_params_validation_names_the_bad_value(project, finetune, message):
    raw = tiny_params()
    raw["models"]["pconv"]["training"] = {"finetune": finetune}
    write_params(project, raw)
    with pytest.raises(InpaintBenchError, match=message):
        load_params()


def test_params_yaml_enables_the_official_recipes_for_the_paper_models_only():
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    for name in p.raw["models"]:
        ft = p.raw["models"][name].get("training", {}).get("finetune")
        if not name.endswith("-pub"):
            assert ft is None or ft.get("enabled", True) is False, name   # built-in run: no extra phase
    on = {n: p.raw["models"][n]["training"]["finetune"] for n in ("pconv-pub", "rfr-pub", "ctsdg-pub")}
    assert all(ft["lr"] == 5e-5 for ft in on.values())
    assert on["pconv-pub"]["freeze_bn"] == "encoder" and on["pconv-pub"].get("reset_optimizer", False) is False
    assert on["rfr-pub"]["freeze_bn"] == "all" and on["rfr-pub"]["reset_optimizer"] is True
    assert on["rfr-pub"]["fraction"] == pytest.approx(0.3)        # CelebA 350k + 150k (rfr-pub trains on CelebA)
    assert on["ctsdg-pub"]["freeze_bn"] == "all" and on["ctsdg-pub"]["reset_optimizer"] is True


# ---- which batch norms ----------------------------------------------------------------------
def test_each_model_names_its_encoder_and_all_skips_the_discriminator():
    pconv = registry.build("pconv_unet", {"base": 8, "depth": 4}, {}, NO_BACKBONE)
    enc = frozen_bn_modules(pconv, "encoder")
    assert len(enc) == 3 and all(any(m is b for b in pconv.enc.modules()) for m in enc)   # BN on all but enc.0
    assert len(frozen_bn_modules(pconv, "all")) == 3 + 3 and frozen_bn_modules(pconv, "none") == []
    rfr = registry.build("rfr", {"base": 4, "recurrences": 1}, {}, NO_BACKBONE)
    assert len(frozen_bn_modules(rfr, "encoder")) == 6                                   # official enc_1-enc_6
    assert len(frozen_bn_modules(rfr, "all")) == len([m for m in rfr.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    ctsdg = registry.build("ctsdg", CTSDG_TINY["args"], {}, NO_BACKBONE)
    disc = {id(m) for m in ctsdg.discriminator.modules()}
    every = frozen_bn_modules(ctsdg, "all")
    assert every and not any(id(m) in disc for m in every)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ctsdg.discriminator.modules())
    assert len(frozen_bn_modules(ctsdg, "encoder")) == 2 * 3                             # ec_*_2..4 have BN
    with pytest.raises(InpaintBenchError, match="names no encoder.*use all or none"):
        frozen_bn_modules(registry.build("lama_fourier", {}, {}, NO_BACKBONE), "encoder")


def test_train_step_freezes_running_stats_but_trains_the_affine_weights():
    model = registry.build("ctsdg", CTSDG_TINY["args"], {}, NO_BACKBONE)
    image, mask = photo_batch(32, 2), box_mask(32, 2)
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=1e-4)
    frozen = frozen_bn_modules(model, "all")
    disc_bn = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats, d_stats = _bn_stats(frozen), _bn_stats(disc_bn)
    weights = [m.weight.detach().clone() for m in frozen]
    train_step(model, image, mask, opt_g, opt_d, frozen_bn=frozen)
    assert not _changed(stats, _bn_stats(frozen)) and all(not m.training for m in frozen)
    assert _changed(d_stats, _bn_stats(disc_bn))                       # the discriminator's BN still learns
    assert all(not torch.equal(w, m.weight) for w, m in zip(weights, frozen))
    train_step(model, image, mask, opt_g, opt_d)                       # phase 1: stats move again
    assert _changed(stats, _bn_stats(frozen)) and all(m.training for m in frozen)


# ---- the trainer -----------------------------------------------------------------------------
def test_phase_two_freezes_encoder_bn_sets_lr_and_keeps_adam(prepared, monkeypatch):
    seen = _record(monkeypatch, lambda m: _bns(m.encoder_modules()), lambda m: _bns(m.dec))
    train_job(_params(FT), "tiny", "photos", "pconv", track=False, progress=False)
    assert [s["lr"] for s in seen] == [1e-3] * 3 + [5e-5] * 3
    assert [s["frozen"] for s in seen] == [0, 0, 0, 2, 2, 2]
    for a, b in zip(seen[:2], seen[1:3]):          # phase 1 (steps 2, 3): encoder BN statistics move
        assert _changed(a["enc"], b["enc"]) and a["enc"][0][2] < b["enc"][0][2]
    for a, b in zip(seen[2:], seen[3:]):           # phase 2 (steps 4-6): encoder BN statistics fixed, decoder's move
        assert not _changed(a["enc"], b["enc"]) and [x[2] for x in a["enc"]] == [x[2] for x in b["enc"]]
        assert _changed(a["rest"], b["rest"])
        assert all(not torch.equal(x, y) for x, y in zip(a["enc_weight"], b["enc_weight"]))  # affine trains
    assert [s["adam_step"] for s in seen] == [1, 2, 3, 4, 5, 6]    # naoto0804: the Adam state carries on
    hist = pd.read_csv(paths.run_dir("tiny", "photos", "pconv") / "history.csv")
    assert list(hist["phase"]) == [1, 1, 1, 2, 2, 2]
    final = checkpoints.load(paths.checkpoint("tiny", "photos", "pconv"))
    assert final["finetune"] == {"start": 3, "steps": 3, "lr": 5e-5, "d_lr": None, "freeze_bn": "encoder",
                                 "reset_optimizer": False}


def test_reset_optimizer_and_the_discriminator_lr(prepared, monkeypatch):
    def gen_bn(m):
        return frozen_bn_modules(m, "all")

    seen = _record(monkeypatch, gen_bn, lambda m: _bns([m.discriminator]))
    ft = {"steps": 3, "lr": 2.5e-4, "freeze_bn": "all", "reset_optimizer": True}
    train_job(_params(ft, "ctsdg"), "tiny", "photos", "ctsdg", track=False, progress=False)
    assert [s["lr"] for s in seen] == [1e-3] * 3 + [2.5e-4] * 3
    assert [s["d_lr"] for s in seen] == [1e-4] * 3 + [pytest.approx(2.5e-5)] * 3   # D keeps 0.1 x G (CTSDG)
    assert [s["adam_step"] for s in seen] == [1, 2, 3, 1, 2, 3]                     # RFR / CTSDG: a new Adam
    for a, b in zip(seen[2:], seen[3:]):
        assert not _changed(a["enc"], b["enc"]) and _changed(a["rest"], b["rest"])
    assert _changed(seen[0]["enc"], seen[1]["enc"])


@pytest.mark.parametrize("reset", [False, True])
def test_resume_across_the_boundary_is_bit_identical(prepared, reset):
    ft = {**FT, "reset_optimizer": reset}
    full = train_job(_params(ft), "tiny", "photos", "pconv", track=False, progress=False)
    reference = {k: v.clone() for k, v in checkpoints.load(full)["model"].items()}
    run_dir = paths.run_dir("tiny", "photos", "pconv")
    ref_hist = pd.read_csv(run_dir / "history.csv")
    last = run_dir / "last.pt"
    # killed before the boundary (step 2), at it (step 3: phase 2 not entered yet), inside phase 2 (step 4)
    for stop, phase in ((2, 1), (3, 1), (4, 2)):
        full.unlink()
        assert train_job(_params(ft), "tiny", "photos", "pconv", stop_after=stop, track=False, progress=False) is None
        saved = checkpoints.load(last)
        assert saved["state"]["step"] == stop and saved["state"]["phase"] == phase
        if phase == 2:
            assert saved["opt_g"]["param_groups"][0]["lr"] == 5e-5
        again = checkpoints.load(train_job(_params(ft), "tiny", "photos", "pconv", track=False, progress=False))["model"]
        assert reference.keys() == again.keys()
        for k in reference:
            assert torch.equal(reference[k], again[k]), (stop, k)
        pd.testing.assert_frame_equal(pd.read_csv(run_dir / "history.csv"), ref_hist)
        assert not last.exists()


def test_changing_the_finetune_block_refuses_the_resume(prepared):
    assert train_job(_params(FT), "tiny", "photos", "pconv", stop_after=2, track=False, progress=False) is None
    with pytest.raises(InpaintBenchError, match="other training settings"):
        train_job(_params({**FT, "lr": 1e-4}), "tiny", "photos", "pconv", track=False, progress=False)


def test_mlflow_names_the_phase(prepared):
    from mlflow.tracking import MlflowClient

    raw = yaml.safe_load((prepared / "params.yaml").read_text())
    raw["models"]["pconv"]["training"] = {"finetune": FT}
    (prepared / "params.yaml").write_text(yaml.safe_dump(raw))
    train_job(load_params(), "tiny", "photos", "pconv", progress=False)
    info = json.loads((paths.run_dir("tiny", "photos", "pconv") / "run.json").read_text())
    assert info["finetune"]["start"] == 3 and "phase 2 (fine-tune): steps 4-6 of 6" in info["finetune"]["describe"]
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    run = client.get_run(info["mlflow_run_id"])
    assert run.data.params["finetune.start"] == "3" and run.data.params["finetune.lr"] == "5e-05"
    assert run.data.params["finetune.freeze_bn"] == "encoder"
    assert run.data.tags["finetune"] == "phase 2 (fine-tune): steps 4-6 of 6, lr 5e-05, batch norm frozen: encoder"
    phase = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/phase"))
    assert phase == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    epochs = pd.read_csv(paths.run_dir("tiny", "photos", "pconv") / "epochs.csv")
    assert list(epochs["phase"]) == [1, 2]


def test_training_loss_still_falls_with_the_phase_on(prepared):
    # test_trainer.test_training_loss_falls with the last quarter fine-tuned at a quarter of the lr
    # (the official 2e-4 -> 5e-5) and the encoder BN frozen
    p = _params({"fraction": 0.25, "lr": 5e-4, "freeze_bn": "encoder"}, epochs=1, steps_per_epoch=40, batch_size=4)
    p.raw["training"]["optimizer"]["lr"] = 2e-3
    train_job(p, "tiny", "photos", "pconv", track=False, progress=False)
    hist = pd.read_csv(paths.run_dir("tiny", "photos", "pconv") / "history.csv")
    assert list(hist["phase"]) == [1] * 30 + [2] * 10
    first, last = hist["loss"].iloc[:8].mean(), hist["loss"].iloc[-8:].mean()
    assert last < 0.8 * first, (first, last)
