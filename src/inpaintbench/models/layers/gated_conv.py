"""Gated convolution (Yu et al. 2019, "Free-form image inpainting with gated convolution",
Sec. 3.1, "Gated Convolution"):

    Gating_{y,x}  = Σ Σ W_g · I
    Feature_{y,x} = Σ Σ W_f · I
    O_{y,x}       = φ(Feature_{y,x}) ⊙ σ(Gating_{y,x})

φ is any activation (ELU here, the paper's code choice; none on the output layer), σ the
sigmoid. W_f and W_g have the same geometry, so they are stored as one convolution with 2·cout
outputs: the first cout output channels are Feature, the last cout are Gating (one conv call
instead of two, which matters on CPU; same parameters as two separate convolutions).

Initialisation (the paper gives none): with the framework default, the ~17 gated layers of a
DeepFill stage shrink the signal by σ(·) ≈ 0.5 and the default fan-in scale at every layer, so
the network's output starts at std ≈ 1e-5 and barely learns in a short run. Here W_f is
Kaiming-normal (ReLU gain) times 2, compensating the gate's ≈ 0.5, W_g is 0.1 × Kaiming-normal
(gates start near 0.5), biases 0: the output std of a fresh coarse network is then ≈ 0.1.

`GatedUpConv2d` is the paper's upsampling step in the decoder: nearest-neighbour ×2 resize
followed by a gated convolution (the "resize-convolution" of the DeepFill code, chosen over
transposed convolutions to avoid checkerboard artefacts).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "leaky": lambda: nn.LeakyReLU(0.2),
    "none": nn.Identity,
}


class GatedConv2d(nn.Module):
    """O = φ(W_f * I) ⊙ σ(W_g * I)  (Sec. 3.1). 'same' padding for odd kernels."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 activation: str = "elu", padding_mode: str = "zeros"):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.out_channels = cout
        self.conv = nn.Conv2d(cin, 2 * cout, kernel, stride=stride, padding=pad, dilation=dilation,
                              padding_mode=padding_mode)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(_ACTIVATIONS)}")
        self.act = _ACTIVATIONS[activation]()
        self.reset_gated_parameters()

    def reset_gated_parameters(self) -> None:
        """The initialisation described in the module docstring."""
        with torch.no_grad():
            nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
            self.conv.weight[: self.out_channels] *= 2.0
            self.conv.weight[self.out_channels:] *= 0.1
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature, gating = self.conv(x).split(self.out_channels, dim=1)
        return self.act(feature) * torch.sigmoid(gating)


class GatedUpConv2d(nn.Module):
    """Nearest ×2 upsampling followed by a gated 3×3 convolution (decoder of Sec. 3.1 / Fig. 3)."""

    def __init__(self, cin: int, cout: int, activation: str = "elu", padding_mode: str = "zeros"):
        super().__init__()
        self.conv = GatedConv2d(cin, cout, 3, activation=activation, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
