"""Faults, class "resume" (issue 15): a last.pt written under other training settings is never
resumed silently (it kept the old optimizer state, e.g. the old learning rate) nor with a
RuntimeError (after an args change); `--restart` starts over. Settings that do not shape the
weights (logging, threads, validation size) still resume."""
from __future__ import annotations

import pytest
import torch

from inpaintbench import paths
from inpaintbench.cli import main
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.train import checkpoints
from inpaintbench.train.trainer import train_job

from conftest import prepare_tiny


@pytest.fixture
def prepared(project):
    return prepare_tiny(project, textures=False, test=False)


def _stopped(params):
    assert train_job(params, "tiny", "photos", "pconv", stop_after=2, track=False, progress=False) is None
    last = paths.run_dir("tiny", "photos", "pconv") / "last.pt"
    assert checkpoints.load(last)["state"]["step"] == 2 and "settings_hash" in checkpoints.load(last)
    return last


def test_resume_after_a_learning_rate_change_is_refused(prepared):
    last = _stopped(load_params())
    p = load_params()
    p.raw["training"]["optimizer"]["lr"] = 5e-4
    with pytest.raises(InpaintBenchError, match=r"other training settings.*--restart"):
        train_job(p, "tiny", "photos", "pconv", track=False, progress=False)
    assert last.exists()  # nothing is thrown away without being asked


def test_resume_after_an_args_change_is_a_clear_error_not_a_runtime_error(prepared):
    _stopped(load_params())
    p = load_params()
    p.raw["models"]["pconv"]["args"]["base"] = 4
    with pytest.raises(InpaintBenchError, match="other training settings"):
        train_job(p, "tiny", "photos", "pconv", track=False, progress=False)


def test_restart_starts_over_with_the_new_settings(prepared, capsys):
    import yaml

    _stopped(load_params())
    raw = yaml.safe_load((prepared / "params.yaml").read_text())
    raw["training"]["optimizer"]["lr"] = 5e-4
    (prepared / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", "tiny", "photos", "pconv", "--no-mlflow"]) == 2
    assert "--restart" in capsys.readouterr().err
    assert main(["train", "tiny", "photos", "pconv", "--restart", "--no-mlflow"]) == 0
    final = paths.checkpoint("tiny", "photos", "pconv")
    restarted = {k: v.clone() for k, v in checkpoints.load(final)["model"].items()}
    # a restart is a fresh run: the same weights as an uninterrupted run with the new settings
    final.unlink()
    train_job(load_params(), "tiny", "photos", "pconv", track=False, progress=False)
    fresh = checkpoints.load(final)["model"]
    assert all(torch.equal(restarted[k], fresh[k]) for k in fresh)


def test_settings_that_do_not_shape_the_weights_still_resume(prepared):
    _stopped(load_params())
    p = load_params()
    p.raw["training"].update(log_every=2, val_pairs=2, num_threads=1)
    assert train_job(p, "tiny", "photos", "pconv", track=False, progress=False) is not None
