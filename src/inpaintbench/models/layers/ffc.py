"""Fast Fourier convolution (Chi et al. 2020), as used by LaMa (Suvorov et al. 2022, Sec. 3.1
"Fast Fourier convolutions" and Fig. 2).

The channels of a feature map are split into a *local* part X_l and a *global* part X_g; the
global ratio α (``ratio_g``, 0.75 in LaMa) sets the split. One FFC layer computes

    Y_l = f_l(X_l) + f_{g→l}(X_g)          (spatial convolutions)
    Y_g = f_{l→g}(X_l) + f_g(X_g)          (f_g = spectral transform, image-wide receptive field)

and the spectral transform f_g (Fig. 2, right) is

    1×1 conv + BN + ReLU (halve channels)  →  Fourier unit  →  residual add  →  1×1 conv,

with the Fourier unit (Sec. 3.1, steps a-d):
    a) real FFT over the spatial dims:       Y = rfftn(X) ∈ C^{H×W/2×C}
    b) real and imaginary parts as channels: Y' ∈ R^{H×W/2×2C}
    c) 1×1 convolution + BN + ReLU in the frequency domain
    d) back to complex and inverse real FFT: irfftn(·) ∈ R^{H×W×C}.
The FFT uses norm="ortho" (LaMa's choice). LaMa disables the local Fourier unit (LFU) of the
FFC paper; it is left out here for the same reason.
"""
from __future__ import annotations

import torch
from torch import nn


class FourierUnit(nn.Module):
    """Sec. 3.1 steps a-d. The stacked spectrum interleaves real and imaginary parts per channel
    (channel 2c = Re X_c, 2c+1 = Im X_c), the layout of advimman/lama's FourierUnit, so that the
    released checkpoints' 1×1 conv and BN weights load without a permutation."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * cin, 2 * cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * cout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        dtype = x.dtype
        fft_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype  # FFT needs ≥ fp32
        spec = torch.fft.rfftn(x.to(fft_dtype), dim=(-2, -1), norm="ortho")  # a)
        z = torch.stack([spec.real, spec.imag], dim=2).flatten(1, 2)  # b) channels re0, im0, re1, im1, …
        z = self.act(self.bn(self.conv(z.to(dtype)))).to(fft_dtype)  # c)
        z = z.unflatten(1, (-1, 2))
        out = torch.fft.irfftn(torch.complex(z[:, :, 0], z[:, :, 1]), s=(h, w), dim=(-2, -1), norm="ortho")  # d)
        return out.to(dtype)


class SpectralTransform(nn.Module):
    """f_g of Fig. 2: 1×1 conv-BN-ReLU to cout/2, Fourier unit with a residual, 1×1 conv to cout."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = max(1, cout // 2)
        self.reduce = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU())
        self.fu = FourierUnit(mid, mid)
        self.expand = nn.Conv2d(mid, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.expand(x + self.fu(x))


def split_channels(channels: int, ratio_g: float) -> tuple[int, int]:
    """(local, global) channel counts for a global ratio α."""
    global_ch = int(channels * ratio_g)
    return channels - global_ch, global_ch


class FFC(nn.Module):
    """One FFC layer (Sec. 3.1): four paths l→l, g→l, l→g (k×k convs) and g→g (spectral).

    Input and output are (x_local, x_global) pairs; a side with zero channels is None.
    Spatial convolutions use reflection padding, as LaMa does; no bias (BN follows).
    """

    def __init__(self, cin: int, cout: int, kernel: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, padding_mode: str = "reflect"):
        super().__init__()
        in_l, in_g = split_channels(cin, ratio_gin)
        out_l, out_g = split_channels(cout, ratio_gout)
        self.in_split, self.out_split = (in_l, in_g), (out_l, out_g)

        def conv(a: int, b: int) -> nn.Module | None:
            if a == 0 or b == 0:
                return None
            return nn.Conv2d(a, b, kernel, stride, padding, bias=False, padding_mode=padding_mode)

        self.l2l, self.l2g, self.g2l = conv(in_l, out_l), conv(in_l, out_g), conv(in_g, out_l)
        self.g2g = SpectralTransform(in_g, out_g) if in_g and out_g else None
        if stride != 1 and self.g2g is not None:
            raise ValueError("the spectral path of an FFC layer keeps the resolution (stride 1)")

    @staticmethod
    def _sum(*parts):
        parts = [p for p in parts if p is not None]
        return sum(parts[1:], parts[0]) if parts else None

    def forward(self, x: tuple[torch.Tensor | None, torch.Tensor | None]):
        x_l, x_g = x
        y_l = self._sum(self.l2l(x_l) if self.l2l else None, self.g2l(x_g) if self.g2l else None)
        y_g = self._sum(self.l2g(x_l) if self.l2g else None, self.g2g(x_g) if self.g2g else None)
        return y_l, y_g


class FFCBNAct(nn.Module):
    """FFC followed by BN + activation on each of the local and global outputs (Fig. 2, left)."""

    def __init__(self, cin: int, cout: int, kernel: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0):
        super().__init__()
        self.ffc = FFC(cin, cout, kernel, ratio_gin, ratio_gout, stride, padding)
        out_l, out_g = self.ffc.out_split
        self.bn_l = nn.BatchNorm2d(out_l) if out_l else None
        self.bn_g = nn.BatchNorm2d(out_g) if out_g else None
        self.act = nn.ReLU()

    def forward(self, x):
        y_l, y_g = self.ffc(x)
        y_l = self.act(self.bn_l(y_l)) if y_l is not None else None
        y_g = self.act(self.bn_g(y_g)) if y_g is not None else None
        return y_l, y_g


class FFCResBlock(nn.Module):
    """LaMa's residual block (Fig. 2): two 3×3 FFC-BN-ReLU layers and an identity shortcut on both
    the local and the global branch."""

    def __init__(self, channels: int, ratio_g: float):
        super().__init__()
        self.conv1 = FFCBNAct(channels, channels, 3, ratio_g, ratio_g, padding=1)
        self.conv2 = FFCBNAct(channels, channels, 3, ratio_g, ratio_g, padding=1)

    def forward(self, x):
        x_l, x_g = x
        y_l, y_g = self.conv2(self.conv1(x))
        return (x_l + y_l if x_l is not None else y_l), (x_g + y_g if x_g is not None else y_g)
