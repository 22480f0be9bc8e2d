"""MLflow tracking: the only module that imports mlflow.

Store: ``MLFLOW_TRACKING_URI`` if set, else params ``mlflow.tracking_uri``, else a local SQLite
file ``sqlite:///mlflow.db`` in the project root (the folder the workflow runs in). Artifacts of a
local store go to ``mlruns/`` beside it. MLflow records an experiment's artifact folder as an
absolute path, so a clone copied or moved together with its ``mlflow.db`` would write into the
original clone's folder: with the default store, an experiment whose local artifact folder lies
outside this project is refused with an error saying what to do.

Shared runs (several machines, a cluster) log to an MLflow tracking server instead —
``mlflow server --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlartifacts
--host 0.0.0.0 --port 5000`` on one machine, ``MLFLOW_TRACKING_URI=http://host:5000`` on every
job (docs/scaling.md); the server serialises the writes, so no file lock is taken, and the
experiment is created race-free by whichever job comes first. Parallel training jobs share one
SQLite file, which otherwise fails with "database is locked" or races on the schema migration
when two processes create the store at once; so for SQLite stores every write happens under an
exclusive file lock (``<db>.lock``), and every call is retried with backoff. Metrics are buffered
and written in batches (the trainer flushes at each epoch end and before every checkpoint, so a
kill loses no metric of a step the checkpoint holds).

MLflow 3.x conventions: experiments carry ``mlflow.experimentKind = custom_model_development`` (they
open as model training, not in the GenAI view); runs carry ``mlflow.source.git.commit``, a ``job``
tag (experiment/train/model), and a unique name: a retraining of a job gets ``<name> (retrain N)``
and the tags ``retrain`` and ``retrain_of``. Metric names are ``train/<loss>`` per step,
``val/<metric>`` per epoch and ``test/<dataset>/<bucket>/<metric>`` from the evaluation step.

Checkpoints (params ``mlflow.checkpoint``): ``reference`` logs ``checkpoint.json`` (the file's
project-relative path, size, sha256 and the model's settings), not a copy — the weights live once,
in ``runs/`` (and DVC's cache, linked); ``copy`` also uploads ``model.pt``; ``auto`` (default)
copies only to a tracking server (where other machines read it) and references otherwise.

A run survives a kill: its id is kept in ``mlflow_run.json`` beside the checkpoint from the moment
it is created, so a job killed before its first checkpoint and started again continues the same
run (marked RUNNING again) instead of leaving a RUNNING orphan and opening a second run.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from .errors import InpaintBenchError

DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"     # read by the MLflow 3 UI to pick the experiment view
EXPERIMENT_KIND = "custom_model_development"       # "model training" (the other main kind: genai_development)
CHECKPOINT_MODES = ("auto", "reference", "copy")
_VERSIONED = ("torch", "torchvision", "numpy", "scikit-image", "snakemake", "dvc", "mlflow", "inpaintbench")


def tracking_uri(params_block: dict | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or (params_block or {}).get("tracking_uri") or DEFAULT_URI


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


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


def _local_path(location: str) -> Path | None:
    """The folder of a local artifact location (file URI or plain path); None for remote ones."""
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(location).path))
    if "://" in location or location.startswith(("mlflow-artifacts:", "dbfs:")):
        return None
    return Path(location)


def check_artifact_location(location: str, experiment: str, uri: str, root: Path | None = None) -> None:
    """Refuse a project-default store whose experiment writes artifacts outside the project."""
    if uri != DEFAULT_URI:
        return  # a store the user chose (server, shared file): its artifact folder is theirs to pick
    local = _local_path(location)
    root = (root or Path.cwd()).resolve()
    if local is None:
        return
    local = local.resolve() if local.is_absolute() else (root / local).resolve()
    if local != root and root not in local.parents:
        raise InpaintBenchError(
            f"MLflow experiment {experiment!r} in {uri} stores its artifacts in {local}, outside this project "
            f"({root}): this mlflow.db was copied or moved from another clone, and runs here would write into "
            "that clone's folder. Move the old store aside (mv mlflow.db mlflow.db.old; mv mlruns mlruns.old) to "
            "start a fresh one here, or set MLFLOW_TRACKING_URI to the store you mean (e.g. a tracking server, "
            "see docs/scaling.md)")


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


def metric_key(*parts: str) -> str:
    """A metric name MLflow accepts (letters, digits, _ - . / : and spaces): a bucket label such
    as ``(0.1, 0.2]`` becomes ``0.1-0.2``."""
    clean = []
    for p in parts:
        p = str(p)
        if re.fullmatch(r"[\(\[]\s*([\d.]+)\s*,\s*([\d.]+)\s*[\)\]]", p):
            lo, hi = re.findall(r"[\d.]+", p)
            p = f"{lo}-{hi}"
        clean.append(re.sub(r"[^\w.\-: ]", "_", p))
    return "/".join(clean)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Run:
    """One MLflow run; `log_metrics` buffers, `flush` writes a batch under the store lock.

    `run_id`: continue that run (a resume from a checkpoint). `run_file`: where the run id is kept
    from creation on (``mlflow_run.json``); without `run_id`, a run recorded there that has not
    finished and was started with the same params is continued (a job killed before its first
    checkpoint). Any other start is a new run, named uniquely."""

    def __init__(self, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str],
                 params_block: dict | None = None, run_id: str | None = None, run_file: str | Path | None = None):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(params_block)
        self.checkpoint_mode = (params_block or {}).get("checkpoint", "auto")
        if self.checkpoint_mode not in CHECKPOINT_MODES:
            raise InpaintBenchError(f"mlflow.checkpoint is {self.checkpoint_mode!r}; use one of {', '.join(CHECKPOINT_MODES)}")
        self.run_file = Path(run_file) if run_file is not None else None
        self.resumed = False
        self._buffer: list = []
        job = f"{experiment}/{run_name}"
        params_hash = _hash(params)
        with _store_lock(self.uri):
            self.client = _retry(MlflowClient, tracking_uri=self.uri)
            exp_id = _experiment_id(self.client, experiment)
            exp = _retry(self.client.get_experiment, exp_id)
            check_artifact_location(exp.artifact_location, experiment, self.uri)
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                _retry(self.client.set_experiment_tag, exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            self.run_id = self._continue(run_id, params_hash)
            if self.run_id is None:
                self.run_id = self._create(exp_id, job, run_name, params, tags)
                self._log_params(params)
            if self.run_file is not None:
                from .io import write_json

                write_json(self.run_file, {"run_id": self.run_id, "params_hash": params_hash, "tracking_uri": self.uri})

    def _continue(self, run_id: str | None, params_hash: str) -> str | None:
        """The id of the run to continue, marked RUNNING again; None for a new run."""
        if run_id is None and self.run_file is not None and self.run_file.exists():
            try:
                saved = json.loads(self.run_file.read_text())
            except (OSError, ValueError):
                saved = {}
            if saved.get("tracking_uri", self.uri) == self.uri and saved.get("run_id"):
                if saved.get("params_hash") == params_hash:
                    run_id = saved["run_id"]
                else:  # an unfinished run of other settings: close it, start a new one
                    with contextlib.suppress(Exception):
                        if self.client.get_run(saved["run_id"]).info.status == "RUNNING":
                            _retry(self.client.set_terminated, saved["run_id"], "KILLED")
        if run_id is None:
            return None
        try:
            run = _retry(self.client.get_run, run_id)
        except Exception:
            return None
        if run.info.status == "FINISHED":
            return None
        if run.info.status != "RUNNING":
            _retry(self.client.update_run, run_id, "RUNNING")
        self.resumed = True
        return run.info.run_id

    def _create(self, exp_id: str, job: str, run_name: str, params: dict, tags: dict) -> str:
        earlier = _retry(self.client.search_runs, [exp_id], filter_string=f"tags.job = '{job}'",
                         order_by=["attributes.start_time DESC"], max_results=1000)
        all_tags = {"mlflow.source.git.commit": git_commit(), "mlflow.source.type": "LOCAL",
                    "mlflow.source.name": "inpaintbench train", "job": job, **package_versions(), **tags}
        if earlier:
            run_name = f"{run_name} (retrain {len(earlier)})"
            all_tags.update({"retrain": str(len(earlier)), "retrain_of": earlier[0].info.run_id})
        all_tags["mlflow.runName"] = run_name
        return _retry(self.client.create_run, exp_id, run_name=run_name, tags=all_tags).info.run_id

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

    def log_checkpoint(self, path: str | Path, settings: dict) -> None:
        """The final checkpoint by reference (``checkpoint.json``: project-relative path, bytes,
        sha256, the model's settings) and, in ``copy`` mode or ``auto`` with a server, the file."""
        import tempfile

        path = Path(path)
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        with contextlib.suppress(ValueError):
            path = path.resolve().relative_to(Path.cwd().resolve())
        copy = self.checkpoint_mode == "copy" or (self.checkpoint_mode == "auto" and is_server(self.uri))
        ref = {"path": str(path), "bytes": Path(path).stat().st_size, "sha256": digest.hexdigest(),
               "copied_to_mlflow": copy, **settings}
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "checkpoint.json"
            f.write_text(json.dumps(ref, indent=2, sort_keys=True, default=str) + "\n")
            with _store_lock(self.uri):
                _retry(self.client.log_artifact, self.run_id, str(f))
                _retry(self.client.set_tag, self.run_id, "checkpoint", str(path))
        if copy:
            self.log_artifact(path)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        with _store_lock(self.uri):
            _retry(self.client.set_terminated, self.run_id, status)
        if self.run_file is not None:
            self.run_file.unlink(missing_ok=True)


def log_test_metrics(run_id: str, metrics: dict[str, float], params_block: dict | None = None, step: int = 0) -> bool:
    """Add evaluation results (``test/<dataset>/<bucket>/<metric>``) to a finished training run.
    Returns False (and logs nothing) when this store has no such run, e.g. a checkpoint pulled
    from another clone whose runs went to another store."""
    return log_test_metrics_many({run_id: metrics}, params_block, step)[run_id]


def log_test_metrics_many(per_run: dict[str, dict[str, float]], params_block: dict | None = None,
                          step: int = 0) -> dict[str, bool]:
    """`log_test_metrics` for several training runs through one client and one store lock (the
    `aggregate` step logs every model of an experiment at once: MLflow's import and store set-up,
    ~2.5 s CPU, are paid once, not once per evaluate job). Returns {run_id: logged}."""
    if not per_run:
        return {}
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(params_block)
    ts = int(time.time() * 1000)
    logged: dict[str, bool] = {}
    with _store_lock(uri):
        client = _retry(MlflowClient, tracking_uri=uri)
        for run_id, metrics in per_run.items():
            try:
                _retry(client.get_run, run_id)
            except Exception as exc:
                if "not found" not in str(exc).lower() and "does_not_exist" not in str(exc).lower() \
                        and "no run" not in str(exc).lower():
                    raise
                logged[run_id] = False
                continue
            items = [Metric(k, float(v), ts, int(step)) for k, v in sorted(metrics.items())]
            for i in range(0, len(items), 1000):
                _retry(client.log_batch, run_id, metrics=items[i:i + 1000])
            logged[run_id] = True
    return logged
