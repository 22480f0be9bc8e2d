"""DDNM (models/ddnm.py): the null-space sampler over a diffusers prior; CPU, fast, seeded."""
from __future__ import annotations

import pytest
import torch

from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import registry
from inpaintbench.models.base import BuildContext
from inpaintbench.models.ddnm import PAPER_ARGS, RELEASED_PRIORS, build_unet, null_space_step, resolve_args
from inpaintbench.train.trainer import make_optimizer, train_step

from model_batches import one_thread_unseeded, rand_box_batch  # noqa: F401 (autouse fixture)


def _model(size=32, **args):
    torch.manual_seed(0)
    return registry.build("ddnm", {"sampling_steps": 4, **args}, {}, BuildContext(image_size=size)).eval()


def test_null_space_step_by_hand():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 8, 8, generator=gen)
    y_full = torch.randn(2, 3, 8, 8, generator=gen)
    mask = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()
    a = lambda z: z * (1 - mask)  # noqa: E731 — A keeps the known pixels; A† = A
    y = a(y_full)
    expect = a(y) + (x0 - a(a(x0)))  # A†y + (I − A†A) x0
    out = null_space_step(x0, y, mask)
    assert torch.allclose(out, expect)
    assert torch.equal(out * (1 - mask), y_full * (1 - mask))  # consistency: A x̂0 = y
    assert torch.equal(out * mask, x0 * mask)                  # the null-space part is the prior's


def test_sampler_step_equals_hand_computation_and_keeps_known_pixels():
    model = _model(eta=0.0)
    image, mask = rand_box_batch(2, 32)
    record = []
    x0 = model.sample(image, mask, record=record)
    assert len(record) == 4 and [r["t"] for r in record] == sorted((r["t"] for r in record), reverse=True)
    y = (image * 2 - 1) * (1 - mask)
    ac = model.sampler.alphas_cumprod
    for i, r in enumerate(record):
        a_t = ac[r["t"]]
        eps = model.unet(r["x_t"], torch.full((2,), r["t"])).sample
        x0_t = ((r["x_t"] - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)        # Eq. 12, clip_x0
        assert torch.allclose(r["x0_t"], x0_t, atol=1e-5)
        x0_hat = (1 - mask) * y + mask * x0_t                                          # A†y + (I − A†A) x0|t
        assert torch.allclose(r["x0_hat"], x0_hat, atol=1e-5)
        # DDIM (η = 0) from x̂0|t: x_{t-1} = √ᾱ_prev x̂0 + √(1−ᾱ_prev) ε̂, ε̂ = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t)
        a_prev = ac[record[i + 1]["t"]] if i + 1 < len(record) else torch.tensor(1.0)
        eps_hat = (r["x_t"] - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
        x_prev = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps_hat
        assert torch.allclose(r["x_prev"], x_prev, atol=1e-4)
    # the final sample is x̂0|1: the known pixels are exactly y
    assert torch.equal(x0 * (1 - mask), y)
    out = model.inpaint(image, mask)
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    # deterministic: the same seed gives the same sample
    assert torch.equal(model.sample(image, mask), x0)


def test_stochastic_sampler_keeps_known_pixels_and_fills_holes():
    model = _model(eta=0.85)
    image, mask = rand_box_batch(2, 32, seed=3)
    x0 = model.sample(image, mask)
    assert torch.equal(x0 * (1 - mask), (image * 2 - 1) * (1 - mask))
    assert (x0 * mask).abs().sum() > 0 and torch.isfinite(x0).all()


def test_prior_training_loss_falls():
    model = _model(16)
    opt = make_optimizer(model.generator_parameters(), {"lr": 2e-3})
    image, mask = rand_box_batch(8, 16)
    torch.manual_seed(1)
    losses = [train_step(model, image, mask, opt)[0].logs["eps_mse"] for _ in range(60)]
    assert sum(losses[-10:]) / 10 < 0.75 * sum(losses[:10]) / 10
    assert model.discriminator is None


def test_args_released_priors_and_sizes(tmp_path, monkeypatch):
    with pytest.raises(InpaintBenchError, match="unknown DDNM args"):
        resolve_args({"steps": 3})
    with pytest.raises(InpaintBenchError, match="sampling_steps"):
        resolve_args({"sampling_steps": 0})
    with pytest.raises(InpaintBenchError, match="divisible by 4"):
        registry.build("ddnm", {}, {}, BuildContext(image_size=30))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name, info in RELEASED_PRIORS.items():
        with pytest.raises(InpaintBenchError) as err:
            registry.build("ddnm", {"prior": name}, {}, BuildContext())
        msg = str(err.value)
        assert info["file"] in msg and info["url"] in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    # the published-scale trained prior has the CelebA-HQ DDPM architecture (≈ 113.7 M in diffusers'
    # google/ddpm-celebahq-256 conversion of the same model)
    big = build_unet(resolve_args(PAPER_ARGS), 256)
    assert sum(p.numel() for p in big.parameters()) == 113_673_219
