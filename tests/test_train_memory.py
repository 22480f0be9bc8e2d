"""Training jobs' memory claims (train/memory.py): published models from measurements, scaled
with batch and pixels; built-in models small; an explicit training.mem_mb wins."""
from conftest import tiny_params
from inpaintbench.config import Params
from inpaintbench.train import memory


def _params(model_spec: dict, size: int, batch: int, mem_mb=None) -> Params:
    raw = tiny_params()
    raw["models"]["m"] = model_spec
    exp = raw["experiments"]["tiny"]
    exp.update(models=["m"], size=size, tables=[], training={"batch_size": batch, **({"mem_mb": mem_mb} if mem_mb else {})})
    for ds in raw["datasets"].values():
        ds["size"] = size
    return Params(raw)


def test_estimates_scale_with_batch_and_pixels_and_can_be_overridden(monkeypatch):
    monkeypatch.setattr(memory, "MEASURED", {"m": (128, 1000.0, None)})
    one = memory.estimate_train_mem_mb(_params({"arch": "pconv_unet"}, 128, 1), "tiny", "m")
    assert one == int(memory.MARGIN * 1000)
    assert memory.estimate_train_mem_mb(_params({"arch": "pconv_unet"}, 128, 8), "tiny", "m") == int(memory.MARGIN * 8000)
    assert memory.estimate_train_mem_mb(_params({"arch": "pconv_unet"}, 256, 1), "tiny", "m") == int(memory.MARGIN * 4000)
    monkeypatch.setattr(memory, "MEASURED", {"m": (128, 1000.0, 1400.0)})  # two points: the line through them
    assert memory.estimate_train_mem_mb(_params({"arch": "pconv_unet"}, 128, 4), "tiny", "m") == int(memory.MARGIN * 2200)
    small = _params({"arch": "pconv_unet", "args": {"base": 8}, "paper_args": {"base": 64}}, 128, 8)
    assert memory.estimate_train_mem_mb(small, "tiny", "m") == memory.SMALL_MB
    assert memory.estimate_train_mem_mb(_params({"arch": "pconv_unet"}, 128, 8, mem_mb=777), "tiny", "m") == 777


def test_unmeasured_published_model_gets_the_costliest_rate(monkeypatch):
    monkeypatch.setattr(memory, "MEASURED", {"a": (128, 1000.0, None), "b": (256, 2000.0, None)})
    est = memory.estimate_train_mem_mb(_params({"arch": "pconv_unet"}, 128, 2), "tiny", "m")
    assert est == int(memory.MARGIN * 1000 / 128 ** 2 * 2 * 128 ** 2)
