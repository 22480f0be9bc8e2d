"""EdgeConnect (arch `edgeconnect`) and RFR (arch `rfr`): staged training, Canny on the known
region, KCA, recurrences, shapes and parameter counts. CPU, one thread, small sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import canny

from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import registry
from inpaintbench.models.base import BuildContext, count_parameters
from inpaintbench.models.edgeconnect import stage_for_epoch
from inpaintbench.models.layers.edge_canny import rgb_to_gray
from inpaintbench.models.layers.kca import KnowledgeConsistentAttention
from inpaintbench.models.rfr import RFRNet
from inpaintbench.train.trainer import train_step

from model_batches import NO_BACKBONE, box_mask, one_thread, photo_batch  # noqa: F401 (autouse fixture)

# full-width random VGG16 (model_batches.RANDOM_VGG is the 0.25-width one)
RANDOM_VGG = BuildContext(perceptual={"backbone": "random-vgg16"})


def train_steps(model, image, mask, steps, lr=1e-3, d_lr=1e-4):
    """The trainer's step (generator, then discriminator), repeated on a fixed batch."""
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=lr, betas=(0.5, 0.9))
    opt_d = (torch.optim.Adam(model.discriminator.parameters(), lr=d_lr, betas=(0.5, 0.9))
             if model.discriminator is not None else None)
    history = []
    for _ in range(steps):
        out, d = train_step(model, image, mask, opt_g, opt_d)
        logs = {"loss": float(out.total.detach()), **out.logs}
        if d is not None:
            logs.update({f"d_{k}": v for k, v in d.logs.items()})
        history.append(logs)
    return history


def falls(values, k=5):
    return float(np.mean(values[-k:])) < float(np.mean(values[:k]))


def state_copy(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def small_edgeconnect(ctx=NO_BACKBONE, **kw):
    args = {"base": 4, "disc_base": 4, "res_blocks": 8, "sigma": 1.0, **kw}
    return registry.build("edgeconnect", args, {}, ctx)


# ---- EdgeConnect -----------------------------------------------------------------------------

def test_both_architectures_registered():
    assert {"edgeconnect", "rfr"} <= set(registry.architectures())


def test_g1_input_edges_come_from_the_known_region_only():
    model = small_edgeconnect()
    image, mask = photo_batch(64), box_mask(64)
    g1_in, edges = model.edge_inputs(image * (1 - mask), mask)
    assert g1_in.shape == (2, 3, 64, 64)
    hole = mask.bool().expand_as(edges)
    assert edges[hole].abs().sum() == 0 and g1_in[:, 1:2][hole].abs().sum() == 0
    assert bool((g1_in[:, :1][hole] == 1).all())  # grey holes filled with 1, as the official EdgeModel
    assert edges[~hole].sum() > 20  # the photos do have edges in the known region
    # independent check: scikit-image's canny restricted to the known region
    gray = rgb_to_gray(image * (1 - mask))[0, 0].numpy()
    ref = canny(gray, sigma=1.0, mask=mask[0, 0].numpy() < 0.5)
    assert np.array_equal(edges[0, 0].numpy() > 0.5, ref)
    # what is painted in the hole cannot change G1's input
    noisy = image * (1 - mask) + torch.rand_like(image) * mask
    g1_noisy, _ = model.edge_inputs(noisy, mask)
    assert torch.equal(g1_noisy, g1_in)
    # the full-image edge map (D1's "real" sample) does have edges in the hole
    from inpaintbench.models.layers.edge_canny import full_edges
    assert full_edges(rgb_to_gray(image), 1.0)[hole].sum() > 0


def test_stage_schedule():
    assert [stage_for_epoch(e, 4, 0.5, 0.0) for e in range(4)] == ["edge", "edge", "image", "image"]
    assert [stage_for_epoch(e, 4, 0.25, 0.25) for e in range(4)] == ["edge", "image", "image", "joint"]
    assert [stage_for_epoch(e, 2, 0.9, 0.0) for e in range(2)] == ["edge", "image"]  # both stages run
    assert [stage_for_epoch(e, 3, 0.0, 0.0) for e in range(3)] == ["image"] * 3
    with pytest.raises(InpaintBenchError):
        small_edgeconnect(g1_fraction=1.5)
    with pytest.raises(InpaintBenchError):
        registry.build("edgeconnect", {}, {"weights": {"tv": 1.0}}, NO_BACKBONE)


def test_edgeconnect_trains_g1_then_g2_with_g1_frozen():
    model = small_edgeconnect(RANDOM_VGG, g1_fraction=0.5)
    image, mask = photo_batch(32), box_mask(32)
    d1, d2 = model.discriminator["edge"], model.discriminator["image"]

    model.on_epoch_start(0, 4)
    assert model.stage == "edge"
    g2_before, d2_before = state_copy(model.g2), state_copy(d2)
    g1_before = state_copy(model.g1)
    hist1 = train_steps(model, image, mask, 20)
    assert set(hist1[0]) == {"loss", "edge_adv", "edge_fm", "stage", "d_edge"}
    assert falls([h["loss"] for h in hist1]), [round(h["loss"], 4) for h in hist1]
    assert falls([h["edge_fm"] for h in hist1])
    assert same_state(model.g2.state_dict(), g2_before) and same_state(d2.state_dict(), d2_before)
    assert not same_state(model.g1.state_dict(), g1_before)

    model.on_epoch_start(2, 4)
    assert model.stage == "image"
    g1_before, d1_before = state_copy(model.g1), state_copy(d1)
    g2_before = state_copy(model.g2)
    hist2 = train_steps(model, image, mask, 20)
    assert set(hist2[0]) == {"loss", "img_l1", "img_adv", "img_perceptual", "img_style", "stage", "d_image"}
    assert falls([h["loss"] for h in hist2]), [round(h["loss"], 4) for h in hist2]
    assert falls([h["img_l1"] for h in hist2])
    # G1 (including spectral-norm buffers) and D1 are frozen in stage 2
    assert same_state(model.g1.state_dict(), g1_before) and same_state(d1.state_dict(), d1_before)
    assert not same_state(model.g2.state_dict(), g2_before)
    assert all(p.grad is None for p in model.g1.parameters())


def test_edgeconnect_joint_stage_trains_both_generators_without_d1():
    model = small_edgeconnect(g1_fraction=0.25, joint_fraction=0.25)
    image, mask = photo_batch(32), box_mask(32)
    model.on_epoch_start(3, 4)
    assert model.stage == "joint"
    g1_before, d1_before = state_copy(model.g1), state_copy(model.discriminator["edge"])
    hist = train_steps(model, image, mask, 2)
    assert hist[-1]["stage"] == 3.0 and "d_image" in hist[-1] and "edge_fm" not in hist[-1]
    assert not same_state(model.g1.state_dict(), g1_before)
    assert same_state(model.discriminator["edge"].state_dict(), d1_before)


def edgeconnect_generator_count(cin, cout, b, blocks, block_bias=True):
    """Sec. 4.1 generator, counted by hand (weights + biases; the residual blocks' convs have no
    bias under spectral norm, as in knazeri/edge-connect's ResnetBlock)."""
    enc = cin * b * 49 + b + b * 2 * b * 16 + 2 * b + 2 * b * 4 * b * 16 + 4 * b
    mid = blocks * 2 * (4 * b * 4 * b * 9 + 4 * b * block_bias)
    dec = 4 * b * 2 * b * 16 + 2 * b + 2 * b * b * 16 + b + b * cout * 49 + cout
    return enc + mid + dec


def patchgan_count(cin, b):
    return 16 * (cin * b + b * 2 * b + 2 * b * 4 * b + 4 * b * 8 * b + 8 * b)  # SN convs, no bias


@pytest.mark.parametrize("args", [{}, {"base": 64, "disc_base": 64}])
def test_edgeconnect_parameter_counts(args):
    model = registry.build("edgeconnect", args, {}, NO_BACKBONE)
    b, db = args.get("base", 4), args.get("disc_base", 8)
    assert count_parameters(model.g1) == edgeconnect_generator_count(3, 1, b, 8, block_bias=False)
    assert count_parameters(model.g2) == edgeconnect_generator_count(4, 3, b, 8)
    assert count_parameters(model.discriminator) == patchgan_count(2, db) + patchgan_count(3, db)  # D2: RGB only
    expected = {4: 175_168, 64: 27_062_212}[b]  # small default / published size
    assert count_parameters(model) == expected


@pytest.mark.parametrize("size", [64, 256])
def test_edgeconnect_shapes(size):
    model = small_edgeconnect().eval()
    image, mask = torch.rand(1, 3, size, size), box_mask(size, 1)
    out = model.inpaint(image, mask)
    assert out.shape == (1, 3, size, size) and torch.isfinite(out).all()
    assert torch.equal(out * (1 - mask), image * (1 - mask))


# ---- RFR --------------------------------------------------------------------------------------

def naive_attention(feat, propagate):
    """Sec. 3.2 as the official Attention.py computes it, written with loops over pixels (reference
    for the batched KCA): keys normalised, raw queries, reconstruction from the normalised keys."""
    c, h, w = feat.shape[1:]
    f = feat[0].reshape(c, h * w)
    unit = (f + 1e-7) / (f + 1e-7).norm(dim=0, keepdim=True)
    sim = (f.T @ unit).reshape(h, w, h * w)              # [query y, query x, key]
    r = propagate // 2
    out = torch.zeros(c, h, w)
    for y in range(h):
        for x in range(w):
            acc = torch.zeros(h * w)
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        acc += sim[y + dy, x + dx]
            out[:, y, x] = unit @ torch.softmax(acc, 0)
    return out


def test_kca_matches_the_equations_and_the_lambda_blend():
    kca = KnowledgeConsistentAttention(6, propagate=3)
    feat = torch.randn(1, 6, 5, 4)
    plain, scores = kca(feat)
    attended_ref = naive_attention(feat, 3)
    expected = kca.combine(torch.cat([attended_ref[None], feat], 1))
    assert torch.allclose(plain, expected, atol=1e-5)
    prev = torch.softmax(torch.randn_like(scores), 1)
    valid = torch.ones(1, 1, 5, 4)
    with torch.no_grad():
        kca.ratio.fill_(1e7)   # λ → ∞: the previous scores no longer count
    same, _ = kca(feat, prev, valid)
    assert torch.allclose(same, plain, atol=1e-5)
    with torch.no_grad():
        kca.ratio.fill_(1.0)   # (λ score' + score_prev) / (λ + 1) with λ = 1
    mixed, mixed_scores = kca(feat, prev, valid)
    assert not torch.allclose(mixed, plain, atol=1e-4)
    assert torch.allclose(mixed_scores, 0.5 * scores + 0.5 * prev, atol=1e-6)
    # queries that were not valid in the previous recurrence ignore the previous scores
    _, fresh = kca(feat, prev, torch.zeros(1, 1, 5, 4))
    assert torch.allclose(fresh, scores, atol=1e-6)
    assert kca.ratio.requires_grad


def test_rfr_recurrences_grow_the_filled_area_and_change_the_output():
    model = RFRNet(base=4, recurrences=6).eval()
    image, mask = torch.rand(1, 3, 128, 128), torch.zeros(1, 1, 128, 128)
    mask[:, :, 16:112, 16:112] = 1   # a 96-pixel hole: 48 feature pixels at half resolution
    with torch.no_grad():
        feats, masks = model.recurrent_features(image * (1 - mask), mask)
    coverage = [float(m.mean()) for m in masks]
    assert len(feats) == 7 and all(a <= b for a, b in zip(coverage, coverage[1:])), coverage  # F⁰ + 6
    # each recurrence's two 7×7 partial convs move the hole border 6 feature pixels inwards
    assert coverage[0] < coverage[1] < coverage[2] < coverage[3] and coverage[-1] == 1.0, coverage
    assert all(torch.equal(f * (1 - m), torch.zeros_like(f)) for f, m in zip(feats, masks))
    # adaptive merging (Sec. 3.1.3, with F⁰ as the official code): a pixel first filled at
    # recurrence k is the mean of F^k..F^N
    merged, union = model.merge(feats, masks)
    assert torch.equal(union, torch.ones_like(union))
    first = [int(next(i for i, m in enumerate(masks) if m[0, 0, y, x] > 0)) for y, x in ((32, 32), (0, 0))]
    assert first == [4, 0]   # index 0 is the head's F⁰
    for (y, x), k in zip(((32, 32), (0, 0)), first):
        ref = torch.stack([f[0, :, y, x] for f in feats[k:]]).mean(0)
        assert torch.allclose(merged[0, :, y, x], ref, atol=1e-6)
    with torch.no_grad():
        outs = {r: model(image * (1 - mask), mask, recurrences=r) for r in (1, 3, 6)}
        default = model(image * (1 - mask), mask)
    assert not torch.allclose(outs[1], outs[3]) and not torch.allclose(outs[3], outs[6])
    assert torch.equal(default, outs[6])


def test_rfr_trains_with_falling_loss():
    model = registry.build("rfr", {"base": 4, "recurrences": 3}, {}, RANDOM_VGG)
    image, mask = photo_batch(32), box_mask(32)
    hist = train_steps(model, image, mask, 20, lr=2e-3)
    assert set(hist[0]) == {"loss", "valid", "hole", "tv", "perceptual", "style"}
    assert falls([h["loss"] for h in hist]), [round(h["loss"], 4) for h in hist]
    assert falls([h["hole"] for h in hist])


@pytest.mark.parametrize("size", [64, 256])
def test_rfr_shapes(size):
    model = RFRNet(base=4, recurrences=2).eval()
    image, mask = torch.rand(1, 3, size, size), box_mask(size, 1)
    out = model.inpaint(image, mask)
    assert out.shape == (1, 3, size, size) and torch.isfinite(out).all()


# 31,224,065: the official RFRNet() counted (jingyuanli001/RFR-Inpainting@e1cad6a)
@pytest.mark.parametrize("args,expected", [({}, 123_252), ({"base": 64, "recurrences": 6}, 31_224_065)])
def test_rfr_parameter_counts(args, expected):
    model = registry.build("rfr", args, {}, NO_BACKBONE)
    assert count_parameters(model) == expected
    # the recurrence count shares weights: it never changes the parameter count
    assert count_parameters(RFRNet(**{**args, "recurrences": 2})) == expected
