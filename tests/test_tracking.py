"""MLflow tracking under kills, evaluation results on the training run, the store's location."""
import json
import os
import signal
import subprocess
import sys

import pytest

from inpaintbench import paths, tracking
from inpaintbench.cli import main
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.train import checkpoints
from inpaintbench.train.trainer import train_job

from conftest import prepare_tiny


@pytest.fixture
def prepared(project):
    return prepare_tiny(project)


def _client(folder):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def _runs(client):
    exp = client.get_experiment_by_name("inpaintbench/tiny")
    return client.search_runs([exp.experiment_id]) if exp else []


def test_metrics_are_flushed_before_each_checkpoint(prepared, monkeypatch):
    # tiny: 2 epochs x 3 steps, checkpoint every 2 steps -> last.pt at steps 2, 3, 4, 6. At each
    # save, every step the checkpoint holds must already be in the store (a kill right after the
    # save would otherwise lose the steps since the last flush).
    client, seen, real_save = _client(prepared), [], checkpoints.save

    def save(path, state):
        if str(path).endswith("last.pt"):
            run_id = state["state"]["mlflow_run_id"]
            logged = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
            seen.append((state["state"]["step"], logged))
        real_save(path, state)

    monkeypatch.setattr(checkpoints, "save", save)
    train_job(load_params(), "tiny", "photos", "pconv", progress=False)
    assert [s for s, _ in seen] == [2, 3, 4, 6]
    for step, logged in seen:
        assert logged == list(range(1, step + 1)), (step, logged)


KILLED_AT_FIRST_CHECKPOINT = """
import os, signal
from inpaintbench.config import load_params
from inpaintbench.train import checkpoints
from inpaintbench.train.trainer import train_job
checkpoints.save = lambda path, state: os.kill(os.getpid(), signal.SIGKILL)  # kill -9 as the first checkpoint is written
train_job(load_params(), "tiny", "photos", "pconv", progress=False)
"""


def test_kill_before_the_first_checkpoint_resumes_the_same_run(prepared):
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_FIRST_CHECKPOINT], cwd=prepared, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_dir = paths.run_dir("tiny", "photos", "pconv")
    assert not (run_dir / "last.pt").exists()
    client = _client(prepared)
    (orphan,) = _runs(client)
    assert orphan.info.status == "RUNNING"
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == orphan.info.run_id
    train_job(load_params(), "tiny", "photos", "pconv", progress=False)  # started again: from step 0
    (run,) = _runs(client)  # no second run
    assert run.info.run_id == orphan.info.run_id and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted({m.step for m in history}) == list(range(1, 7))
    # the steps logged before the kill were logged again with the same values (deterministic on CPU)
    by_step: dict[int, set] = {}
    for m in history:
        by_step.setdefault(m.step, set()).add(round(m.value, 6))
    assert all(len(v) == 1 for v in by_step.values()), by_step
    assert not (run_dir / "mlflow_run.json").exists()


def test_unfinished_run_of_other_settings_is_closed_not_continued(prepared):
    params = load_params()
    assert train_job(params, "tiny", "photos", "pconv", stop_after=2, progress=False) is None
    (paths.run_dir("tiny", "photos", "pconv") / "last.pt").unlink()  # as if killed before that checkpoint
    params.raw["training"]["optimizer"]["lr"] = 5e-4
    train_job(params, "tiny", "photos", "pconv", progress=False)
    runs = sorted(_runs(_client(prepared)), key=lambda r: r.info.start_time)
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"]
    assert runs[1].data.params["training.optimizer"] != runs[0].data.params["training.optimizer"]


def test_training_prints_validation_psnr_and_run_id(prepared, capsys):
    train_job(load_params(), "tiny", "photos", "pconv", progress=False)
    out = capsys.readouterr().out
    run_id = json.loads((paths.run_dir("tiny", "photos", "pconv") / "run.json").read_text())["mlflow_run_id"]
    assert f"MLflow run {run_id}" in out
    assert out.count("validation PSNR") == 2 and "epoch 2/2" in out, out


def test_evaluation_logs_per_bucket_test_metrics_to_the_training_run(prepared):
    assert main(["train", "tiny", "photos", "pconv"]) == 0
    assert main(["evaluate", "tiny", "photos", "pconv"]) == 0
    run_id = json.loads((paths.run_dir("tiny", "photos", "pconv") / "run.json").read_text())["mlflow_run_id"]
    metrics = _client(prepared).get_run(run_id).data.metrics
    import pandas as pd

    per_image = pd.read_csv(paths.metrics_csv("tiny", "photos", "pconv"))
    for ds in ("photos", "textures"):
        sub = per_image[per_image["dataset"] == ds]
        for bucket, key in (("(0.1, 0.3]", "0.1-0.3"), ("(0.3, 0.5]", "0.3-0.5")):
            expect = sub.loc[sub["bucket"] == bucket, "psnr"].mean()
            assert metrics[f"test/{ds}/{key}/psnr"] == pytest.approx(expect, rel=1e-9)
        assert metrics[f"test/{ds}/all/l1"] == pytest.approx(sub["l1"].mean(), rel=1e-9)
    # a model without a training run (biharmonic) evaluates without touching MLflow
    assert main(["evaluate", "tiny", "photos", "biharmonic"]) == 0


def test_workflow_logs_test_metrics_in_the_aggregate_step(prepared, capsys):
    """The workflow's evaluate jobs run with --no-mlflow (evaluate.smk); `aggregate` then adds
    every trained model's test metrics to its training run, the same values `evaluate` logs."""
    assert main(["train", "tiny", "photos", "pconv"]) == 0
    for m in ("copy-input", "biharmonic", "pconv"):
        assert main(["evaluate", "tiny", "photos", m, "--no-mlflow"]) == 0
    run_id = json.loads((paths.run_dir("tiny", "photos", "pconv") / "run.json").read_text())["mlflow_run_id"]
    assert not [k for k in _client(prepared).get_run(run_id).data.metrics if k.startswith("test/")]
    capsys.readouterr()
    assert main(["aggregate", "tiny"]) == 0
    assert f"test metrics of pconv (photos) -> MLflow run {run_id}" in capsys.readouterr().out
    metrics = _client(prepared).get_run(run_id).data.metrics
    import pandas as pd

    per_image = pd.read_csv(paths.metrics_csv("tiny", "photos", "pconv"))
    for ds in ("photos", "textures"):
        sub = per_image[per_image["dataset"] == ds]
        expect = sub.loc[sub["bucket"] == "(0.3, 0.5]", "psnr"].mean()
        assert metrics[f"test/{ds}/0.3-0.5/psnr"] == pytest.approx(expect, rel=1e-9)
        assert metrics[f"test/{ds}/all/ssim"] == pytest.approx(sub["ssim"].mean(), rel=1e-9)
    # --no-mlflow on aggregate: nothing more is logged
    n = len(_client(prepared).get_metric_history(run_id, "test/photos/all/psnr"))
    assert main(["aggregate", "tiny", "--no-mlflow"]) == 0
    assert len(_client(prepared).get_metric_history(run_id, "test/photos/all/psnr")) == n


def test_evaluate_rule_leaves_mlflow_to_aggregate():
    from conftest import ROOT

    text = (ROOT / "workflow" / "rules" / "evaluate.smk").read_text()
    evaluate = text[text.index("rule evaluate:"):text.index("rule aggregate:")]
    aggregate = text[text.index("rule aggregate:"):text.index("rule evaluate_all:")]
    assert "--no-mlflow" in evaluate and "--no-mlflow" not in aggregate


def test_metric_keys_are_valid_mlflow_names():
    assert tracking.metric_key("test", "photos", "(0.1, 0.2]", "psnr") == "test/photos/0.1-0.2/psnr"
    assert tracking.metric_key("test", "p", "all", "ssim") == "test/p/all/ssim"
    assert tracking.metric_key("test", "p", "[0.5, 0.6)", "l1") == "test/p/0.5-0.6/l1"


def test_copied_store_with_artifacts_outside_the_project_is_refused(tmp_path):
    project = tmp_path / "clone"
    project.mkdir()
    tracking.check_artifact_location(str(project / "mlruns" / "1"), "e", tracking.DEFAULT_URI, root=project)
    tracking.check_artifact_location("mlruns/1", "e", tracking.DEFAULT_URI, root=project)
    with pytest.raises(InpaintBenchError, match="outside this project"):
        tracking.check_artifact_location(f"file://{tmp_path / 'original' / 'mlruns' / '1'}", "e", tracking.DEFAULT_URI,
                                         root=project)
    # a store the user chose explicitly, or a server's artifact store, is theirs
    tracking.check_artifact_location(str(tmp_path / "shared" / "mlruns"), "e", "sqlite:////shared/mlflow.db", root=project)
    tracking.check_artifact_location("mlflow-artifacts:/1", "e", tracking.DEFAULT_URI, root=project)


def test_moved_clone_refuses_the_old_store(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(a)
    tracking.Run("moved", "job", {"x": 1}, {}).finish()
    a.rename(b)
    monkeypatch.chdir(b)
    with pytest.raises(InpaintBenchError, match="copied or moved from another clone"):
        tracking.Run("moved", "job", {"x": 1}, {})


def test_evaluation_of_a_run_from_another_store_still_evaluates(prepared):
    assert main(["train", "tiny", "photos", "pconv", "--no-mlflow"]) == 0
    info = paths.run_dir("tiny", "photos", "pconv") / "run.json"
    data = json.loads(info.read_text())
    info.write_text(json.dumps({**data, "mlflow_run_id": "0123456789abcdef0123456789abcdef"}))
    _client(prepared)  # the store exists, the run does not
    tracking.Run("other", "job", {}, {}).finish()
    assert main(["evaluate", "tiny", "photos", "pconv"]) == 0
