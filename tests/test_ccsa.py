"""CCSA model (issue 3): SCA search/generation against brute force, gradients, known-region
pass-through, cross-scale reconstruction (Eq. 3-6) against explicit sums, training of the four
ablation variants, output shapes and parameter counts. CPU only, seeded."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inpaintbench.errors import InpaintBenchError
from inpaintbench.models.base import BuildContext
from inpaintbench.models import registry
from inpaintbench.models.ccsa import DEFAULT_ARGS, PAPER_SCALE_ARGS, CCSANet
from inpaintbench.models.ccsa import build as build_ccsa
from inpaintbench.models.layers import ccsa_attention as A

NO_PERCEPTUAL = BuildContext(perceptual={"backbone": "none"})


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6):
    # (torch.testing.assert_close imports torch.distributed on first use: seconds per run)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), f"max abs error {err}"


def test_registered_as_ccsa():
    # the factory is called directly below (registry.build imports every model: slow here)
    assert registry._FACTORIES["ccsa"] is build_ccsa


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def random_case(seed: int, b: int = 3, n: int = 20, c: int = 6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, n, c, generator=g, dtype=dtype)
    hole = (torch.rand(b, n, generator=g) < 0.45).to(dtype)
    hole[:, 0] = 0  # at least one known position per image
    hole[:, 1] = 1  # at least one hole
    return feats, hole


# ---------------------------------------------------------------- SCA search (Sec. 3.2.1)
def test_search_equals_bruteforce_cosine_argmax():
    feats, hole = random_case(0, b=3, n=25, c=7)
    match, dmax = A.sca_search(feats, hole)
    for b in range(feats.shape[0]):
        known = [k for k in range(feats.shape[1]) if hole[b, k] == 0]
        for i in range(feats.shape[1]):
            if hole[b, i] == 0:
                continue
            cos = [float(F.cosine_similarity(feats[b, i], feats[b, k], dim=0)) for k in known]
            best = known[max(range(len(known)), key=lambda j: cos[j])]
            assert torch.equal(match[b, i], feats[b, best]), (b, i)
            assert dmax[b, i].item() == pytest.approx(max(cos), abs=1e-5)


# ---------------------------------------------------------------- SCA generation (Sec. 3.2.2)
def test_generation_equals_plain_loop_over_eq2():
    feats, hole = random_case(1, b=4, n=30, c=5)
    hole[2] = 0  # an image without holes: unchanged
    hole[3] = 1  # an image without known positions: unchanged
    match, dmax = A.sca_search(feats, hole)
    fast = A.sca_generate(feats, hole, match, dmax)
    slow = A.sca_generate_loop(feats, hole, match, dmax)
    assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert torch.equal(fast[2], feats[2]) and torch.equal(fast[3], feats[3])
    # the recursion really mixes in the previous generated patch: not just the context match
    holes0 = hole[0] > 0.5
    assert not torch.allclose(fast[0][holes0], match[0][holes0])


def test_generation_first_patch_is_its_context_match():
    feats, hole = random_case(2, b=2, n=16, c=4)
    match, dmax = A.sca_search(feats, hole)
    out = A.sca_generate(feats, hole, match, dmax)
    for b in range(2):
        first = int(torch.nonzero(hole[b] > 0.5)[0])  # upper-left hole patch: m_1 = m'_1
        assert torch.equal(out[b, first], match[b, first])


def test_eq1_dad_compares_the_hole_patch_with_the_previous_one():
    """Eq. 1: Dad_i = cos(m_i, m_{i-1}) with m_i the hole patch itself, not its match m'_i.

    Two known vectors (1,0), (0,1); two hole vectors (1,0.1) -> match (1,0) and (0.1,1) ->
    match (0,1). m_1 = m'_1 = (1,0). For the second hole patch, Dad = cos((0.1,1),(1,0)) =
    0.1/sqrt(1.01) and Dmax = cos((0.1,1),(0,1)) = 1/sqrt(1.01): w = 1/11 and m_2 = (1/11, 10/11).
    Comparing the match (0,1) with m_1 instead gives Dad = 0 and m_2 = (0,1)."""
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]]], dtype=torch.float64)
    hole = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    match, dmax = A.sca_search(feats, hole)
    assert torch.equal(match[0, 2:], feats[0, :2])
    expected = torch.tensor([[1.0, 0.0], [1 / 11, 10 / 11]], dtype=torch.float64)
    for out in (A.sca_generate(feats, hole, match, dmax), A.sca_generate_loop(feats, hole, match, dmax)):
        assert_close(out[0, 2:], expected, rtol=1e-6, atol=1e-7)
        assert torch.equal(out[0, :2], feats[0, :2])
    layer_out = A.SemanticCoherentAttention()(feats.transpose(1, 2).reshape(1, 2, 2, 2), hole.reshape(1, 1, 2, 2))
    assert_close(layer_out.flatten(2).transpose(1, 2)[0, 2:], expected, rtol=1e-6, atol=1e-7)


def test_generation_gradients_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    query = (torch.rand(2, 6, 3, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    match = (torch.rand(2, 6, 3, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    dmax = (torch.rand(2, 6, generator=g, dtype=torch.float64) + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(A.generate_sequence, (query, match, dmax))
    # the hand-written backward agrees with autograd through the plain recursion
    w = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    fast = torch.autograd.grad((A.generate_sequence(query, match, dmax) * w).sum(), (query, match, dmax))
    ref = torch.autograd.grad((A.generate_sequence_autograd(query, match, dmax) * w).sum(), (query, match, dmax))
    for a, b in zip(fast, ref):
        assert_close(a, b)
    assert fast[0].abs().sum() > 0  # the hole patches themselves get gradient through Dad


def test_sca_layer_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    feat = (torch.rand(2, 3, 3, 3, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    hole = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    hole[0, 0, 1:, 1:] = 1
    hole[1, 0, :2, :] = 1
    layer = A.SemanticCoherentAttention()
    assert torch.autograd.gradcheck(lambda f: layer(f, hole), (feat,))


# ---------------------------------------------------------------- known regions pass through
def test_known_region_features_pass_through_unchanged():
    g = torch.Generator().manual_seed(5)
    high = torch.rand(2, 8, 4, 4, generator=g)
    low = torch.rand(2, 5, 8, 8, generator=g)
    high_hole = torch.zeros(2, 1, 4, 4)
    high_hole[:, :, 1:3, 1:4] = 1
    low_hole = F.interpolate(high_hole, scale_factor=2, mode="nearest")
    module = A.CrossScaleCoherentAttention(has_prev=False)
    high_out, low_out, score = module(high, high_hole, low, low_hole, None)
    known_h = high_hole.expand_as(high) < 0.5
    known_l = low_hole.expand_as(low) < 0.5
    assert torch.equal(high_out[known_h], high[known_h])  # SCA: only hole patches are generated
    assert torch.equal(low_out[known_l], low[known_l])  # Eq. 6: only holes are reconstructed
    assert not torch.allclose(high_out[~known_h], high[~known_h])
    assert not torch.allclose(low_out[~known_l], low[~known_l])
    # scores are distributions over known keys only (key-major layout)
    assert_close(score.sum(1), torch.ones(2, 16))
    assert score[:, high_hole.flatten(1)[0] > 0.5].abs().max() == 0


# ---------------------------------------------------------------- cross-scale reconstruction
def test_cross_scale_reconstruction_equals_explicit_eq3_to_eq6():
    g = torch.Generator().manual_seed(6)
    h = w = 3
    k, scale = 3, 10.0
    high = torch.rand(1, 4, h, w, generator=g, dtype=torch.float64)
    low = torch.rand(1, 2, 2 * h, 2 * w, generator=g, dtype=torch.float64)
    high_hole = torch.tensor([[0, 1, 1], [0, 1, 0], [0, 0, 0]], dtype=torch.float64).view(1, 1, h, w)
    low_hole = F.interpolate(high_hole, scale_factor=2, mode="nearest")
    sim = A.smooth_similarity(A.similarity(high), h, w, k)
    score = A.attention_scores(sim, high_hole.flatten(1) < 0.5, scale)
    out = A.reconstruct_low(score, low, low_hole)

    pos = [(y, x) for y in range(h) for x in range(w)]
    vec = {p: high[0, :, p[0], p[1]] for p in pos}

    def cos(a, b):
        return float(torch.dot(a, b) / (a.norm() * b.norm()))

    for qy, qx in pos:
        logits = {}
        for key in pos:
            if high_hole[0, 0, key[0], key[1]] > 0.5:
                continue
            total = 0.0  # Eq. 4: k x k window of query positions, zero outside, divided by k*k
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    y, x = qy + dy, qx + dx
                    if 0 <= y < h and 0 <= x < w:
                        total += cos(vec[(y, x)], vec[key])  # Eq. 3
            logits[key] = scale * total / (k * k)
        z = sum(torch.exp(torch.tensor(v)) for v in logits.values())
        recon = torch.zeros(2, 2, 2, dtype=torch.float64)
        for key, v in logits.items():  # Eq. 6: weighted sum of the lower level's 2x2 sibling patches
            recon += torch.exp(torch.tensor(v)) / z * low[0, :, 2 * key[0]:2 * key[0] + 2, 2 * key[1]:2 * key[1] + 2]
        expected = recon if high_hole[0, 0, qy, qx] > 0.5 else low[0, :, 2 * qy:2 * qy + 2, 2 * qx:2 * qx + 2]
        assert_close(out[0, :, 2 * qy:2 * qy + 2, 2 * qx:2 * qx + 2], expected)


def test_previous_score_upsampling_and_lambda_blend():
    g = torch.Generator().manual_seed(7)
    prev = torch.softmax(torch.randn(1, 4, 4, generator=g), dim=1)  # key-major, 2x2 grid
    known = torch.ones(1, 16, dtype=torch.bool)
    known[0, 5] = False
    up = A.upsample_scores(prev, 4, 4, known)
    assert_close(up.sum(1), torch.ones(1, 16))
    assert up[0, 5].abs().max() == 0
    # query (0, 1) on the fine grid has parent query 0; key (2, 3) has parent key (1, 1) = 3
    assert up[0, 2 * 4 + 3, 1] == pytest.approx(float(prev[0, 3, 0] / 4 / (1 - prev[0, 0, 0] / 4)), rel=1e-5)
    module = A.CrossScaleCoherentAttention(has_prev=True)
    assert module.lambda_logit is not None and A.CrossScaleCoherentAttention(has_prev=False).lambda_logit is None


# ---------------------------------------------------------------- whole model
@pytest.mark.parametrize("res", [False, True])
@pytest.mark.parametrize("att", [False, True])
def test_each_variant_trains_with_falling_loss(res, att):
    torch.manual_seed(0)
    model = build_ccsa({"base": 8, "max_width": 16, "first_stride": 2, "res": res, "att": att}, {}, NO_PERCEPTUAL)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(4, 3, 32, 32, generator=g)
    mask = (F.interpolate(torch.rand(4, 1, 4, 4, generator=g), size=32, mode="nearest") > 0.6).float()
    opt = torch.optim.Adam(model.generator_parameters(), lr=1e-3, betas=(0.9, 0.999))
    losses = []
    for _ in range(20):
        out = model.generator_losses(image, mask)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(float(out.total.detach()))
    assert set(out.logs) == {"valid", "hole", "tv"}
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.85 * first, losses


def test_generator_losses_with_perceptual_backbone():
    torch.manual_seed(0)
    model = build_ccsa({"base": 8, "max_width": 16}, {"weights": {"style": 1.0}},
                       BuildContext(perceptual={"backbone": "random-vgg16"}))
    image = torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 10:26] = 1
    out = model.generator_losses(image, mask)
    assert set(out.logs) == {"valid", "hole", "tv", "perceptual", "style"}
    assert out.pred.shape == image.shape and torch.isfinite(out.total)
    out.total.backward()
    assert all(p.grad is not None for p in model.generator_parameters())
    assert model.discriminator is None


@pytest.mark.parametrize("size", [64, 128, 256])
@pytest.mark.parametrize("first_stride", [2, 4])  # paper-scale wiring (BB1 at H/2) and the small default
def test_output_shapes(size, first_stride):
    torch.manual_seed(0)
    model = CCSANet(**{**DEFAULT_ARGS, "first_stride": first_stride}).eval()
    g = torch.Generator().manual_seed(size)
    image = torch.rand(1, 3, size, size, generator=g)
    mask = (F.interpolate(torch.rand(1, 1, 8, 8, generator=g), size=size, mode="nearest") > 0.6).float()
    with torch.no_grad():
        pred = model(image * (1 - mask), mask)
    assert pred.shape == (1, 3, size, size) and torch.isfinite(pred).all()
    assert model.inpaint(image, mask).shape == (1, 3, size, size)


def test_runs_under_bf16_autocast():
    torch.manual_seed(0)
    model = CCSANet(**{**DEFAULT_ARGS, "first_stride": 2})
    image = torch.rand(2, 3, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 4:20, 8:24] = 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.generator_losses(image, mask)
    out.total.backward()
    assert torch.isfinite(out.total.float())


def test_bad_size_is_a_clear_error():
    model = CCSANet(**{**DEFAULT_ARGS, "first_stride": 2})
    with pytest.raises(InpaintBenchError, match="divisible by 16"):
        model(torch.rand(1, 3, 40, 40), torch.zeros(1, 1, 40, 40))


def sra_params(widths: list[int], reduction: int = 4) -> int:
    total = 0
    for cin, cout in zip(widths[:-1], widths[1:]):
        hidden = max(cout // reduction, 1)
        total += cin * cout + (cout * hidden + hidden) + (hidden * cout + cout)  # proj + 2-layer MLP
    return total


def build_meta(args: dict) -> CCSANet:
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        return CCSANet(**args)


def test_parameter_counts_and_switches():
    default = build_meta(DEFAULT_ARGS)
    paper = build_meta(PAPER_SCALE_ARGS)
    assert default.widths == [8, 16, 32, 32]
    assert paper.widths == [128, 256, 512, 896]
    assert n_params(default) == 117_801
    assert n_params(paper) == 99_989_877  # Table 3: 100 M
    for args in (DEFAULT_ARGS, PAPER_SCALE_ARGS):
        counts = {(r, a): n_params(build_meta({**args, "res": r, "att": a})) for r in (0, 1) for a in (0, 1)}
        widths = build_meta(args).widths
        # ATT adds the two trainable lambdas of Eq. 5 (the deepest CCSA has no previous score)
        assert counts[(0, 1)] - counts[(0, 0)] == 2 and counts[(1, 1)] - counts[(1, 0)] == 2
        # RES adds the three SRA modules
        assert counts[(1, 0)] - counts[(0, 0)] == sra_params(widths)
        assert counts[(1, 1)] - counts[(0, 1)] == sra_params(widths)
