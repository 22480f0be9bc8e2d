"""CTSDG (arch `ctsdg`): shapes, the real training step, Bi-GFF and CFA against direct
computations, the multi-channel partial conv against its formula, the official key layout and the
published parameter counts. CPU, one thread."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import registry
from inpaintbench.models.base import count_parameters
from inpaintbench.models.layers.ctsdg_blocks import MSFA, BiGFF, region_affinity
from inpaintbench.models.layers.pconv_multichannel import MultiChannelPartialConv2d
from inpaintbench.train.trainer import train_step

from model_batches import NO_BACKBONE, RANDOM_VGG, box_mask, one_thread, photo_batch  # noqa: F401 (autouse fixture)


def test_registered():
    assert "ctsdg" in registry.architectures() and registry.is_learned("ctsdg")


@pytest.mark.parametrize("size", [64, 128, 256])
def test_shapes_and_composite(size):
    model = registry.build("ctsdg", {}, {}, NO_BACKBONE).eval()
    image, mask = torch.rand(1, 3, size, size), box_mask(size, 1)
    with torch.no_grad():
        out, proj_img, proj_edge = model.run(image * (1 - mask), mask)
    assert out.shape == proj_img.shape == (1, 3, size, size) and proj_edge.shape == (1, 1, size, size)
    assert float(out.min()) >= 0 and float(out.max()) <= 1     # tanh mapped to [0, 1]
    comp = model.inpaint(image, mask)
    assert torch.equal(comp * (1 - mask), image * (1 - mask))


def test_size_must_fit_depth():
    model = registry.build("ctsdg", {"depth": 4}, {}, NO_BACKBONE)
    with pytest.raises(InpaintBenchError, match="multiple of"):
        model(torch.rand(1, 3, 40, 40), box_mask(40, 1))


def test_hole_content_does_not_reach_the_output():
    model = registry.build("ctsdg", {}, {}, NO_BACKBONE).eval()
    image, mask = photo_batch(64, 1), box_mask(64, 1)
    noisy = image * (1 - mask) + torch.rand_like(image) * mask
    with torch.no_grad():
        assert torch.allclose(model(image, mask), model(noisy, mask), atol=1e-6)


def test_multichannel_partial_conv_matches_the_formula():
    torch.manual_seed(1)
    conv = MultiChannelPartialConv2d(3, 2, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 5, 6)
    mask = (torch.rand(1, 3, 5, 6) > 0.4).float()     # a different mask per channel
    with torch.no_grad():
        out, new = conv(x, mask)
    weight = conv.weight.detach()
    xp, mp = F.pad(x * mask, (1, 1, 1, 1)), F.pad(mask, (1, 1, 1, 1))
    for y in range(5):
        for xx in range(6):
            count = float(mp[0, :, y:y + 3, xx:xx + 3].sum())
            for o in range(2):
                raw = float((weight[o] * xp[0, :, y:y + 3, xx:xx + 3]).sum())
                want = raw * 27 / count if count > 0 else 0.0
                assert abs(float(out[0, o, y, xx]) - want) < 1e-4
                assert float(new[0, o, y, xx]) == (1.0 if count > 0 else 0.0)


def test_bigff_matches_a_hand_computation():
    torch.manual_seed(2)
    fuse = BiGFF(4, 4)
    with torch.no_grad():
        fuse.texture_gamma.fill_(0.7)
        fuse.structure_gamma.fill_(-1.3)
    t, s = torch.randn(2, 4, 6, 5), torch.randn(2, 4, 6, 5)
    out = fuse(t, s)
    energy = torch.cat([t, s], 1)
    conv_s, conv_t = fuse.structure_gate[0], fuse.texture_gate[0]
    g_s2t = torch.sigmoid(F.conv2d(energy, conv_s.weight, conv_s.bias, padding=1))
    g_t2s = torch.sigmoid(F.conv2d(energy, conv_t.weight, conv_t.bias, padding=1))
    t2 = t + 0.7 * g_s2t * s
    s2 = s - 1.3 * g_t2s * t2            # the structure update sees the updated texture feature
    assert torch.allclose(out, torch.cat([t2, s2], 1), atol=1e-6)
    # γ = 0 (the initial state) leaves both features unchanged
    assert torch.equal(BiGFF(4, 4)(t, s), torch.cat([t, s], 1))


def brute_force_ral(bg: torch.Tensor, fg_full: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """Sec. 3.3 region affinity with explicit loops: one image, rate 2."""
    fg = F.interpolate(fg_full, scale_factor=0.5, mode="bilinear", align_corners=True)[0]
    c, h, w = fg.shape
    fgp = F.pad(fg, (1, 1, 1, 1))
    keys = [fgp[:, y:y + 3, x:x + 3] for y in range(h) for x in range(w)]
    keys = [k / max(float(k.pow(2).sum().sqrt()), 1e-4) for k in keys]
    bgp = F.pad(bg[0], (1, 1, 1, 1))
    H, W = bg.shape[-2:]
    out = torch.zeros(bg.shape[1], H + 2, W + 2)
    for y in range(h):
        for x in range(w):
            query = fgp[:, y:y + 3, x:x + 3]
            scores = torch.stack([(k * query).sum() for k in keys])
            att = torch.softmax(scores * scale, 0).clamp(min=1e-8)
            for l, a in enumerate(att):
                ky, kx = divmod(l, w)
                patch = bgp[:, 2 * ky:2 * ky + 4, 2 * kx:2 * kx + 4]
                out[:, 2 * y:2 * y + 4, 2 * x:2 * x + 4] += a * patch
    return out[:, 1:-1, 1:-1][None] / 4


def test_cfa_region_affinity_matches_brute_force():
    torch.manual_seed(3)
    bg = torch.randn(2, 3, 8, 6)
    fg = torch.randn(2, 3, 8, 6)
    out = region_affinity(bg, fg, rate=2, softmax_scale=10.0)
    assert out.shape == bg.shape
    for i in range(2):
        ref = brute_force_ral(bg[i:i + 1], fg[i:i + 1])
        assert torch.allclose(out[i:i + 1], ref, atol=1e-5)


def test_msfa_weights_the_dilated_branches_by_a_pixel_softmax():
    torch.manual_seed(4)
    msfa = MSFA(4, 4)
    x = torch.randn(1, 4, 9, 9)
    w = msfa.weight_calc(x)
    assert torch.allclose(w.sum(1), torch.ones(1, 9, 9), atol=1e-6)
    branches = [F.relu(F.conv2d(x, getattr(msfa, f"dilated_conv_{i}")[0].weight,
                                getattr(msfa, f"dilated_conv_{i}")[0].bias, padding=d, dilation=d))
                for i, d in enumerate((1, 2, 4, 8))]
    assert torch.allclose(msfa(x), sum(w[:, i:i + 1] * b for i, b in enumerate(branches)), atol=1e-6)


def test_trains_with_falling_loss_through_train_step():
    torch.manual_seed(0)
    model = registry.build("ctsdg", {}, {}, RANDOM_VGG)
    image, mask = photo_batch(32, 2), box_mask(32, 2)
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=2e-3)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=2e-4)
    d_before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    hist, total, d_logs = [], [], None
    for _ in range(16):
        out, d = train_step(model, image, mask, opt_g, opt_d)
        hist.append({k: float(v) for k, v in out.logs.items()})  # logs are 0-d tensors (no per-step sync)
        total.append(float(out.total.detach()))
        d_logs = d.logs
    assert set(hist[0]) == {"hole", "valid", "adversarial", "intermediate", "perceptual", "style"}
    assert set(d_logs) == {"adversarial", "edge"}
    assert total[0] == pytest.approx(sum(CTSDG_W[k] * hist[0][k] for k in CTSDG_W), rel=1e-5)
    assert np.mean(total[-4:]) < np.mean(total[:4]), [round(t, 3) for t in total]
    assert np.mean([h["hole"] for h in hist[-4:]]) < np.mean([h["hole"] for h in hist[:4]])
    d_after = model.discriminator.state_dict()
    assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before if k.endswith("weight_orig"))


CTSDG_W = {"hole": 60.0, "valid": 10.0, "perceptual": 0.1, "style": 250.0, "adversarial": 0.1, "intermediate": 1.0}


def test_unknown_loss_weight_is_an_error():
    with pytest.raises(InpaintBenchError):
        registry.build("ctsdg", {}, {"weights": {"tv": 1.0}}, NO_BACKBONE)


# keys of the official checkpoint layout (Xiefan-Guo/CTSDG Generator / Discriminator state dicts)
OFFICIAL_GENERATOR_KEYS = [
    "ec_texture_1.conv.weight", "ec_texture_2.bn.running_var", "ec_structure_7.conv.weight",
    "dc_texture_1.conv.weight", "dc_structure_7.bn.weight",
    "structure_feature_projection.structure_resolver.conv1.weight",
    "texture_feature_projection.out_layer.0.bias", "bigff.structure_gate.0.weight", "bigff.texture_gamma",
    "fusion_layer1.0.weight", "cfa.msfa.dilated_conv_3.0.bias", "cfa.msfa.weight_calc.2.weight",
    "fusion_layer2.0.weight", "out_layer.0.weight",
]
OFFICIAL_DISCRIMINATOR_KEYS = [
    "texture_branch.conv1.0.weight_orig", "texture_branch.conv5.0.weight_v", "structure_branch.conv4.0.weight_u",
    "edge_detector.projection.1.running_mean", "edge_detector.res_layer.3.weight", "edge_detector.out_layer.0.bias",
]


def test_published_size_and_official_key_layout():
    model = registry.build("ctsdg", {"base": 64, "depth": 7, "disc_base": 64, "edge_mid": 16}, {}, NO_BACKBONE)
    # the official Generator() / Discriminator(3, 2) have 52,147,789 and 5,531,729 parameters
    # (counted by building the official modules; the issue's ≈ 52.1 M / 5.5 M)
    assert count_parameters(model.generator) == 52_147_789
    assert count_parameters(model.discriminator) == 5_531_729
    g_keys, d_keys = set(model.generator.state_dict()), set(model.discriminator.state_dict())
    assert set(OFFICIAL_GENERATOR_KEYS) <= g_keys and set(OFFICIAL_DISCRIMINATOR_KEYS) <= d_keys
    assert "ec_texture_1.bn.weight" not in g_keys     # the first encoder layer has no BN
    shapes = model.generator.state_dict()
    assert shapes["dc_texture_7.conv.weight"].shape == (512, 1024, 3, 3)
    assert shapes["dc_structure_1.conv.weight"].shape == (64, 66, 3, 3)
    assert shapes["out_layer.0.weight"].shape == (3, 192, 1, 1)
