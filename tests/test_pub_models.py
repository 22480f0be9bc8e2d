"""Every published-size (`*-pub`) model of the papers' suite, at its experiment's resolution: one
training step (generator and discriminator) and one evaluation batch. This catches shape bugs
that only appear at 128/256 px and the published widths, which the replica test (small widths)
cannot see. Batch 1 where the model allows it; PConv's 8-level U-Net reaches a 1x1 bottleneck at
128 px (as does PSR-Net's), where batch norm in training mode needs 2 values per channel, so it trains with batch 2.

Slow (a few minutes on one CPU core); skipped, saying why, when the machine has too little free
memory for the largest model (SAHN-pub at 256 px).
"""
from __future__ import annotations

import pytest
import torch

from conftest import ROOT
from inpaintbench.config import load_params
from inpaintbench.models import registry
from inpaintbench.models.base import BuildContext
from inpaintbench.train.trainer import make_optimizer, train_step

NEED_MB = 7000  # peak of the largest job here (SAHN-pub, 256 px, batch 1, with checkpointed deformable convs)
TRAIN_BATCH = {"pconv-pub": 2, "psr-pub": 2}
# DDNM's evaluation is its sampler: 2 of its 100 DDIM steps exercise every shape (each ≈ 5-20 s at 256 px on CPU)
ARGS_OVERRIDE = {"ddnm-pub": {"sampling_steps": 2}}


def _available_mb() -> int:
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh if ":" in line}
        return info.get("MemAvailable", 0) // 1024
    except OSError:
        return 0


def _pub_jobs():
    params = load_params(ROOT / "params.yaml")
    seen = {}
    for e in params.active_experiments("papers"):
        for m in params.experiment(e)["models"]:
            if m.endswith("-pub") and m not in seen and params.is_learned(m):
                seen[m] = e
    return params, sorted(seen.items())


PARAMS, JOBS = _pub_jobs()


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A torch.hub cache with a seeded stand-in of torchvision's resnet50-11ad3fa6.pth (official key
    layout): the SAHN models' teacher substitute, whose real weights cannot be downloaded here."""
    from torchvision.models import resnet50

    home = tmp_path_factory.mktemp("torch")
    path = home / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet50(weights=None).state_dict(), path)
    return home


@pytest.mark.slow
@pytest.mark.parametrize("model,experiment", JOBS, ids=[m for m, _ in JOBS])
def test_pub_model_trains_one_step_and_evaluates_at_its_resolution(model, experiment, torch_home, monkeypatch):
    free = _available_mb()
    if free < NEED_MB:
        pytest.skip(f"needs ~{NEED_MB} MB of free memory for one published-size training step, {free} MB available")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    torch.set_num_threads(1)
    spec = PARAMS.model(model)
    size = PARAMS.experiment(experiment)["size"]
    ctx = BuildContext(image_size=size, seed=0, perceptual={"backbone": "random-vgg16", "width": 1.0}, device="cpu",
                       teacher={"kind": "imagenet-resnet50"})
    torch.manual_seed(0)
    net = registry.build(spec["arch"], {**spec.get("args", {}), **ARGS_OVERRIDE.get(model, {})}, spec.get("loss"), ctx)
    cfg = PARAMS.training(model, experiment)
    opt_g = make_optimizer(net.generator_parameters(), cfg["optimizer"])
    opt_d = make_optimizer(net.discriminator.parameters(), cfg.get("d_optimizer", cfg["optimizer"])) \
        if net.discriminator is not None else None
    batch = TRAIN_BATCH.get(model, 1)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(batch, 3, size, size, generator=g)
    mask = torch.zeros(batch, 1, size, size)
    mask[:, :, size // 4: size // 2, size // 8: size // 2] = 1.0
    before = [p.detach().clone() for p in net.generator_parameters()]
    out, _ = train_step(net, image, mask, opt_g, opt_d, amp=False)
    assert out.pred.shape == image.shape and torch.isfinite(out.total)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.generator_parameters()))  # the step updated it
    net.eval()
    with torch.no_grad():
        pred = net(image[:1] * (1 - mask[:1]), mask[:1])
    pred = pred[0] if isinstance(pred, (tuple, list)) else pred
    assert pred.shape == (1, 3, size, size) and torch.isfinite(pred).all()
