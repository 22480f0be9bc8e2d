"""The workflow on a real (one-node) SLURM cluster through workflow/profiles/slurm.

`.ci/slurm-up.sh` brings up munge, slurmctld and slurmd with two fake GPUs (needs root; installs
Debian's slurm-wlm and munge when missing). The test trains and evaluates the tiny config's
models once locally and once as SLURM jobs, and checks that the metrics are the same, that
training jobs asked SLURM for one GPU with the profile's runtime and memory (evaluation jobs for
none), and that the two training jobs ran side by side (the local GPU limit of common.smk must
not throttle a cluster). Without SLURM the test is skipped, except under CI (`CI=true`), where
it fails: CI must really run it.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, copy_workflow, tiny_params, write_params, python_env

BIN = Path(sys.executable).parent
MODELS = ["pconv", "pconv-narrow"]
EXTRA = {"pconv-narrow": {"arch": "pconv_unet", "args": {"base": 4, "depth": 3}}}
TARGETS = [f"results/tiny/photos/{m}/metrics.csv" for m in MODELS]
# Cluster resources of training jobs come from params.yaml's `slurm:` block (read by the train
# rule); other jobs get the profile's default-resources (runtime 60 min, 4000 MB).
SLURM_PARAMS = {"train": {"runtime": 30, "mem_mb": 1500}}
DEFAULT_LIMITS = ("01:00:00", "4000M")
TRAIN_LIMITS = ("00:30:00", "1500M")
SLURM_RUN_LIMIT_S = 420

pytestmark = pytest.mark.slow




def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str):
    if _in_ci():
        pytest.fail(f"SLURM could not be brought up under CI: {reason}")
    pytest.skip(f"SLURM not available ({reason}); run .ci/slurm-up.sh as root to enable this test")


def _test_cluster_up() -> bool:
    """True when the one-node cluster of .ci/slurm-up.sh answers (never submit to a real cluster)."""
    try:
        conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20)
        if conf.returncode != 0:
            return False
        if not re.search(r"^ClusterName\s*=\s*inpaintbench\s*$", conf.stdout, re.M):
            _unavailable("the SLURM cluster configured here is not the test cluster of .ci/slurm-up.sh")
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(s in ("idle", "mixed", "allocated") for s in out.stdout.split())


@pytest.fixture(scope="module")
def slurm():
    """Use a running cluster, else bring one up with .ci/slurm-up.sh (as root, or through sudo -n)."""
    if sys.platform != "linux":
        _unavailable("needs Linux")
    if _test_cluster_up():
        return
    script = ["bash", str(ROOT / ".ci" / "slurm-up.sh")]
    if os.geteuid() != 0:
        if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
            script = ["sudo", "-n", *script]
        else:
            _unavailable(".ci/slurm-up.sh needs root (or passwordless sudo) to install packages and start the daemons")
    try:
        out = subprocess.run(script, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        _unavailable(".ci/slurm-up.sh did not finish within 300 s")
    if out.returncode != 0:
        _unavailable(f".ci/slurm-up.sh exited {out.returncode}: {out.stderr[-1500:]}")


def _env(folder: Path) -> dict:
    return python_env({**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                        "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "OMP_NUM_THREADS": "1"})


def _run(cmd: list[str], folder: Path, limit: float) -> str:
    """Run a command; on timeout SIGKILL it (Snakemake ignores SIGTERM while it waits on jobs)."""
    proc = subprocess.Popen(cmd, cwd=folder, env=_env(folder), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        _cancel(log)
        pytest.fail(f"{' '.join(cmd[:3])} ... did not finish within {limit} s:\n{log[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{log[-6000:]}"
    return log


def _job_ids(log: str) -> list[str]:
    return re.findall(r"has been submitted with SLURM jobid (\d+)", log)


def _cancel(log: str) -> None:
    ids = _job_ids(log)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def _job_info(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"scontrol show job {job_id}: {out.stderr}"
    return dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)


def _metrics(folder: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_csv(folder / t) for t in TARGETS}


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    copy_workflow(folder)
    write_params(folder, {**tiny_params(models=MODELS, extra_models=EXTRA), "slurm": SLURM_PARAMS})
    _run([str(BIN / "snakemake"), "--cores", "2", *TARGETS], folder, 600)
    local = _metrics(folder)
    # keep the prepared data and pairs; train and evaluate again, this time as SLURM jobs
    for sub in ("runs", "results", "logs/train", "logs/evaluate"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    log = _run([str(BIN / "snakemake"), "--workflow-profile", str(folder / "workflow" / "profiles" / "slurm"),
                "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
                "--slurm-no-account", "--latency-wait", "5", *TARGETS], folder, SLURM_RUN_LIMIT_S)
    return folder, local, log


def test_slurm_run_gives_the_local_metrics(runs):
    folder, local, log = runs
    assert len(_job_ids(log)) == 2 * len(MODELS), log[-3000:]  # one train + one evaluate job per model
    remote = _metrics(folder)
    for target in TARGETS:
        assert len(remote[target]) > 0
        pd.testing.assert_frame_equal(remote[target], local[target], check_exact=True, obj=target)


def test_training_jobs_asked_for_one_gpu_with_the_profile_resources(runs):
    folder, _, log = runs
    infos = [_job_info(j) for j in _job_ids(log)]
    train = [i for i in infos if i.get("Comment", "").startswith("rule_train_")]
    evaluate = [i for i in infos if i.get("Comment", "").startswith("rule_evaluate_")]
    assert len(train) == len(MODELS) and len(evaluate) == len(MODELS), [i.get("Comment") for i in infos]
    # Until the train rule reads params.yaml's `slurm:` block, training jobs get the defaults too.
    train_limits = TRAIN_LIMITS if re.search(r"runtime\s*=", (folder / "workflow" / "rules" / "train.smk").read_text()) else DEFAULT_LIMITS
    for info in infos:
        assert info["JobState"] == "COMPLETED", info
        assert Path(info["WorkDir"]) == folder
    for info in train:
        assert info.get("TresPerJob") == "gres:gpu:1", info
        assert (info["TimeLimit"], info["MinMemoryNode"]) == train_limits, info
    for info in evaluate:
        assert "gpu" not in info.get("TresPerJob", ""), info
        assert (info["TimeLimit"], info["MinMemoryNode"]) == DEFAULT_LIMITS, info
    # one log per cluster job under logs/slurm (slurm-logdir), kept after success
    logs = list((folder / "logs" / "slurm").rglob("*.log"))
    assert len(logs) == len(infos), logs


def test_training_jobs_ran_side_by_side(runs):
    _, _, log = runs
    train = [i for i in map(_job_info, _job_ids(log)) if i.get("Comment", "").startswith("rule_train_")]
    spans = sorted((datetime.fromisoformat(i["StartTime"]), datetime.fromisoformat(i["EndTime"])) for i in train)
    assert spans[1][0] < spans[0][1], f"training jobs ran one after the other: {spans}"
