"""The trainer: resume after a kill gives the same weights; losses fall; MLflow runs are complete."""
import hashlib
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from inpaintbench import paths
from inpaintbench.config import load_params
from inpaintbench.train import checkpoints
from inpaintbench.train.trainer import train_job

from conftest import prepare_tiny


@pytest.fixture
def prepared(project):
    return prepare_tiny(project)


def _weights(path):
    return checkpoints.load(path)["model"]


def test_resume_after_kill_gives_the_same_weights(prepared):
    params = load_params()
    full = train_job(params, "tiny", "photos", "pconv", track=False, progress=False)
    reference = {k: v.clone() for k, v in _weights(full).items()}
    full.unlink()
    # "kill" after 4 of 6 steps (mid-epoch 2, after a checkpoint at step 4), then start again
    assert train_job(params, "tiny", "photos", "pconv", stop_after=4, track=False, progress=False) is None
    last = paths.run_dir("tiny", "photos", "pconv") / "last.pt"
    assert last.exists() and checkpoints.load(last)["state"]["step"] == 4
    resumed = train_job(params, "tiny", "photos", "pconv", track=False, progress=False)
    again = _weights(resumed)
    assert reference.keys() == again.keys()
    for k in reference:
        assert torch.equal(reference[k], again[k]), k
    assert not last.exists()
    hist = pd.read_csv(paths.run_dir("tiny", "photos", "pconv") / "history.csv")
    assert list(hist["step"]) == list(range(1, 7))


def test_training_loss_falls(prepared):
    p = load_params()
    p.raw["training"].update(epochs=1, steps_per_epoch=40, batch_size=4)
    p.raw["training"]["optimizer"]["lr"] = 2e-3
    train_job(p, "tiny", "photos", "pconv", track=False, progress=False)
    hist = pd.read_csv(paths.run_dir("tiny", "photos", "pconv") / "history.csv")
    first, last = hist["loss"].iloc[:8].mean(), hist["loss"].iloc[-8:].mean()
    assert last < 0.8 * first, (first, last)


def test_mlflow_run_has_params_metrics_tags_and_checkpoint(prepared):
    from mlflow.tracking import MlflowClient

    train_job(load_params(), "tiny", "photos", "pconv", progress=False)
    info = json.loads((paths.run_dir("tiny", "photos", "pconv") / "run.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    run = client.get_run(info["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "pconv" and run.data.params["training.batch_size"] == "4"
    tags = run.data.tags
    assert len(tags["mlflow.source.git.commit"]) in (40, 7) or tags["mlflow.source.git.commit"] == "unknown"
    assert "version.torch" in tags and tags["job"] == "inpaintbench/tiny/photos/pconv"
    assert run.info.run_name == "photos/pconv" and "retrain" not in tags
    # MLflow 3: the experiment opens as model training, not in the GenAI view
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    keys = set(run.data.metrics)
    assert {"train/loss", "val/psnr", "val/ssim", "val/l1", "train/epoch_loss", "train/seconds"} <= keys, keys
    assert all(k.startswith(("train/", "val/")) for k in keys), keys
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 6  # every step
    assert len(client.get_metric_history(run.info.run_id, "val/psnr")) == 2  # every epoch
    # a local store logs the checkpoint by reference (one copy on disk, in runs/), with its settings
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["checkpoint.json"]
    ref = json.loads(open(client.download_artifacts(run.info.run_id, "checkpoint.json")).read())
    assert ref["path"] == "runs/tiny/photos/pconv/model.pt" and ref["arch"] == "pconv_unet" and ref["args"]["base"] == 8
    assert ref["sha256"] == hashlib.sha256((prepared / ref["path"]).read_bytes()).hexdigest()
    assert not (paths.run_dir("tiny", "photos", "pconv") / "mlflow_run.json").exists()
    # retraining the same job: a second, uniquely named run tagged as a retrain of the first
    train_job(load_params(), "tiny", "photos", "pconv", progress=False)
    again = json.loads((paths.run_dir("tiny", "photos", "pconv") / "run.json").read_text())["mlflow_run_id"]
    second = client.get_run(again)
    assert again != run.info.run_id and second.info.run_name == "photos/pconv (retrain 1)"
    assert second.data.tags["retrain"] == "1" and second.data.tags["retrain_of"] == run.info.run_id


PARALLEL = """
import sys
from inpaintbench.tracking import Run
r = Run("parallel", f"job{sys.argv[1]}", {"i": sys.argv[1]}, {})
for step in range(30):
    r.log_metrics({"loss": 1.0 / (step + 1)}, step)
    if step % 5 == 4:
        r.flush()
r.finish()
print(r.run_id)
"""


def test_parallel_jobs_do_not_lose_or_corrupt_runs(project):
    procs = [subprocess.Popen([sys.executable, "-c", PARALLEL, str(i)], stdout=subprocess.PIPE, text=True) for i in range(4)]
    ids = [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    for run_id in ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run_id, "loss")) == 30
    exp = client.get_experiment_by_name("parallel")
    assert len(client.search_runs([exp.experiment_id])) == 4
