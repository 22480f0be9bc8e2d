"""Partial convolution (Liu et al. 2018, Eq. 1-2) against a direct per-position computation."""
import numpy as np
import torch

from inpaintbench.models.layers.partial_conv import PartialConv2d
from inpaintbench.models import registry


def _direct(x, valid, weight, bias, pad):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    v = np.pad(valid, ((pad, pad), (pad, pad)))
    cout, cin, k, _ = weight.shape
    h, w = valid.shape
    out = np.zeros((cout, h, w))
    new = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            win_m = v[i:i + k, j:j + k]
            s = win_m.sum()
            if s == 0:
                continue
            new[i, j] = 1
            win_x = x[:, i:i + k, j:j + k] * win_m
            for o in range(cout):
                out[o, i, j] = (weight[o] * win_x).sum() * (k * k) / s + bias[o]
    return out, new


def test_partial_conv_equals_direct_formula():
    torch.manual_seed(0)
    conv = PartialConv2d(2, 3, 3, padding=1, bias=True).double()
    x = torch.rand(1, 2, 7, 6, dtype=torch.float64)
    valid = torch.ones(1, 1, 7, 6, dtype=torch.float64)
    valid[..., 1:5, 1:4] = 0  # a hole larger than the kernel: its centre has no valid input
    out, new = conv(x, valid)
    ref, ref_new = _direct(x[0].numpy(), valid[0, 0].numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy(), 1)
    assert np.allclose(out[0].detach().numpy(), ref, atol=1e-10)
    assert np.array_equal(new[0, 0].numpy(), ref_new)
    assert ref_new.min() == 0  # the test exercises the "no valid input" branch


def test_hole_content_does_not_leak():
    conv = PartialConv2d(3, 4, 3, padding=1)
    x = torch.rand(1, 3, 8, 8)
    valid = torch.ones(1, 1, 8, 8)
    valid[..., 2:6, 2:6] = 0
    y = x.clone()
    y[..., 2:6, 2:6] = torch.rand(1, 3, 4, 4) * 100  # garbage in the hole
    assert torch.allclose(conv(x, valid)[0], conv(y, valid)[0])


def test_pconv_unet_shapes_and_parameter_count():
    m = registry.build("pconv_unet", {"base": 16, "depth": 4})
    x = torch.rand(2, 3, 64, 64)
    mask = (torch.rand(2, 1, 64, 64) > 0.7).float()
    assert m(x * (1 - mask), mask).shape == (2, 3, 64, 64)
    assert sum(p.numel() for p in m.generator_parameters()) == 286_436
    big = registry.build("pconv_unet", {"base": 64, "depth": 8})
    # published size (Liu et al. 2018): 8 levels, 64..512 channels
    assert sum(p.numel() for p in big.generator_parameters()) == 32_859_796
