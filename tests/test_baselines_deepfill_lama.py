"""DeepFill v2 (gated conv, contextual attention, SN-PatchGAN) and LaMa-Fourier (FFC) baselines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import deepfill_v2, lama
from inpaintbench.models.base import BuildContext, count_parameters
from inpaintbench.models.layers.contextual_attention import ContextualAttention, propagate_scores
from inpaintbench.models.layers.ffc import FFC, FourierUnit, SpectralTransform
from inpaintbench.models.layers.gated_conv import GatedConv2d
from inpaintbench.models.layers.patch_discriminators import NLayerPatchDiscriminator, SNPatchGAN
from inpaintbench.models.registry import build


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # smooth images (low-frequency noise upsampled) so that the hole is predictable from context
    image = F.interpolate(torch.rand(n, 3, size // 8, size // 8, generator=gen), size=(size, size),
                          mode="bilinear", align_corners=False)
    mask = torch.zeros(n, 1, size, size)
    for i in range(n):
        y, x = torch.randint(0, size // 2, (2,), generator=gen).tolist()
        mask[i, :, y:y + size // 3, x:x + size // 3] = 1
    return image, mask


# ---------------------------------------------------------------- gated convolution (Sec. 3.1)

def test_gated_conv_equals_feature_activation_times_sigmoid_gate():
    torch.manual_seed(0)
    layer = GatedConv2d(3, 5, kernel=3, stride=2, dilation=1, activation="elu")
    x = torch.randn(2, 3, 9, 9)
    w_f, w_g = layer.conv.weight[:5], layer.conv.weight[5:]
    b_f, b_g = layer.conv.bias[:5], layer.conv.bias[5:]
    feature = F.conv2d(x, w_f, b_f, stride=2, padding=1)
    gating = F.conv2d(x, w_g, b_g, stride=2, padding=1)
    expected = F.elu(feature) * torch.sigmoid(gating)
    torch.testing.assert_close(layer(x), expected)
    dilated = GatedConv2d(3, 4, kernel=3, dilation=4, activation="none")
    raw = F.conv2d(x, dilated.conv.weight, dilated.conv.bias, padding=4, dilation=4)
    torch.testing.assert_close(dilated(x), raw[:, :4] * torch.sigmoid(raw[:, 4:]))


# ------------------------------------------------------- contextual attention (DeepFill v1 Sec. 3)

@pytest.mark.parametrize("rate,size", [(1, 40), (2, 64)])
def test_contextual_attention_copies_the_matching_known_patch(rate, size):
    """The hole's foreground features equal those of a known region shifted by `offset`; the
    background holds garbage (zeros) in the hole. Attention must rebuild the hole from the
    known source region, i.e. out[hole] == features[hole - offset]."""
    gen = torch.Generator().manual_seed(1)
    c = 8
    feats = torch.randn(1, c, size, size, generator=gen)
    h0, h1 = size - 12, size - 8  # hole rows/cols [h0, h1)
    r0 = size // 2  # copy region [r0, size) x [r0, size) around the hole
    offset = r0
    feats[..., r0:, r0:] = feats[..., :size - r0, :size - r0]  # region = exact copy of the source
    hole = torch.zeros(1, 1, size, size)
    hole[..., h0:h1, h0:h1] = 1
    fg = feats.clone()
    bg = feats * (1 - hole)  # missing content: zeros
    att = ContextualAttention(ksize=3, rate=rate, fuse_k=3, softmax_scale=10.0)
    out = att(fg, bg, hole)
    expected = feats[..., h0 - offset:h1 - offset, h0 - offset:h1 - offset]
    assert expected.abs().mean() > 0.5  # not trivially zero
    torch.testing.assert_close(out[..., h0:h1, h0:h1], expected, atol=1e-4, rtol=1e-4)


def test_attention_propagation_sums_scores_along_coherent_shifts():
    """Step 2: s'(fg, bg) = Σ_i s(fg + i, bg + i), left-right then top-down, zero outside."""
    h, w, k = 3, 4, 3
    s = torch.randn(1, h * w, h * w, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    s5 = s.view(h, w, h, w)  # (y_bg, x_bg, y_fg, x_fg)

    def at(t, yb, xb, yf, xf):
        inside = 0 <= yb < h and 0 <= xb < w and 0 <= yf < h and 0 <= xf < w
        return t[yb, xb, yf, xf] if inside else 0.0

    lr = torch.zeros_like(s5)
    for yb, xb, yf, xf in np.ndindex(h, w, h, w):
        lr[yb, xb, yf, xf] = sum(at(s5, yb, xb + i, yf, xf + i) for i in (-1, 0, 1))
    td = torch.zeros_like(s5)
    for yb, xb, yf, xf in np.ndindex(h, w, h, w):
        td[yb, xb, yf, xf] = sum(at(lr, yb + j, xb, yf + j, xf) for j in (-1, 0, 1))
    torch.testing.assert_close(propagate_scores(s, h, w, k), td.reshape(1, h * w, h * w))


def test_contextual_attention_uses_each_samples_own_mask():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 6, 16, 16, generator=gen)
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, :, 2:8, 2:8] = 1
    masks[1, :, 6:14, 4:16] = 1
    att = ContextualAttention(rate=2)
    together = att(feats, feats, masks)
    alone = torch.cat([att(feats[i:i + 1], feats[i:i + 1], masks[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    # the check has teeth: sample 1 with sample 0's mask (the original code's batch-wide mask)
    # gives a different result
    wrong = att(feats[1:2], feats[1:2], masks[0:1])
    assert (wrong - alone[1:2]).abs().max() > 1e-2
    # and no weight ever goes to a background patch that touches this sample's hole
    _, attn = att(feats, feats, masks, return_attention=True)
    hole_cells = F.unfold(F.adaptive_max_pool2d(masks, (8, 8)), 3, padding=1).amax(1) > 0  # (2, 64)
    assert float(attn.masked_select(hole_cells[:, :, None].expand_as(attn)).abs().max()) == 0.0


def test_deepfill_batch_equals_samples_processed_alone():
    torch.manual_seed(0)
    model = deepfill_v2.DeepFillV2(**deepfill_v2.SMALL_ARGS).eval()
    image, _ = _batch(2, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 4:30, 4:30] = 1
    mask[1, :, 30:60, 20:50] = 1
    with torch.no_grad():
        together = model(image * (1 - mask), mask)
        alone = torch.cat([model(image[i:i + 1] * (1 - mask[i:i + 1]), mask[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------- FFC (LaMa Sec. 3.1, Chi et al.)

def _numpy_fourier_unit(x: np.ndarray, unit: FourierUnit) -> np.ndarray:
    """Sec. 3.1 steps a-d, written directly with numpy (BN in eval mode); real and imaginary
    parts interleaved per channel as in advimman/lama's FourierUnit."""
    h, w = x.shape[-2:]
    spec = np.fft.rfft2(x, axes=(-2, -1), norm="ortho")
    z = np.stack([spec.real, spec.imag], axis=2).reshape(x.shape[0], -1, h, spec.shape[-1])  # re0, im0, re1, …
    weight = unit.conv.weight.detach().double().numpy()[:, :, 0, 0]
    z = np.einsum("oc,nchw->nohw", weight, z)
    bn = unit.bn
    mean, var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    gamma, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    z = (z - mean[:, None, None]) / np.sqrt(var[:, None, None] + bn.eps) * gamma[:, None, None] + beta[:, None, None]
    z = np.maximum(z, 0)
    return np.fft.irfft2(z[:, 0::2] + 1j * z[:, 1::2], s=(h, w), axes=(-2, -1), norm="ortho")


def test_fourier_unit_matches_numpy_fft():
    torch.manual_seed(3)
    unit = FourierUnit(2, 2).double()
    with torch.no_grad():
        unit.bn.running_mean.uniform_(-0.2, 0.2)
        unit.bn.running_var.uniform_(0.5, 2.0)
        unit.bn.weight.uniform_(0.5, 1.5)
        unit.bn.bias.uniform_(-0.1, 0.3)
    unit.eval()
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)  # odd height, even width
    got = unit(x).detach().numpy()
    np.testing.assert_allclose(got, _numpy_fourier_unit(x.numpy(), unit), atol=1e-10, rtol=1e-8)


def test_spectral_transform_with_zero_frequency_path_is_its_residual_only():
    """With the frequency-domain 1×1 conv zeroed (and BN shift 0), the Fourier unit outputs 0 and
    the spectral transform reduces to expand(reduce(x)); with it on, one pixel changes the
    output everywhere (image-wide receptive field)."""
    torch.manual_seed(4)
    st = SpectralTransform(4, 4).eval()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        st.fu.conv.weight.zero_()
        assert float(st.fu(st.reduce(x)).abs().max()) == 0.0
        torch.testing.assert_close(st(x), st.expand(st.reduce(x)))
        st.fu.conv.weight.normal_()
        st.expand.weight.normal_()
        y = st.fu(st.reduce(x))
        x2 = x.clone()
        x2[..., 0, 0] += 5.0
        changed = (st.fu(st.reduce(x2)) - y).abs().amax(1)[0]
    assert bool((changed > 1e-6).all()), "the Fourier unit must have a global receptive field"


def test_ffc_channel_split_and_paths():
    ffc = FFC(16, 16, 3, ratio_gin=0.75, ratio_gout=0.75, padding=1)
    assert ffc.in_split == (4, 12) and ffc.out_split == (4, 12)
    x_l, x_g = torch.randn(1, 4, 8, 8), torch.randn(1, 12, 8, 8)
    y_l, y_g = ffc((x_l, x_g))
    assert y_l.shape == (1, 4, 8, 8) and y_g.shape == (1, 12, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(y_l, ffc.l2l(x_l) + ffc.g2l(x_g))
        torch.testing.assert_close(y_g, ffc.l2g(x_l) + ffc.g2g(x_g))
    local_only = FFC(8, 8, 3, 0.0, 0.0, padding=1)
    assert local_only.l2g is None and local_only.g2g is None and local_only.g2l is None


# -------------------------------------------------------------------------- discriminators

def test_patch_discriminators_shapes_and_spectral_norm():
    sn = SNPatchGAN(in_channels=4, base=8)
    assert sn(torch.rand(2, 4, 64, 64)).shape == (2, 32, 1, 1)
    assert sn(torch.rand(1, 4, 256, 256)).shape == (1, 32, 4, 4)
    convs = [m for m in sn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(hasattr(m, "parametrizations") for m in convs)
    nl = NLayerPatchDiscriminator(3, ndf=8, n_layers=3)
    logits, feats = nl(torch.rand(2, 3, 64, 64))
    assert logits.shape[:2] == (2, 1) and len(feats) == 4


# ------------------------------------------------------------------------- whole models

def _build(arch: str, args: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(arch, args, {}, BuildContext(seed=0))


@pytest.mark.parametrize("arch,args", [("deepfill_v2", deepfill_v2.SMALL_ARGS), ("lama_fourier", lama.SMALL_ARGS)])
@pytest.mark.parametrize("size", [64, 256])
def test_model_output_shapes(arch, args, size):
    model = _build(arch, args).eval()
    n = 2 if size == 64 else 1
    image, mask = _batch(n, size)
    with torch.no_grad():
        pred = model(image * (1 - mask), mask)
        out = model.inpaint(image, mask)
    assert pred.shape == (n, 3, size, size) and bool(torch.isfinite(pred).all())
    assert float(pred.min()) >= 0.0 and float(pred.max()) <= 1.0
    torch.testing.assert_close(out * (1 - mask), image * (1 - mask))


@pytest.mark.parametrize("arch,args,term", [
    ("deepfill_v2", deepfill_v2.SMALL_ARGS, "l1_coarse"),
    ("lama_fourier", lama.SMALL_ARGS, "hrf_perceptual"),
])
def test_model_trains_with_falling_generator_loss(arch, args, term):
    """The trainer's loop (generator step, then discriminator step) on one fixed batch."""
    model = _build(arch, args).train()
    assert model.discriminator is not None
    disc_ids = {id(p) for p in model.discriminator.parameters()}
    gen_params = list(model.generator_parameters())
    assert gen_params and not disc_ids & {id(p) for p in gen_params}
    g_opt = torch.optim.Adam(gen_params, lr=2e-3, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    image, mask = _batch(4, 32, seed=5)
    totals, recon = [], []
    for _ in range(25):
        d_opt.zero_grad()  # grads set to None: the generator step must leave them None
        out = model.generator_losses(image, mask)
        g_opt.zero_grad()
        out.total.backward()
        assert all(p.grad is None for p in model.discriminator.parameters())
        g_opt.step()
        d = model.discriminator_losses(image, mask, out.pred.detach())
        d_opt.zero_grad()
        d.total.backward()
        d_opt.step()
        assert all(np.isfinite(v) for v in {**out.logs, **d.logs}.values())
        totals.append(float(out.total.detach()))
        recon.append(out.logs[term])
    assert np.mean(totals[-3:]) < 0.8 * np.mean(totals[:3]), totals
    assert np.mean(recon[-3:]) < 0.8 * np.mean(recon[:3]), recon


def test_log_keys():
    image, mask = _batch(2, 32)
    df = _build("deepfill_v2", deepfill_v2.SMALL_ARGS)
    out = df.generator_losses(image, mask)
    assert set(out.logs) == {"l1_coarse", "l1_refine", "adv"}
    assert set(df.discriminator_losses(image, mask, out.pred.detach()).logs) == {"hinge_real", "hinge_fake"}
    lm = _build("lama_fourier", lama.SMALL_ARGS)
    out = lm.generator_losses(image, mask)
    assert set(out.logs) == {"adv", "feature_matching", "hrf_perceptual", "l1"}  # l1 on the known pixels, weight 10
    assert set(lm.discriminator_losses(image, mask, out.pred.detach()).logs) == {"real", "fake", "r1"}


# ------------------------------------------------------------------------ parameter counts

@pytest.mark.parametrize("arch,args,gen_count,disc_count", [
    # DeepFill v2 as the released code: coarse input [x, 1, mask] (5 ch), refinement input x (3 ch),
    # plain-conv output layers: 4,054,332 + 1,200 − 2·1,200 − 2·327 = 4,052,478 at published size
    ("deepfill_v2", deepfill_v2.SMALL_ARGS, 115_258, 93_752),
    ("deepfill_v2", deepfill_v2.PUBLISHED_ARGS, 4_052_478, 5_946_816),
    ("lama_fourier", lama.SMALL_ARGS, 177_587, 44_649),
    ("lama_fourier", lama.PUBLISHED_ARGS, 27_048_835, 6_960_961),
])
def test_parameter_counts(arch, args, gen_count, disc_count):
    model = build(arch, args, {}, BuildContext(perceptual={"backbone": "none"}))
    assert sum(p.numel() for p in model.generator_parameters()) == gen_count
    assert count_parameters(model.discriminator) == disc_count


def test_published_sizes_match_the_papers():
    """DeepFill v2 reports 4.1 M generator parameters, LaMa-Fourier 27 M (Table of the paper)."""
    df = build("deepfill_v2", deepfill_v2.PUBLISHED_ARGS, {}, BuildContext(perceptual={"backbone": "none"}))
    lm = build("lama_fourier", lama.PUBLISHED_ARGS, {}, BuildContext(perceptual={"backbone": "none"}))
    assert abs(sum(p.numel() for p in df.generator_parameters()) / 4.1e6 - 1) < 0.05
    assert abs(sum(p.numel() for p in lm.generator_parameters()) / 27e6 - 1) < 0.05


def test_bad_arguments_are_user_errors():
    with pytest.raises(InpaintBenchError, match="deepfill_v2"):
        build("deepfill_v2", {"widht": 4}, {}, BuildContext())
    with pytest.raises(InpaintBenchError, match="lama_fourier"):
        build("lama_fourier", {}, {"weights": {"perceptual": 1.0}}, BuildContext(perceptual={"backbone": "none"}))


@pytest.mark.parametrize("arch,args", [("deepfill_v2", deepfill_v2.SMALL_ARGS), ("lama_fourier", lama.SMALL_ARGS)])
def test_checkpoint_round_trip_and_bf16_autocast(arch, args):
    """The trainer saves model.state_dict() (spectral-norm parametrisations included) and runs
    under bf16 autocast on CUDA; CPU autocast exercises the same dtype paths (FFT in fp32)."""
    model = _build(arch, args).eval()
    image, mask = _batch(2, 32)
    copy = _build(arch, args).eval()
    with torch.no_grad():
        for p in copy.parameters():
            p.add_(0.1)  # make the copy differ, so only load_state_dict can make it equal again
        assert not torch.allclose(copy(image * (1 - mask), mask), model(image * (1 - mask), mask))
        copy.load_state_dict(model.state_dict())
        torch.testing.assert_close(copy(image * (1 - mask), mask), model(image * (1 - mask), mask))
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.generator_losses(image, mask)
        d = model.discriminator_losses(image, mask, out.pred.detach())
    (out.total + d.total).backward()
    assert np.isfinite(float(out.total.detach())) and np.isfinite(float(d.total.detach()))


def test_lama_perceptual_backbone_is_chosen_in_params():
    ctx = BuildContext(perceptual={"backbone": "random-vgg16", "width": 0.25})
    assert build("lama_fourier", lama.SMALL_ARGS, {}, ctx).backbone is not None
    # the model's own loss.perceptual block overrides the global one
    off = build("lama_fourier", lama.SMALL_ARGS, {"perceptual": {"backbone": "none"}}, ctx)
    assert off.backbone is None
    image, mask = _batch(2, 32)
    assert "hrf_perceptual" not in off.generator_losses(image, mask).logs
