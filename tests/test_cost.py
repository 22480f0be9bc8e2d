"""Cost per table (report/cost.py): jobs behind each table, measured vs estimated, FLOP counts."""
import json

import pytest

from inpaintbench.config import load_params
from inpaintbench.report import cost


def test_cost_per_table_from_flops_estimate_and_cuda_measurement(project, tmp_path):
    params = load_params()
    flops = tmp_path / "flops.json"
    flops.write_text(json.dumps({"rows": [{"model": "pconv", "size": 32, "flops_per_sample": 2e12,
                                           "saved_bytes_per_sample": 2**30, "state_bytes": 2**31}]}))
    [table] = cost.table_costs(params, "tiny", cuda_file=tmp_path / "none.json", flops_file=flops)
    [job] = table["jobs"]  # copy-input and biharmonic are not trained: only pconv on photos
    assert (job["model"], job["train"], job["steps"], job["batch"]) == ("pconv", "photos", 6, 4)
    seconds = 6 * 4 * 2e12 / (cost.ASSUMED_TFLOPS * 1e12)
    assert job["gpu_hours"] == pytest.approx(seconds / 3600) and table["gpu_hours"] == pytest.approx(seconds / 3600)
    assert job["peak_gb"] == pytest.approx(2 + 4 * 1) and job["estimate"] and table["estimate"]
    assert "estimate" in cost.cost_markdown([table]) and "estimate" in cost.cost_html([table])
    # a CUDA benchmark row of the job replaces the estimate (bf16: the trainer's default precision)
    cuda = tmp_path / "cuda.json"
    cuda.write_text(json.dumps({"rows": [
        {"model": "pconv", "size": 32, "batch": 4, "mode": "fp32", "step_with_pipeline_ms": 100.0, "peak_mb": 2048, "device_name": "GPU X"},
        {"model": "pconv", "size": 32, "batch": 4, "mode": "bf16", "step_with_pipeline_ms": 40.0, "peak_mb": 1024, "device_name": "GPU X"}]}))
    [table] = cost.table_costs(params, "tiny", cuda_file=cuda, flops_file=flops)
    [job] = table["jobs"]
    assert job["gpu_hours"] == pytest.approx(6 * 40.0 / 3.6e6) and job["peak_gb"] == pytest.approx(1.0)
    assert not table["estimate"] and job["source"] == "measured (GPU X, bf16)"
    # nothing measured: said so, no number made up
    [table] = cost.table_costs(params, "tiny", cuda_file=tmp_path / "none.json", flops_file=tmp_path / "none.json")
    assert table["gpu_hours"] is None and "not measured" in table["jobs"][0]["source"]
    assert "n/a" in cost.cost_markdown([table])


def test_flop_count_scales_with_pixels_and_counts_every_step_part(project, monkeypatch):
    params = load_params()
    direct = cost.measure_step(params, "pconv", 32)
    monkeypatch.setattr(cost, "MEASURE_MAX_SIZE", 16)
    scaled = cost.measure_step(params, "pconv", 32)
    assert direct["measured_at"] == 32 and scaled["measured_at"] == 16 and scaled["scale"] == 4
    # a convolutional network's FLOPs are proportional to the pixel count
    assert scaled["flops_per_sample"] == pytest.approx(direct["flops_per_sample"], rel=0.02)
    # forward + backward: at least 3x the forward FLOPs of the generator alone
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from inpaintbench.report.cost import build_for_benchmark

    model, _, _ = build_for_benchmark(params, "pconv", 32, "cpu", project)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32))
    assert direct["flops_per_sample"] >= 2.9 * fc.get_total_flops() > 0
    assert direct["state_bytes"] == 16 * direct["trainable_parameters"] > 0 and direct["saved_bytes_per_sample"] > 0


def test_peak_memory_comes_from_measured_cpu_rss_where_memory_py_has_it(project, tmp_path, monkeypatch):
    from inpaintbench.train import memory

    params = load_params()
    flops = tmp_path / "flops.json"
    flops.write_text(json.dumps({"rows": [{"model": "pconv", "size": 32, "flops_per_sample": 2e12,
                                           "saved_bytes_per_sample": 2**30, "state_bytes": 2**31}]}))
    none = tmp_path / "none.json"
    # measured at the job's size and batch (32 px, batch 4): that peak RSS, not the FLOP estimate (6 GB)
    monkeypatch.setitem(memory.MEASURED, "pconv", {32: {2: 1000.0, 4: 1536.0}})
    [table] = cost.table_costs(params, "tiny", cuda_file=none, flops_file=flops)
    [job] = table["jobs"]
    assert job["peak_gb"] == pytest.approx(1.5) and table["peak_gb_per_job"] == pytest.approx(1.5)
    assert job["memory_source"] == "CPU RSS, measured at batch 4 (32 px)"
    assert job["gpu_hours"] == pytest.approx(6 * 4 * 2e12 / (cost.ASSUMED_TFLOPS * 1e12) / 3600)  # still the estimate
    assert job["estimate"] and "estimate (CPU-counted FLOPs" in job["source"]
    md, page = cost.cost_markdown([table]), cost.cost_html([table])
    assert "1.50" in md and "CPU RSS, measured at batch 4" in md and "CPU RSS, measured at batch 4" in page
    # measured at batch 1 / 2: the line through them, extrapolated to batch 4 (fixed 512 + 4 x 512 MB)
    monkeypatch.setitem(memory.MEASURED, "pconv", {32: {1: 1024.0, 2: 1536.0}})
    [table] = cost.table_costs(params, "tiny", cuda_file=none, flops_file=flops)
    [job] = table["jobs"]
    assert job["peak_gb"] == pytest.approx(memory.peak_mb("pconv", 32, 4) / 1024) == pytest.approx(2.5)
    assert job["memory_source"] == "CPU RSS, measured at batch 1/2 (32 px) / extrapolated to 4"
    assert "extrapolated to 4" in cost.cost_markdown([table])
    # no FLOP counts: GPU-hours unknown, the measured memory still shown
    [table] = cost.table_costs(params, "tiny", cuda_file=none, flops_file=none)
    assert table["gpu_hours"] is None and table["peak_gb_per_job"] == pytest.approx(2.5)
    # a CUDA benchmark row takes precedence for both (CUDA max allocated)
    cuda = tmp_path / "cuda.json"
    cuda.write_text(json.dumps({"rows": [{"model": "pconv", "size": 32, "batch": 4, "mode": "bf16",
                                          "step_with_pipeline_ms": 40.0, "peak_mb": 512, "device_name": "GPU X"}]}))
    [table] = cost.table_costs(params, "tiny", cuda_file=cuda, flops_file=flops)
    [job] = table["jobs"]
    assert job["peak_gb"] == pytest.approx(0.5) and job["memory_source"].startswith("CUDA max allocated")
    # not in memory.py: the FLOP memory estimate is the fallback, labelled as such
    monkeypatch.delitem(memory.MEASURED, "pconv")
    [table] = cost.table_costs(params, "tiny", cuda_file=none, flops_file=flops)
    assert table["jobs"][0]["peak_gb"] == pytest.approx(6) and "estimate" in table["jobs"][0]["memory_source"]


def test_paper_tables_peak_memory_is_memory_py_figure(project):
    """The papers' suite (the repository's params.yaml and committed FLOP counts): each job's peak is
    train/memory.py's measured/extrapolated CPU RSS, e.g. SAHN Table 4's largest job is SAHN-pub's
    19,340 MB line, not the FLOP estimate of parameter state + saved activations."""
    from pathlib import Path

    from inpaintbench.train import memory

    root = Path(cost.__file__).resolve().parents[3]
    params = load_params(root / "params.yaml")
    [table] = cost.table_costs(params, "sahn-paper-ablation", cuda_file=project / "none.json",
                               flops_file=root / cost.FLOPS_FILE)
    for job in table["jobs"]:
        assert job["peak_gb"] == pytest.approx(memory.peak_mb(job["model"], job["size"], job["batch"]) / 1024)
        assert job["memory_source"].startswith("CPU RSS, measured at batch")
        assert job["gpu_hours"] is not None and job["estimate"]
    assert table["peak_gb_per_job"] == pytest.approx(19340 / 1024) and table["peak_job"].endswith("/sahn-pub")
