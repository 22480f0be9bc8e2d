"""GPU slots for several training jobs on one machine (train/devices.py: claim_gpu).

Snakemake only limits how many GPU jobs run (`--resources gpu=N`); each job must pick its own
GPU. The tests fake N devices through CUDA_VISIBLE_DEVICES (no GPU needed), start several
processes that each hold a slot while recording (gpu id, start, end), and check that no two jobs
ever hold the same id at once, that extra jobs wait, and that a SIGKILLed holder frees its slot.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from inpaintbench.errors import InpaintBenchError
from inpaintbench.train import devices
from inpaintbench.train.devices import claim_gpu, visible_gpu_ids

ROOT = Path(__file__).resolve().parents[1]

# One job: claim a slot, record what it got, hold it for HOLD seconds.
JOB = textwrap.dedent("""
    import json, os, sys, time
    from inpaintbench.train.devices import claim_gpu
    slot_dir, record, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    launched = time.time()
    with claim_gpu(slot_dir, poll=0.02) as gid:
        start = time.time()
        seen = os.environ.get("CUDA_VISIBLE_DEVICES")
        open(record + ".claimed", "w").close()
        time.sleep(hold)
        end = time.time()
    with open(record, "w") as fh:
        json.dump({"gpu": gid, "seen": seen, "launched": launched, "start": start, "end": end}, fh)
""")


def _start(tmp_path: Path, name: str, visible: str, hold: float, **env) -> subprocess.Popen:
    environ = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "PYTHONPATH": str(ROOT / "src"), **env}
    if "SLURM_JOB_ID" not in env:
        environ.pop("SLURM_JOB_ID", None)
    return subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path / "slots"), str(tmp_path / f"{name}.json"),
                             str(hold)], env=environ)


def _wait_for(path: Path, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {limit} s"
        time.sleep(0.02)


def _max_concurrency(records: list[dict]) -> int:
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records],
                    key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def test_concurrent_jobs_never_share_a_gpu_and_extra_jobs_wait(tmp_path):
    n_jobs, hold = 6, 0.6
    procs = [_start(tmp_path, f"job{i}", "0,1", hold) for i in range(n_jobs)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    records = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(n_jobs)]

    for r in records:
        assert r["gpu"] in ("0", "1")
        assert r["seen"] == r["gpu"], "the job must see only its own GPU in CUDA_VISIBLE_DEVICES"
    for gid in ("0", "1"):
        mine = sorted((r for r in records if r["gpu"] == gid), key=lambda r: r["start"])
        assert mine, f"slot {gid} was never used"
        for a, b in zip(mine, mine[1:]):
            assert b["start"] >= a["end"], f"two jobs held GPU {gid} at once: {a} and {b}"
    # 6 jobs, 2 slots: never more than 2 at once, both used together, and the rest waited
    assert _max_concurrency(records) == 2
    first_end = min(r["end"] for r in records)
    assert sum(r["start"] >= first_end for r in records) >= n_jobs - 2
    assert sum(r["start"] - r["launched"] >= 0.9 * hold for r in records) >= n_jobs - 2  # they waited
    span = max(r["end"] for r in records) - min(r["start"] for r in records)
    assert span >= (n_jobs / 2) * hold * 0.95


def test_sigkilled_holder_releases_its_slot(tmp_path):
    holder = _start(tmp_path, "holder", "0", 60.0)
    try:
        _wait_for(tmp_path / "holder.json.claimed")
        waiter = _start(tmp_path, "waiter", "0", 0.05)
        time.sleep(1.0)
        assert not (tmp_path / "waiter.json.claimed").exists(), "second job took a slot that was held"
        killed_at = time.time()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert waiter.wait(timeout=20) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
    rec = json.loads((tmp_path / "waiter.json").read_text())
    assert rec["gpu"] == "0" and rec["start"] >= killed_at
    assert not (tmp_path / "holder.json").exists()


def test_crash_inside_the_block_releases_the_slot_and_restores_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(RuntimeError):
        with claim_gpu(tmp_path, poll=0.01) as gid:
            assert gid == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
            raise RuntimeError("training crashed")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    with claim_gpu(tmp_path, poll=0.01, timeout=0.5) as gid:
        assert gid == "3"


def test_all_slots_busy_times_out_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with claim_gpu(tmp_path, gpu_ids=["0"]) as gid:
        assert gid == "0"
        with pytest.raises(InpaintBenchError, match="no free GPU slot"):
            with claim_gpu(tmp_path, gpu_ids=["0"], poll=0.01, timeout=0.2):
                pass


def test_no_gpu_yields_none(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with claim_gpu(tmp_path) as gid:
        assert gid is None
    assert not (tmp_path / devices.slot_namespace()).exists()


def test_separate_slurm_jobs_do_not_wait_for_each_others_gpu0(tmp_path, monkeypatch):
    # SLURM gives each job its own GPUs and may call each of them "0"; the project folder (and
    # with it the lock folder) is shared between nodes and jobs.
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    with claim_gpu(tmp_path, gpu_ids=["0"]):
        monkeypatch.setenv("SLURM_JOB_ID", "102")
        with claim_gpu(tmp_path, gpu_ids=["0"], timeout=0.2) as gid:
            assert gid == "0"
        monkeypatch.setenv("SLURM_JOB_ID", "101")  # same allocation: must wait
        with pytest.raises(InpaintBenchError):
            with claim_gpu(tmp_path, gpu_ids=["0"], poll=0.01, timeout=0.2):
                pass


def test_counting_gpus_does_not_initialise_cuda(monkeypatch):
    # CUDA reads CUDA_VISIBLE_DEVICES once, when it is initialised; torch.cuda.is_available()
    # initialises it, after which the id set by claim_gpu would be ignored.
    import torch

    def forbidden():
        raise AssertionError("torch.cuda.is_available() initialises CUDA before the slot is claimed")

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", forbidden)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert visible_gpu_ids() == ["0", "1", "2"]


@pytest.mark.parametrize("value, expected", [("0,1", ["0", "1"]), ("2, 3", ["2", "3"]), ("", []), ("-1", []),
                                             ("1,-1,2", ["1"])])
def test_visible_ids_follow_cuda_semantics(monkeypatch, value, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert visible_gpu_ids() == expected


@pytest.mark.gpu
@pytest.mark.skipif(not os.path.exists("/dev/nvidiactl"), reason="needs an NVIDIA GPU")
def test_claimed_gpu_is_the_one_cuda_uses(tmp_path):
    # On a real GPU machine: after claim_gpu picked a slot, CUDA must honour it. Claiming a
    # non-existent id must leave CUDA with no device, which fails if counting initialised CUDA.
    code = textwrap.dedent(f"""
        import torch
        from inpaintbench.train.devices import claim_gpu, visible_gpu_ids
        n = len(visible_gpu_ids())
        assert n >= 1, n
        with claim_gpu({str(tmp_path)!r}, gpu_ids=["99"]):
            assert not torch.cuda.is_available(), "CUDA ignored CUDA_VISIBLE_DEVICES set by claim_gpu"
        print("ok", n)
    """)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT / "src")},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")


SNAKEFILE = """
rule all:
    input: expand("done/{{i}}.json", i=range(6))

rule hold:
    output: "done/{{i}}.json"
    resources: gpu=1
    shell: "{python} job.py slots {{output}} 0.5"
"""


def test_snakemake_gpu_resource_runs_n_jobs_each_on_its_own_gpu(tmp_path):
    # `snakemake --cores 4 --resources gpu=2` on a machine that shows two GPUs: Snakemake runs two
    # GPU jobs at a time (not four), and each of them holds a different GPU.
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(python=sys.executable))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "PYTHONPATH": str(ROOT / "src")}
    env.pop("SLURM_JOB_ID", None)
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--cores", "4", "--resources", "gpu=2"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads((tmp_path / "done" / f"{i}.json").read_text()) for i in range(6)]
    assert _max_concurrency(records) == 2
    # Snakemake itself started no more than two GPU jobs at a time (none had to wait for a slot)
    assert _max_concurrency([{"start": r["launched"], "end": r["end"]} for r in records]) == 2
    for gid in ("0", "1"):
        mine = sorted((r for r in records if r["gpu"] == gid), key=lambda r: r["start"])
        assert mine
        for a, b in zip(mine, mine[1:]):
            assert b["start"] >= a["end"], f"two jobs held GPU {gid} at once"
