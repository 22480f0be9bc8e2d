"""MLflow tracking: the only module that imports mlflow (DESIGN.md).

Store: ``MLFLOW_TRACKING_URI`` if set, else params ``mlflow.tracking_uri``, else a local SQLite
file ``sqlite:///mlflow.db`` in the project root. Shared runs (several machines, a cluster) log to
an MLflow tracking server instead: ``MLFLOW_TRACKING_URI=http://host:port`` (docs/scaling.md);
the server serialises the writes, so no file lock is taken, and the experiment is created
race-free by whichever job comes first. Parallel training jobs share one SQLite file,
which otherwise fails with "database is locked" or races on the schema migration when two
processes create the store at once; so for SQLite stores every write happens under an exclusive
file lock (``<db>.lock``), and every call is retried with backoff. Metrics are buffered and
written in batches (per epoch), which also keeps the lock short.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
import subprocess
import time
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"
_VERSIONED = ("torch", "torchvision", "numpy", "scikit-image", "snakemake", "dvc", "mlflow", "inpaintbench")


def tracking_uri(params_block: dict | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or (params_block or {}).get("tracking_uri") or DEFAULT_URI


@contextlib.contextmanager
def _store_lock(uri: str):
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _retry(fn, *args, attempts: int = 8, **kwargs):
    delay = 0.2
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MLflow wraps sqlite/HTTP errors in several exception types
            if i == attempts - 1:
                raise
            if not any(s in str(exc).lower() for s in ("locked", "busy", "connection", "timed out", "temporarily", "503", "500")):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _experiment_id(client, name: str) -> str:
    """Get or create the experiment. With a tracking server there is no store lock, so two jobs
    may both find no experiment and both create it: the loser reads the winner's id."""
    exp = _retry(client.get_experiment_by_name, name)
    if exp is not None:
        return exp.experiment_id
    try:
        return _retry(client.create_experiment, name)
    except Exception as exc:
        if "already exists" not in str(exc).lower() and "resource_already_exists" not in str(exc).lower():
            raise
        exp = _retry(client.get_experiment_by_name, name)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


class Run:
    """One MLflow run; `log_metrics` buffers, `flush` writes a batch under the store lock."""

    def __init__(self, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str],
                 params_block: dict | None = None, run_id: str | None = None):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(params_block)
        self._buffer: list = []
        with _store_lock(self.uri):
            self.client = _retry(MlflowClient, tracking_uri=self.uri)
            exp_id = _experiment_id(self.client, experiment)
            if run_id is not None:
                try:
                    self.run_id = _retry(self.client.get_run, run_id).info.run_id
                except Exception:
                    run_id = None
            if run_id is None:
                all_tags = {"mlflow.runName": run_name, "git_commit": git_commit(), **package_versions(), **tags}
                run = _retry(self.client.create_run, exp_id, run_name=run_name, tags=all_tags)
                self.run_id = run.info.run_id
                self._log_params(params)

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            _retry(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), ts, int(step)) for k, v in metrics.items())

    def flush(self) -> None:
        if not self._buffer:
            return
        with _store_lock(self.uri):
            for i in range(0, len(self._buffer), 1000):
                _retry(self.client.log_batch, self.run_id, metrics=self._buffer[i:i + 1000])
        self._buffer = []

    def log_artifact(self, path: str | Path) -> None:
        with _store_lock(self.uri):
            _retry(self.client.log_artifact, self.run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        with _store_lock(self.uri):
            _retry(self.client.set_terminated, self.run_id, status)
