"""SPL and SPN (models/spl.py, models/spn.py, layers/semantic_prior.py): CPU, fast, seeded."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import registry, spl, spn
from inpaintbench.models.base import BuildContext
from inpaintbench.models.layers.semantic_prior import LearnableRegionNorm, RegionNorm, region_normalize
from inpaintbench.train.trainer import make_optimizer, train_step

from model_batches import one_thread_unseeded, rand_box_batch, save_random_teacher  # noqa: F401 (autouse fixture)

WIDTHS = [8, 16, 32, 64]


@pytest.fixture
def ctx(tmp_path):
    path = save_random_teacher(tmp_path / "teacher.pt", WIDTHS)
    return BuildContext(image_size=32, artifacts={"teacher": str(path)})


def test_region_norm_matches_per_region_statistics():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=gen) * 2 + 1
    m = torch.zeros(2, 1, 8, 8)
    m[0, :, 2:5, 1:6] = 1
    m[1, :, :, 4:] = 1
    out = region_normalize(x, m)
    for b in range(2):
        for c in range(3):
            for region in (m[b, 0] > 0.5, m[b, 0] < 0.5):
                vals = x[b, c][region]
                expect = (vals - vals.mean()) / torch.sqrt(vals.var(unbiased=False) + 1e-5)
                assert torch.allclose(out[b, c][region], expect, atol=1e-5)
    # RN-B: zero-initialised region affines leave the normalised map unchanged
    assert torch.allclose(RegionNorm(3)(x, m), out, atol=1e-6)
    # the official formulation (fill the outside with the region mean, instance-normalise, rescale by
    # √(|r|/HW)) agrees up to its ε placement
    official = torch.zeros_like(x)
    for r in (m, 1 - m):
        area = r.sum(dim=(2, 3), keepdim=True)
        mu = (x * r).sum(dim=(2, 3), keepdim=True) / area
        filled = x * r + (1 - r) * mu
        official = official + r * F.instance_norm(filled, eps=1e-8) * torch.sqrt(area / 64)
    assert torch.allclose(out, official, atol=1e-3)


def test_learnable_region_norm_regions_follow_the_response_map():
    torch.manual_seed(0)
    rn = LearnableRegionNorm(4, threshold=0.5)
    x = torch.randn(1, 4, 8, 8)
    s = torch.sigmoid(rn.response(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
    expect = region_normalize(x, (s >= 0.5).float()) * (1 + rn.to_gamma(s)) + rn.to_beta(s)
    assert torch.allclose(rn(x), expect, atol=1e-6)


@pytest.mark.parametrize("arch,scales", [("spl", [2]), ("spn", [0, 1, 2])])
def test_shapes_priors_and_prior_loss_by_hand(ctx, arch, scales):
    model = registry.build(arch, {}, {}, ctx)
    assert model.goal_scales == scales
    image, mask = rand_box_batch(2, 32)
    pred, priors = model.generator(image * (1 - mask), mask)
    assert pred.shape == image.shape and 0 <= float(pred.detach().min()) and float(pred.detach().max()) <= 1
    # priors in the teacher's channels at the teacher's scales (h, h/2, h/4)
    sizes = {0: (8, 32), 1: (16, 16), 2: (32, 8)}
    assert [tuple(p.shape[1:]) for p in priors] == [(sizes[s][0], sizes[s][1], sizes[s][1]) for s in scales]
    goals = model.teacher_goals(image)
    up = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
    feats = model.teacher(up)
    # SPL/SPN prior loss written out: Σ_s mean(|P_s − T_s| · (1 + 3 M_s)), M_s nearest-resized
    expect = 0.0
    for s, p in zip(scales, priors):
        ms = F.interpolate(mask, size=p.shape[-2:], mode="nearest")
        expect += ((p - feats[s]).abs() * (1 + 3.0 * ms)).mean()
    assert torch.allclose(spl.semantic_prior_loss(goals, priors, mask, 3.0), expect)
    out = model.generator_losses(image, mask)
    rec = ((pred - image).abs() * (1 + 2 * mask)).mean()
    assert abs(out.logs["rec"] - float(rec.detach())) < 1e-5 and abs(out.logs["prior"] - float(expect.detach())) < 1e-5
    assert torch.allclose(out.total, 10 * rec + expect + out.logs["adv_g"], atol=1e-4)


def test_spn_pyramid_feeds_every_decoder_scale(ctx):
    """Changing the h-scale layout L¹ changes the output (the decoder's last SPADE block reads it)."""
    model = registry.build("spn", {}, {}, ctx).eval()
    image, mask = rand_box_batch(1, 32)
    with torch.no_grad():
        base = model(image * (1 - mask), mask)
        model.generator.pyramid.fuse1.body[2][1].bias.add_(1.0)
        changed = model(image * (1 - mask), mask)
    assert (base - changed).abs().max() > 1e-4


@pytest.mark.parametrize("arch", ["spl", "spn"])
def test_trains_with_falling_loss_and_frozen_teacher(ctx, arch):
    torch.manual_seed(0)
    model = registry.build(arch, {}, {}, ctx)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    opt_g = make_optimizer(model.generator_parameters(), {"lr": 2e-3, "betas": [0.0, 0.9]})
    opt_d = make_optimizer(model.discriminator.parameters(), {"lr": 2e-3, "betas": [0.0, 0.9]})
    image, mask = rand_box_batch(4, 32)
    first = last = None
    for i in range(12):
        out, d = train_step(model, image, mask, opt_g, opt_d)
        rec = out.logs["rec"] + out.logs["prior"]
        first = rec if first is None else first
        last = rec
        assert d is not None and torch.isfinite(d.total)
    assert last < 0.8 * first
    assert not model.teacher.training
    assert all(torch.equal(teacher_before[k], v) for k, v in model.teacher.state_dict().items())
    assert not {id(p) for p in model.teacher.parameters()} & {id(p) for p in model.generator_parameters()}


def test_published_sizes_match_the_official_counts():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    asl = [76, 76, 152]  # ASL TResNet-L taps
    # official: SPL ≈ 45.6 M, SPN ≈ 50.7 M (generators)
    assert count(spl.build_generator(spl.PAPER_ARGS, asl)) == 45_597_223
    assert count(spn.build_generator(spn.PAPER_ARGS, asl)) == 50_702_643
    assert count(spl.build_generator(spl.DEFAULT_ARGS, [8, 16, 32])) == 47_051
    assert count(spn.build_generator(spn.DEFAULT_ARGS, [8, 16, 32])) == 45_351


def test_args_and_errors(ctx):
    with pytest.raises(InpaintBenchError, match="unknown SPL args"):
        registry.build("spl", {"widths": 3}, {}, ctx)
    with pytest.raises(InpaintBenchError, match="unknown SPN loss"):
        registry.build("spn", {}, {"l1": 1.0}, ctx)
    with pytest.raises(InpaintBenchError, match="requires: \\[teacher\\]"):
        registry.build("spl", {}, {}, BuildContext())
    model = registry.build("spl", {}, {}, ctx)
    with pytest.raises(InpaintBenchError, match="divisible by 4"):
        model(torch.rand(1, 3, 30, 30), torch.zeros(1, 1, 30, 30))
