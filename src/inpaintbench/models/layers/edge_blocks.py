"""EdgeConnect building blocks (Nazeri et al. 2019, Sec. 3 and Sec. 4.1 "Network architecture").

* ``EdgeConnectGenerator``: the generator shape shared by G1 (edges) and G2 (image): an encoder
  that downsamples twice (7×7 conv, then two 4×4 stride-2 convs), 8 residual blocks whose first
  convolution is dilated by 2, and a decoder that upsamples twice (4×4 transposed convs) back to
  the input size, ending in a 7×7 conv. Instance normalisation after every layer but the last.
  Published widths: 64, 128, 256 (``base`` = 64). Spectral normalisation (Sec. 3.3 / 4.1) is
  switched on for G1 and the discriminators; G2 is built without it (the paper motivates SN for
  the edge model's stability; we follow that split).
* ``PatchDiscriminator``: the 70×70 PatchGAN (Isola et al. 2017) the paper uses for D1 and D2:
  five 4×4 convs (three stride 2, two stride 1), widths 64-128-256-512-1, LeakyReLU(0.2),
  spectral norm, no other normalisation. It returns the patch logits *and* every layer's
  activation, which the feature-matching loss of G1 (Eq. 4) compares.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _sn(layer: nn.Module, use: bool) -> nn.Module:
    return spectral_norm(layer) if use else layer


class DilatedResidualBlock(nn.Module):
    """Residual block of the middle section: reflect-pad, 3×3 conv dilated 2, IN, ReLU, 3×3 conv, IN.
    As knazeri/edge-connect's ResnetBlock, the convs carry a bias only without spectral norm
    (``bias=not use_spectral_norm``): G1's blocks have none, G2's have one."""

    def __init__(self, ch: int, dilation: int = 2, sn: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(dilation), _sn(nn.Conv2d(ch, ch, 3, dilation=dilation, bias=not sn), sn),
            nn.InstanceNorm2d(ch), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), _sn(nn.Conv2d(ch, ch, 3, bias=not sn), sn), nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EdgeConnectGenerator(nn.Module):
    """Encoder (×1/4) -> `res_blocks` dilated residual blocks -> decoder (×4); Sec. 4.1.

    ``out``: "sigmoid" for G1 (edge probability map), "tanh01" for G2 ((tanh + 1)/2, an RGB
    image in [0, 1]; the paper's tanh output mapped to this project's value range).
    """

    def __init__(self, cin: int, cout: int, base: int = 64, res_blocks: int = 8, sn: bool = False,
                 out: str = "sigmoid"):
        super().__init__()
        c1, c2, c3 = base, base * 2, base * 4
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3), _sn(nn.Conv2d(cin, c1, 7), sn), nn.InstanceNorm2d(c1), nn.ReLU(inplace=True),
            _sn(nn.Conv2d(c1, c2, 4, stride=2, padding=1), sn), nn.InstanceNorm2d(c2), nn.ReLU(inplace=True),
            _sn(nn.Conv2d(c2, c3, 4, stride=2, padding=1), sn), nn.InstanceNorm2d(c3), nn.ReLU(inplace=True),
        )
        self.middle = nn.Sequential(*[DilatedResidualBlock(c3, 2, sn) for _ in range(res_blocks)])
        self.decoder = nn.Sequential(
            _sn(nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1), sn), nn.InstanceNorm2d(c2), nn.ReLU(inplace=True),
            _sn(nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), sn), nn.InstanceNorm2d(c1), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(3), nn.Conv2d(c1, cout, 7),
        )
        if out not in ("sigmoid", "tanh01"):
            raise ValueError(f"unknown generator output {out!r}")
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.decoder(self.middle(self.encoder(x)))
        return torch.sigmoid(y) if self.out == "sigmoid" else (torch.tanh(y) + 1) / 2


class PatchDiscriminator(nn.Module):
    """70×70 PatchGAN with spectral norm; forward returns (logits, [activations of each layer])."""

    def __init__(self, cin: int, base: int = 64, sn: bool = True):
        super().__init__()
        widths = [base, base * 2, base * 4, base * 8]
        strides = [2, 2, 2, 1]
        layers = []
        c = cin
        for w, s in zip(widths, strides):
            layers.append(nn.Sequential(_sn(nn.Conv2d(c, w, 4, stride=s, padding=1, bias=not sn), sn),
                                        nn.LeakyReLU(0.2, inplace=True)))
            c = w
        layers.append(nn.Sequential(_sn(nn.Conv2d(c, 1, 4, stride=1, padding=1, bias=not sn), sn)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return x, feats


# --- official checkpoints (knazeri/edge-connect src/networks.py) -------------------------------
# EdgeGenerator / InpaintGenerator keep the same encoder/middle/decoder Sequential indices as
# EdgeConnectGenerator; their residual blocks call the Sequential `conv_block` (ours `body`), and
# they use the old torch.nn.utils.spectral_norm (weight_orig, weight_u, weight_v), which in eval
# mode computes the same σ = uᵀ W v as the parametrization used here.
_SN_RENAMES = [(".weight_orig", ".parametrizations.weight.original"),
               (".weight_u", ".parametrizations.weight.0._u"), (".weight_v", ".parametrizations.weight.0._v")]


def convert_official_generator(state: dict) -> dict:
    """Our EdgeConnectGenerator's state dict from an official EdgeGenerator/InpaintGenerator one
    (``data['generator']`` of EdgeModel_gen.pth / InpaintingModel_gen.pth; a ``module.`` prefix
    from nn.DataParallel is removed)."""
    out = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        name = name.replace(".conv_block.", ".body.")
        for a, b in _SN_RENAMES:
            if name.endswith(a):
                name = name[: -len(a)] + b
        out[name] = value
    return out


def official_generator_args(state: dict) -> dict:
    """(base width, residual blocks) of an official generator state dict."""
    first = state.get("encoder.1.weight", state.get("encoder.1.weight_orig", state.get("module.encoder.1.weight")))
    if first is None:
        raise KeyError("not an EdgeConnect generator state dict (no encoder.1 weight)")
    blocks = {k.split(".")[1 + k.startswith("module.")] for k in state if ".middle." in f".{k}"}
    return {"base": int(first.shape[0]), "res_blocks": len(blocks)}
