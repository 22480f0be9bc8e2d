"""Building blocks of CTSDG (Guo, Chen, Huang, ICCV 2021, "Image inpainting via conditional
texture and structure dual generation"), written from the paper and following the structure and
attribute names of the official code (Xiefan-Guo/CTSDG) so that its checkpoints map onto these
modules key for key (see models/ctsdg.py for the mapping).

* `PConvBNActiv`: multi-channel partial conv -> BN -> ReLU/LeakyReLU (Sec. 3.1, the encoders and
  decoders of both branches are partial-convolution U-Nets).
* `Feature2Texture` / `Feature2Structure`: the projection heads P_t, P_s that map the decoders'
  last feature maps to an intermediate image / edge map for the intermediate loss (Sec. 3.1).
* `BiGFF`: bi-directional gated feature fusion (Sec. 3.2, Eq. 1-4).
* `RAL`, `MSFA`, `CFA`: contextual feature aggregation = region affinity learning (patch
  attention) + multi-scale feature aggregation (Sec. 3.3, Eq. 5-8).
* `TextureBranch`, `StructureBranch`, `EdgeDetector`: the two-stream discriminator (Sec. 3.4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pconv_multichannel import MultiChannelPartialConv2d

KERNELS = {"down-7": (7, 2), "down-5": (5, 2), "down-3": (3, 2), "none-3": (3, 1)}


class PConvBNActiv(nn.Module):
    """Sec. 3.1: partial convolution (mask per input channel, no bias) -> BN -> activation."""

    def __init__(self, cin: int, cout: int, bn: bool = True, sample: str = "none-3", activ: str = "relu"):
        super().__init__()
        k, s = KERNELS[sample]
        self.conv = MultiChannelPartialConv2d(cin, cout, k, stride=s, padding=k // 2, bias=False)
        if bn:
            self.bn = nn.BatchNorm2d(cout)
        self.activation = nn.ReLU() if activ == "relu" else nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = self.conv(x, mask)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.activation(x), mask


class Bottleneck(nn.Module):
    """Residual block of the projection heads: 3×3 conv -> BN -> ReLU -> 3×3 conv -> BN, + x, ReLU."""

    def __init__(self, inplanes: int, planes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, inplanes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inplanes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class Feature2Texture(nn.Module):
    """P_t (Sec. 3.1): texture decoder features -> intermediate image (tanh, [-1, 1])."""

    def __init__(self, inplanes: int = 64, planes: int = 16):
        super().__init__()
        self.texture_resolver = Bottleneck(inplanes, planes)
        self.out_layer = nn.Sequential(nn.Conv2d(inplanes, 3, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.texture_resolver(x))


class Feature2Structure(nn.Module):
    """P_s (Sec. 3.1): structure decoder features -> intermediate edge map (sigmoid)."""

    def __init__(self, inplanes: int = 64, planes: int = 16):
        super().__init__()
        self.structure_resolver = Bottleneck(inplanes, planes)
        self.out_layer = nn.Sequential(nn.Conv2d(inplanes, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.structure_resolver(x))


class BiGFF(nn.Module):
    """Bi-directional gated feature fusion (Sec. 3.2).

        G_{s→t} = σ(conv([F_t, F_s])),  G_{t→s} = σ(conv([F_t, F_s]))            (Eq. 1, 3)
        F'_t = F_t + γ_t (G_{s→t} ⊙ F_s)                                          (Eq. 2)
        F'_s = F_s + γ_s (G_{t→s} ⊙ F'_t)                                         (Eq. 4)
        output [F'_t, F'_s]

    γ_t, γ_s are learned scalars initialised to 0. The structure update uses the already updated
    texture feature F'_t, as the official code does (the paper's Eq. 4 can be read with F_t; we
    follow the code).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.structure_gate = nn.Sequential(nn.Conv2d(2 * in_channels, out_channels, 3, padding=1), nn.Sigmoid())
        self.texture_gate = nn.Sequential(nn.Conv2d(2 * in_channels, out_channels, 3, padding=1), nn.Sigmoid())
        self.structure_gamma = nn.Parameter(torch.zeros(1))
        self.texture_gamma = nn.Parameter(torch.zeros(1))

    def forward(self, texture: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        energy = torch.cat([texture, structure], 1)
        gate_s2t = self.structure_gate(energy)
        gate_t2s = self.texture_gate(energy)
        texture = texture + self.texture_gamma * (gate_s2t * structure)
        structure = structure + self.structure_gamma * (gate_t2s * texture)
        return torch.cat([texture, structure], 1)


def region_affinity(background: torch.Tensor, foreground: torch.Tensor, rate: int = 2,
                    softmax_scale: float = 10.0) -> torch.Tensor:
    """Region affinity learning (Sec. 3.3, Eq. 5-6), batched.

    The foreground (query) map is downsampled by `rate` (bilinear, align_corners); each 3×3 patch
    of it, L2-normalised, is a key; the score of query position p and key l is the correlation of
    the 3×3 neighbourhood of p (zero-padded) with key l, softmax over l with scale 10 (Eq. 5).
    The output is the attention-weighted sum of the background's (2·rate)×(2·rate) patches taken
    with stride `rate` at the same positions, pasted back with stride `rate` (a transposed
    convolution) and divided by 4 (Eq. 6; the overlap count of 4×4 patches at stride 2).
    """
    h, w = background.shape[-2:]
    fg = F.interpolate(foreground, scale_factor=1.0 / rate, mode="bilinear", align_corners=True)
    k_bg = 2 * rate
    # keys: 3×3 foreground patches [N, C*9, L]; queries: the same unfolded map (zero padding 1)
    keys = F.unfold(fg, 3, padding=1)
    keys = keys / keys.pow(2).sum(1, keepdim=True).sqrt().clamp(min=1e-4)
    queries = F.unfold(fg, 3, padding=1)
    scores = torch.bmm(keys.transpose(1, 2), queries)                 # [N, L (keys), P (queries)]
    attention = F.softmax(scores * softmax_scale, dim=1).clamp(min=1e-8)
    patches = F.unfold(background, k_bg, padding=1, stride=rate)      # [N, C*k*k, L]
    cols = torch.bmm(patches, attention)                              # [N, C*k*k, P]
    return F.fold(cols, (h, w), k_bg, padding=1, stride=rate) / 4.0


class RAL(nn.Module):
    """Region affinity learning (Sec. 3.3); see `region_affinity`."""

    def __init__(self, kernel_size: int = 3, stride: int = 1, rate: int = 2, softmax_scale: float = 10.0):
        super().__init__()
        if kernel_size != 3 or stride != 1:
            raise ValueError("RAL: only kernel_size 3, stride 1 (the official setting) are implemented")
        self.rate, self.softmax_scale = rate, softmax_scale

    def forward(self, background: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        return region_affinity(background, foreground, self.rate, self.softmax_scale)


class MSFA(nn.Module):
    """Multi-scale feature aggregation (Sec. 3.3, Eq. 7-8): four 3×3 convs with dilations 1, 2, 4, 8
    (ReLU) weighted per pixel by a softmax over a predicted 4-channel weight map."""

    def __init__(self, in_channels: int = 64, out_channels: int = 64, dilation_rate_list=(1, 2, 4, 8)):
        super().__init__()
        self.dilation_rate_list = list(dilation_rate_list)
        for i, d in enumerate(self.dilation_rate_list):
            setattr(self, f"dilated_conv_{i}", nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, dilation=d, padding=d), nn.ReLU(inplace=True)))
        self.weight_calc = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, len(self.dilation_rate_list), 1), nn.ReLU(inplace=True),
            nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.weight_calc(x)
        return sum(weights[:, i:i + 1] * getattr(self, f"dilated_conv_{i}")(x)
                   for i in range(len(self.dilation_rate_list)))


class CFA(nn.Module):
    """Contextual feature aggregation (Sec. 3.3): RAL followed by MSFA."""

    def __init__(self, rate: int = 2, softmax_scale: float = 10.0, in_channels: int = 64, out_channels: int = 64):
        super().__init__()
        self.ral = RAL(rate=rate, softmax_scale=softmax_scale)
        self.msfa = MSFA(in_channels, out_channels)

    def forward(self, background: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        return self.msfa(self.ral(background, foreground))


def _sn_conv(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.utils.spectral_norm(nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=False))


class PatchBranch(nn.Module):
    """One discriminator stream (Sec. 3.4): five spectral-norm 4×4 convs (strides 2, 2, 2, 1, 1;
    widths b, 2b, 4b, 8b, 1), LeakyReLU 0.2, sigmoid output (the official BCE on probabilities)."""

    def __init__(self, in_channels: int, base: int = 64):
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        strides = [2, 2, 2, 1]
        c = in_channels
        for i, (wd, s) in enumerate(zip(widths, strides), start=1):
            setattr(self, f"conv{i}", nn.Sequential(_sn_conv(c, wd, s), nn.LeakyReLU(0.2, inplace=True)))
            c = wd
        self.conv5 = nn.Sequential(_sn_conv(c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 6):
            x = getattr(self, f"conv{i}")(x)
        return torch.sigmoid(x)


class TextureBranch(PatchBranch):
    """Texture stream D_t: judges the RGB image (Sec. 3.4)."""

    def __init__(self, in_channels: int = 3, base: int = 64):
        super().__init__(in_channels, base)


class StructureBranch(PatchBranch):
    """Structure stream D_s: judges [edge map, greyscale image] (Sec. 3.4)."""

    def __init__(self, in_channels: int = 2, base: int = 64):
        super().__init__(in_channels, base)


class EdgeDetector(nn.Module):
    """The discriminator's learned edge extractor (Sec. 3.4): a residual block that maps an RGB
    image to an edge probability map, trained to reproduce the Canny edges of the ground truth."""

    def __init__(self, in_channels: int = 3, mid_channels: int = 16, out_channels: int = 1):
        super().__init__()
        m = mid_channels
        self.projection = nn.Sequential(nn.Conv2d(in_channels, m, 3, padding=1), nn.BatchNorm2d(m), nn.ReLU(inplace=True))
        self.res_layer = nn.Sequential(
            nn.Conv2d(m, m, 3, padding=1), nn.BatchNorm2d(m), nn.ReLU(inplace=True),
            nn.Conv2d(m, m, 3, padding=1), nn.BatchNorm2d(m))
        self.out_layer = nn.Sequential(nn.Conv2d(m, out_channels, 1), nn.Sigmoid())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.projection(image)
        return self.out_layer(F.relu(self.res_layer(x) + x))


class Discriminator(nn.Module):
    """Two-stream discriminator (Sec. 3.4): D_t on the image, D_s on [edges, grey]. For a real
    sample D_s sees the Canny edges of the ground truth; for a fake it sees the edges the
    `edge_detector` extracts from the generated image. Returns ([D_t, D_s] along channels, the
    detected edges of `image`)."""

    def __init__(self, image_in_channels: int = 3, edge_in_channels: int = 2, base: int = 64, edge_mid: int = 16):
        super().__init__()
        self.texture_branch = TextureBranch(image_in_channels, base)
        self.structure_branch = StructureBranch(edge_in_channels, base)
        self.edge_detector = EdgeDetector(3, edge_mid)

    def forward(self, image: torch.Tensor, gray: torch.Tensor, real_edge: torch.Tensor,
                is_real: bool) -> tuple[torch.Tensor, torch.Tensor]:
        texture_pred = self.texture_branch(image)
        detected = self.edge_detector(image)
        edge = real_edge if is_real else detected
        structure_pred = self.structure_branch(torch.cat([edge, gray], 1))
        return torch.cat([texture_pred, structure_pred], 1), detected


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """N(0, 0.02) conv/linear weights and zero biases; BN weights N(1, 0.02) (the official init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            nn.init.normal_(w.data, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias.data)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight.data, 1.0, gain)
            nn.init.zeros_(m.bias.data)
