"""RDN (arch `rdn`) and PSR-Net (arch `psr`): shapes, the real training step with falling loss,
RDN's dense connections / local feature fusion against explicit concatenation, PSR's cross
feature reconstruction against explicit loops, and the published parameter counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import registry
from inpaintbench.models.base import count_parameters
from inpaintbench.models.psr import (CrossFeatureReconstruction, cross_attention_scores, key_validity,
                                     psr_tv_loss, reconstruct)
from inpaintbench.models.rdn import RDB, RDN
from inpaintbench.train.trainer import train_step

from model_batches import NO_BACKBONE, RANDOM_VGG, box_mask, one_thread, photo_batch  # noqa: F401 (autouse fixture)


def run_steps(model, image, mask, steps, lr):
    opt = torch.optim.Adam(model.generator_parameters(), lr=lr)
    hist = []
    for _ in range(steps):
        out, d = train_step(model, image, mask, opt)
        assert d is None   # neither model has a discriminator
        hist.append({"loss": float(out.total.detach()), **out.logs})
    return hist


def test_registered():
    assert {"rdn", "psr"} <= set(registry.architectures())


# ---- RDN --------------------------------------------------------------------------------------

def test_rdb_dense_connections_and_local_fusion_match_explicit_concatenation():
    torch.manual_seed(1)
    block = RDB(g0=5, growth=3, layers=4)
    x = torch.randn(2, 5, 7, 6)
    feats = [x]
    for conv in block.convs:
        c = conv[0]
        assert c.in_channels == sum(f.shape[1] for f in feats)      # sees the input and every earlier layer
        feats.append(F.relu(F.conv2d(torch.cat(feats, 1), c.weight, c.bias, padding=1)))
    fused = F.conv2d(torch.cat(feats, 1), block.lff.weight, block.lff.bias)    # Eq. 4, 1×1
    assert block.lff.in_channels == 5 + 4 * 3
    assert torch.allclose(block(x), x + fused, atol=1e-6)                     # Eq. 5


def test_rdn_global_fusion_and_residual():
    torch.manual_seed(2)
    model = RDN(blocks=3, layers=2, growth=4, g0=6).eval()
    image, mask = torch.rand(1, 3, 16, 16), box_mask(16, 1)
    with torch.no_grad():
        inp = torch.cat([image * (1 - mask), mask], 1)
        f_m1 = model.sfe1(inp)
        x = model.sfe2(f_m1)
        local = []
        for rdb in model.rdbs:
            x = rdb(x)
            local.append(x)
        gff = model.gff[1](model.gff[0](torch.cat(local, 1)))
        want = model.out(gff + f_m1)
        assert torch.allclose(model(image, mask), want, atol=1e-6)
        # the hole content never reaches the network
        noisy = image * (1 - mask) + torch.rand_like(image) * mask
        assert torch.equal(model(noisy, mask), model(image, mask))


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("arch", ["rdn", "psr"])
def test_shapes(arch, size):
    model = registry.build(arch, {}, {}, NO_BACKBONE).eval()
    image, mask = torch.rand(2, 3, size, size), box_mask(size, 2)
    out = model.inpaint(image, mask)
    assert out.shape == (2, 3, size, size) and torch.isfinite(out).all()
    assert torch.equal(out * (1 - mask), image * (1 - mask))


def test_rdn_trains_with_falling_loss():
    model = registry.build("rdn", {}, {}, NO_BACKBONE)
    image, mask = photo_batch(32), box_mask(32)
    hist = run_steps(model, image, mask, 20, lr=2e-3)
    assert set(hist[0]) == {"loss", "l1"}
    assert np.mean([h["loss"] for h in hist[-5:]]) < np.mean([h["loss"] for h in hist[:5]]) * 0.8


def rdn_count(d, c, g, g0, cin=4):
    rdb = sum((g0 + i * g) * g * 9 + g for i in range(c)) + (g0 + c * g) * g0 + g0
    return (cin * g0 * 9 + g0) + (g0 * g0 * 9 + g0) + d * rdb + (d * g0 * g0 + g0) + (g0 * g0 * 9 + g0) + (g0 * 3 * 9 + 3)


@pytest.mark.parametrize("args", [{}, {"blocks": 16, "layers": 8, "growth": 64, "g0": 64}])
def test_rdn_parameter_counts(args):
    model = registry.build("rdn", args, {}, NO_BACKBONE)
    full = {"blocks": 2, "layers": 3, "growth": 8, "g0": 16, **args}
    n = rdn_count(full["blocks"], full["layers"], full["growth"], full["g0"])
    assert count_parameters(model) == n
    if args:
        assert n == 21_976_259   # the paper's D16 C8 G64 at scale 1 (the SR model's ≈ 22 M less its up-sampler)


def test_rdn_rejects_loss_weights():
    with pytest.raises(InpaintBenchError):
        registry.build("rdn", {}, {"weights": {"l1": 2.0}}, NO_BACKBONE)


# ---- PSR-Net ----------------------------------------------------------------------------------

def loop_scores(x_hi: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """a(q, l) written with loops: [L, h, w] for one image."""
    c, h, w = x_hi.shape[1:]
    xp = F.pad(x_hi[0], (1, 1, 1, 1))
    patches = [xp[:, y:y + 3, x:x + 3] for y in range(h) for x in range(w)]
    keys = [p / max(float(p.pow(2).sum().sqrt()), 1e-4) for p in patches]
    corr = torch.zeros(h * w, h, w)
    for y in range(h):
        for x in range(w):
            for l, k in enumerate(keys):
                corr[l, y, x] = (patches[y * w + x] * k).sum()
    summed = torch.zeros_like(corr)
    for y in range(h):
        for x in range(w):
            ys, xs = slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2)
            n_in = corr[:, ys, xs].shape[1] * corr[:, ys, xs].shape[2]
            summed[:, y, x] = corr[:, ys, xs].sum((1, 2)) * 9 / n_in   # avg-pool over in-image cells × 9
    return torch.softmax(summed * scale, 0)


def loop_reconstruct(x_lo: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    c, h, w = x_lo.shape[1:]
    xp = F.pad(x_lo[0], (1, 1, 1, 1))
    out = torch.zeros(c, h + 2, w + 2)
    for y in range(h):
        for x in range(w):
            for l in range(h * w):
                ky, kx = divmod(l, w)
                out[:, y:y + 3, x:x + 3] += att[l, y, x] * xp[:, ky:ky + 3, kx:kx + 3]
    return out[:, 1:-1, 1:-1]


def test_cross_feature_reconstruction_matches_explicit_loops():
    torch.manual_seed(3)
    x_lo, x_hi = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    att = cross_attention_scores(x_hi, 10.0)
    y = reconstruct(x_lo, att)
    for i in range(2):
        ref_att = loop_scores(x_hi[i:i + 1])
        assert torch.allclose(att[i], ref_att, atol=1e-5)
        assert torch.allclose(y[i], loop_reconstruct(x_lo[i:i + 1], ref_att), atol=1e-4)
    # the reconstruction takes its content from the *lower-level* feature only
    assert torch.allclose(reconstruct(torch.zeros_like(x_lo), att), torch.zeros_like(x_lo))


def test_cfr_blends_the_previous_stage_scores_on_its_valid_keys():
    torch.manual_seed(4)
    cfr = CrossFeatureReconstruction(8)
    x_lo, x_hi = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    mask = torch.ones(1, 8, 4, 4)
    mask[:, :, 0, 0] = 0
    valid = key_validity(mask, (4, 4))
    # keys whose zero-padded 3×3 patch touches the border or the invalid corner are invalid
    assert valid.shape == (1, 16) and valid[0].nonzero().flatten().tolist() == [1 * 4 + 2, 2 * 4 + 1, 2 * 4 + 2]
    _, state = cfr.attend(x_lo, x_hi, mask)
    prev = {"scores": torch.softmax(torch.randn(1, 16, 4, 4), 1), "valid": valid}
    y, state2 = cfr.attend(x_lo, x_hi, mask, prev)
    fresh = cross_attention_scores(x_hi)
    v = valid[:, :, None, None]
    want = (prev["scores"] * v + fresh * (1 + 1e-7)) / (v + 1 + 1e-7)
    assert torch.allclose(state2["scores"], want, atol=1e-6)
    assert torch.allclose(y, reconstruct(x_lo, want), atol=1e-5)
    full, _ = cfr(x_lo, x_hi, mask, prev)
    assert full.shape == x_hi.shape


def test_psr_stages_share_their_layers_and_all_run():
    model = registry.build("psr", {}, {}, NO_BACKBONE).eval()
    calls = []
    hooks = [getattr(model, name).register_forward_hook(lambda m, i, o, n=name: calls.append(n))
             for name in ("pconv11", "pconv12", "u_pconv10", "pconv23", "pconv35", "cfr")]
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64), box_mask(64, 1))
    for h in hooks:
        h.remove()
    counts = {n: calls.count(n) for n in set(calls)}
    assert counts == {"pconv11": 3, "pconv12": 3, "u_pconv10": 3, "pconv23": 2, "pconv35": 1, "cfr": 2}


def test_psr_tv_loss_formula():
    comp = torch.rand(1, 3, 6, 6)
    hole = torch.zeros(1, 1, 6, 6)
    hole[:, :, 2, 2] = 1
    region = torch.zeros(1, 1, 6, 6)
    region[:, :, 1:4, 1:4] = 1
    x = comp * region
    want = (x[..., 1:] - x[..., :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    assert torch.allclose(psr_tv_loss(comp, hole), want)


def test_psr_trains_with_falling_loss():
    model = registry.build("psr", {}, {}, RANDOM_VGG)
    image, mask = photo_batch(32), box_mask(32)
    hist = run_steps(model, image, mask, 16, lr=2e-3)
    assert set(hist[0]) == {"loss", "l1", "hole", "tv", "perceptual", "style"}
    assert np.mean([h["loss"] for h in hist[-4:]]) < np.mean([h["loss"] for h in hist[:4]])
    assert np.mean([h["hole"] for h in hist[-4:]]) < np.mean([h["hole"] for h in hist[:4]])


@pytest.mark.parametrize("args,expected", [({}, 114_446), ({"base": 64}, 28_825_123)])
def test_psr_parameter_counts(args, expected):
    model = registry.build("psr", args, {}, NO_BACKBONE)
    assert count_parameters(model) == expected
    if args:
        # CCSA Table 3's "110" for PSR is this count of float32 weights in MiB
        assert round(expected * 4 / 2 ** 20) == 110
