"""Shared stores on loopback: a DVC remote on an S3-compatible server (moto) and an MLflow
tracking server (SQLite backend, served artifacts).

One clone runs the pipeline (`dvc repro`, its training jobs logging to the MLflow server from two
processes at once), commits dvc.lock and `dvc push`es; a second `git clone` + `dvc pull` gets the
checkpoints and results without retraining: after the documented post-pull step
(`snakemake --cores 1 --touch --forceall`) both `dvc repro --dry` and `snakemake -n` have nothing
to do, while a changed parameter is still seen as a reason to retrain. Servers are stopped at the
end; only 127.0.0.1 is used; every wait is bounded.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, copy_workflow, tiny_params, write_params, python_env

BIN = Path(sys.executable).parent
LEARNED = ["pconv", "pconv-narrow"]
MODELS = LEARNED
EXTRA = {"pconv-narrow": {"arch": "pconv_unet", "args": {"base": 4, "depth": 3}}}
BUCKET = "inpaintbench-shared"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]





def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(cmd: list[str], probe_url: str, log_path: Path, env: dict, limit: float = 90.0):
    """Start a server in its own process group, wait (bounded) until it answers, stop it after."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + limit
        while True:
            try:
                urllib.request.urlopen(probe_url, timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{cmd[0]} did not come up on {probe_url}:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("servers")
    env = python_env({**os.environ, **AWS, "MLFLOW_DISABLE_TELEMETRY": "true"})
    s3_port, ml_port = _free_port(), _free_port()
    s3_url, ml_url = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{ml_port}"
    with _server([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], s3_url + "/",
                 root / "moto.log", env), \
         _server([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(ml_port), "--workers", "1",
                  "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                  "--artifacts-destination", str(root / "mlartifacts")], ml_url + "/health",
                 root / "mlflow.log", env):
        import boto3

        boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        yield {"s3": s3_url, "mlflow": ml_url, "root": root}


def _env(servers) -> dict:
    return python_env({**os.environ, **AWS, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
                        "MLFLOW_TRACKING_URI": servers["mlflow"], "MLFLOW_DISABLE_TELEMETRY": "true"})


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 600) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def clones(servers, tmp_path_factory):
    env = _env(servers)
    base = tmp_path_factory.mktemp("clones")
    a, b = base / "a", base / "b"
    a.mkdir()
    copy_workflow(a)
    write_params(a, tiny_params(models=MODELS, extra_models=EXTRA))
    (a / ".gitignore").write_text(".snakemake/\nlogs/\nmlflow.db*\n.gpu-slots/\n__pycache__/\n")
    dvc = str(BIN / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"],
                [dvc, "remote", "add", "-d", "shared", f"s3://{BUCKET}/dvcstore"],
                [dvc, "remote", "modify", "shared", "endpointurl", servers["s3"]],
                [dvc, "remote", "modify", "shared", "region", "us-east-1"]):
        _run(cmd, a, env)
    _run([*GIT, "add", "-A"], a, env)
    _run([*GIT, "commit", "-q", "-m", "pipeline"], a, env)
    _run([dvc, "repro"], a, env, timeout=900)
    _run([*GIT, "add", "-A"], a, env)
    _run([*GIT, "commit", "-q", "-m", "results"], a, env)
    _run([dvc, "push"], a, env)

    _run(["git", "clone", "-q", str(a), str(b)], base, env)
    _run([dvc, "pull"], b, env)
    _run([str(BIN / "snakemake"), "--cores", "1", "--touch", "--forceall"], b, env)
    return a, b, env


@pytest.mark.slow
def test_pulled_clone_has_the_checkpoints_and_results(clones):
    a, b, _ = clones
    for m in LEARNED:
        ckpt = Path("runs/tiny/photos") / m / "model.pt"
        assert (b / ckpt).read_bytes() == (a / ckpt).read_bytes(), ckpt
    for m in MODELS:
        metrics = Path("results/tiny/photos") / m / "metrics.csv"
        pd.testing.assert_frame_equal(pd.read_csv(b / metrics), pd.read_csv(a / metrics), check_exact=True)
    assert (b / "reports" / "index.html").read_text() == (a / "reports" / "index.html").read_text()


@pytest.mark.slow
def test_pulled_clone_has_nothing_to_do(clones):
    _, b, env = clones
    dry = _run([str(BIN / "dvc"), "repro", "--dry"], b, env)
    assert "Running stage" not in dry, dry
    assert "Data and pipelines are up to date" in _run([str(BIN / "dvc"), "status"], b, env)
    assert "Nothing to be done" in _run([str(BIN / "snakemake"), "--cores", "1", "-n"], b, env)


@pytest.mark.slow
def test_pulled_clone_still_sees_a_changed_parameter(clones):
    _, b, env = clones
    params = yaml.safe_load((b / "params.yaml").read_text())
    params["models"]["pconv-narrow"]["args"]["base"] = 6
    (b / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        plan = _run([str(BIN / "snakemake"), "--cores", "1", "-n", "--quiet", "rules"], b, env)
        assert "train" in plan and "evaluate" in plan, plan
        assert "prepare" not in plan and "pairs" not in plan, plan
        status = _run([str(BIN / "dvc"), "status"], b, env)
        assert "changed params" in status or "modified" in status, status
    finally:
        _run(["git", "checkout", "--", "params.yaml"], b, env)


@pytest.mark.slow
def test_training_jobs_logged_to_the_tracking_server(clones, servers):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=servers["mlflow"])
    exp = client.get_experiment_by_name("inpaintbench/tiny")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(f"photos/{m}" for m in LEARNED)
    steps = tiny_params()["training"]["epochs"] * tiny_params()["training"]["steps_per_epoch"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.params["model"] in LEARNED
        history = client.get_metric_history(r.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(1, steps + 1)), history
        # with a tracking server (mlflow.checkpoint: auto) the checkpoint is uploaded, beside its reference
        assert {"model.pt", "checkpoint.json"} <= {f.path for f in client.list_artifacts(r.info.run_id)}
    # artifacts went through the server into its artifact store, not into the clone
    assert len(list((servers["root"] / "mlartifacts").rglob("model.pt"))) == len(LEARNED)


# Several jobs start at once against an empty server: each gets or creates the experiment and
# logs a run. Processes wait at a barrier after importing MLflow so that they really race.
JOB = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from inpaintbench.tracking import Run
    folder, i = Path(sys.argv[1]), int(sys.argv[2])
    (folder / f"ready{i}").touch()
    deadline = time.monotonic() + 60
    while not (folder / "go").exists():
        assert time.monotonic() < deadline, "no go signal"
        time.sleep(0.01)
    run = Run("race", f"job{i}", {"job": i}, {"job": str(i)})
    for step in range(1, 21):
        run.log_metrics({"loss": 1.0 / step, "job": float(i)}, step)
        if step % 5 == 0:
            run.flush()
    run.finish()
""")


@pytest.mark.slow
def test_parallel_jobs_log_to_one_server(servers, tmp_path):
    n = 4
    env = {**_env(servers), "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path), str(i)], env=env, cwd=tmp_path)
             for i in range(n)]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(n)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "jobs did not start"
            time.sleep(0.05)
        (tmp_path / "go").touch()
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0] * n
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=servers["mlflow"])
    exps = [e for e in client.search_experiments() if e.name == "race"]
    assert len(exps) == 1
    runs = client.search_runs([exps[0].experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"job{i}" for i in range(n)]
    for r in runs:
        assert r.info.status == "FINISHED"
        hist = client.get_metric_history(r.info.run_id, "loss")
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == list(range(1, 21))
        assert {m.value for m in client.get_metric_history(r.info.run_id, "job")} == {float(r.data.params["job"])}


def test_experiment_created_by_another_job_meanwhile_is_reused():
    # Deterministic version of the race above: the experiment does not exist when this job looks,
    # and another job creates it before this job's create call.
    from inpaintbench import tracking

    class Exp:
        experiment_id = "7"

    class Client:
        def __init__(self):
            self.gets = 0

        def get_experiment_by_name(self, name):
            self.gets += 1
            return None if self.gets == 1 else Exp()

        def create_experiment(self, name):
            raise RuntimeError("RESOURCE_ALREADY_EXISTS: Experiment(name=race) already exists.")

    assert tracking._experiment_id(Client(), "race") == "7"

    class Broken(Client):
        def create_experiment(self, name):
            raise RuntimeError("PERMISSION_DENIED")

    with pytest.raises(RuntimeError, match="PERMISSION_DENIED"):
        tracking._experiment_id(Broken(), "race")
