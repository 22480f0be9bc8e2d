"""Training jobs' memory claims (train/memory.py): published models from measurements, scaled
with batch and pixels; built-in models small; an explicit training.mem_mb wins."""
from conftest import ROOT, tiny_params
from inpaintbench.config import Params, load_params
from inpaintbench.train import memory


def _params(model_spec: dict, size: int, batch: int, mem_mb=None) -> Params:
    raw = tiny_params()
    raw["models"]["m"] = model_spec
    exp = raw["experiments"]["tiny"]
    exp.update(models=["m"], size=size, tables=[], training={"batch_size": batch, **({"mem_mb": mem_mb} if mem_mb else {})})
    for ds in raw["datasets"].values():
        ds["size"] = size
    return Params(raw)


def _est(size: int, batch: int, **kw) -> int:
    return memory.estimate_train_mem_mb(_params({"arch": "pconv_unet"}, size, batch, **kw), "tiny", "m")


def test_estimates_scale_with_batch_and_pixels_and_can_be_overridden(monkeypatch):
    monkeypatch.setattr(memory, "MEASURED", {"m": {128: {1: 1000.0}}})
    assert _est(128, 1) == int(memory.MARGIN * 1000)
    assert _est(128, 8) == int(memory.MARGIN * 8000)  # one point: proportional to the batch (upper bound)
    assert _est(256, 1) == int(memory.MARGIN * 4000)  # and to the pixels
    assert _est(64, 1) == int(memory.MARGIN * 1000)  # never scaled below the measured peak
    monkeypatch.setattr(memory, "MEASURED", {"m": {128: {1: 1000.0, 2: 1400.0}}})  # two points: the line
    assert _est(128, 4) == int(memory.MARGIN * 2200)
    assert _est(128, 2) == int(memory.MARGIN * 1400)  # a measured batch: its peak
    small = _params({"arch": "pconv_unet", "args": {"base": 8}, "paper_args": {"base": 64}}, 128, 8)
    assert memory.estimate_train_mem_mb(small, "tiny", "m") == memory.SMALL_MB
    assert _est(128, 8, mem_mb=777) == 777


def test_the_line_uses_the_two_largest_batches_and_scales_only_activations_down(monkeypatch):
    monkeypatch.setattr(memory, "MEASURED", {"m": {128: {1: 1000.0, 2: 1400.0, 4: 2400.0}}})
    assert _est(128, 8) == int(memory.MARGIN * (400 + 500 * 8))  # through batch 2 and 4: 500 MB per image
    # at a quarter of the pixels the fixed 400 MB stays, the per-image part shrinks
    assert _est(64, 8) == int(memory.MARGIN * (400 + 500 * 8 / 4))
    # at four times the pixels both are scaled (conservative)
    assert _est(256, 2) == int(memory.MARGIN * (400 * 4 + 500 * 2 * 4))
    # a measurement at the job's own size is preferred over another size's
    monkeypatch.setattr(memory, "MEASURED", {"m": {128: {2: 1000.0, 4: 1600.0}, 256: {2: 3000.0, 4: 5000.0}}})
    assert _est(256, 8) == int(memory.MARGIN * (1000 + 1000 * 8))
    assert _est(128, 8) == int(memory.MARGIN * (400 + 300 * 8))


def test_unmeasured_published_model_gets_the_costliest_rate(monkeypatch):
    monkeypatch.setattr(memory, "MEASURED", {"a": {128: {1: 1000.0}}, "b": {256: {1: 2000.0}}})
    assert _est(128, 2) == int(memory.MARGIN * 1000 / 128 ** 2 * 2 * 128 ** 2)


def test_every_published_model_the_papers_suite_trains_was_measured():
    params = load_params(ROOT / "params.yaml")
    trained = {m for e in params.active_experiments("papers") for m in params.experiment(e)["models"]
               if m.endswith("-pub") and params.is_learned(m)}
    assert trained - set(memory.MEASURED) == set()
    for model, sizes in memory.MEASURED.items():
        assert sizes and all(points and all(v > 0 for v in points.values()) for points in sizes.values()), model


def test_a_flat_small_size_line_takes_the_larger_sizes_per_image_cost(monkeypatch):
    # at 128 px batch 2 -> 4 adds 40 MB (the optimiser step's peak); 256 px adds 400 MB per image
    monkeypatch.setattr(memory, "MEASURED", {"m": {128: {2: 1500.0, 4: 1580.0}, 256: {2: 2200.0, 4: 3000.0}}})
    assert _est(128, 8) == int(memory.MARGIN * (1420 + 400 / 4 * 8))
    assert _est(256, 8) == int(memory.MARGIN * (1400 + 400 * 8))  # the larger size's own line


def test_the_measuring_scripts_optimiser_warm_up_allocates_adam_state_and_changes_no_weight():
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("train_memory_script", ROOT / "scripts" / "train_memory.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.0, 0.9))
    script.warm_optimizer(opt)
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert all(opt.state[p]["exp_avg_sq"].shape == p.shape and p.grad is not None for p in net.parameters())
