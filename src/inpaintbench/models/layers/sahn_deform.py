"""Deformable 3×3 convolution for SAHN's MSF blocks (SAHN Sec. 3.1, MSF point (3): "deformable
convolution ... replacing the standard convolution used in SPADE").

The weights live in `DeformWeights`, which holds and initialises them exactly as
`torchvision.ops.DeformConv2d` does (same keys, same values for the same seed: tested) without
importing torchvision to build a model (that import pulls in torch._dynamo, ~2 s CPU per
evaluate job); the sampling offsets (2 per kernel tap,
torchvision's layout ``[dy_0, dx_0, dy_1, dx_1, ...]``) are predicted from the input by a plain
3×3 convolution that starts at zero, so an untrained block is exactly a plain convolution.

Two backends compute the same function:

* ``torchvision``: `torchvision.ops.deform_conv2d` (fast CUDA kernel; its CPU kernel is ~80×
  slower than a plain convolution, measured 0.5 s for one 16-channel 64×64 layer, batch 8).
* ``grid_sample``: bilinear sampling of the K = kh·kw shifted inputs with
  `F.grid_sample(align_corners=True, padding_mode="zeros")` followed by a 1×1 convolution over
  the C·K sampled channels (≈7× faster than torchvision's kernel on CPU). Same zero padding as
  torchvision: a sample point outside the image contributes only its in-image corners.

``auto`` uses torchvision on CUDA tensors and grid_sample elsewhere.

Memory: the grid_sample path's sampled tensor has K = 9 times the input's elements, and autograd
would keep it (and the sampling grid) for the backward pass of every deformable layer at once:
SAHN-pub at 256 px peaked at 5.1 GB for batch 1 on CPU, most of it these tensors. With
``checkpoint=True`` the layer keeps only its inputs and recomputes the sampling in
its backward pass (`torch.utils.checkpoint`), so at most one layer's 9x tensor is alive at a time.
The function and its gradients are unchanged (tests/test_sahn_deform_memory.py). The default
``checkpoint="auto"`` does so only where the sampled tensor is large (at least
``CHECKPOINT_MIN_ELEMENTS``, 16 MiB of float32): every SAHN-pub layer at 256 px, batch 1 and up,
but none of the built-in 64 px model's, where the recomputation would cost a second grid_sample
forward per layer per step and the saved tensors are a few MB.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

BACKENDS = ("auto", "torchvision", "grid_sample")
CHECKPOINT_MIN_ELEMENTS = 1 << 22  # checkpoint="auto": recompute only a sampled tensor this large


def deform_conv2d_grid_sample(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                              bias: torch.Tensor | None, stride: int = 1, padding: int = 0,
                              dilation: int = 1) -> torch.Tensor:
    """torchvision's deform_conv2d (one offset group, no modulation mask) via grid_sample."""
    n, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    if cin != c:
        raise ValueError(f"deformable conv expects {cin} input channels, got {c}")
    k = kh * kw
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    if offset.shape != (n, 2 * k, ho, wo):
        raise ValueError(f"offset shape {tuple(offset.shape)} != {(n, 2 * k, ho, wo)}")
    grid = _base_grid(kh, kw, ho, wo, h, w, stride, padding, dilation, x.dtype, x.device)  # K Ho Wo 2
    # offsets (dy, dx) per tap -> normalised (x, y) grid units; align_corners=True: -1 / +1 are the
    # centres of the first / last pixel
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=x.dtype, device=x.device)
    off = offset.view(n, k, 2, ho, wo).permute(0, 1, 3, 4, 2).flip(-1)
    grid = (torch.addcmul(grid, off, scale)).reshape(n, k * ho, wo, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.view(n, c, k, ho, wo).reshape(n, c * k, ho, wo)  # channel-major, like weight
    return F.conv2d(sampled, weight.reshape(cout, c * k, 1, 1), bias)


def _base_grid(kh: int, kw: int, ho: int, wo: int, h: int, w: int, stride: int, padding: int, dilation: int,
               dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised (x, y) sampling position of every tap (row-major) at every output pixel, zero offset."""
    tap_y = (torch.arange(kh, dtype=dtype, device=device) * dilation).repeat_interleave(kw)
    tap_x = (torch.arange(kw, dtype=dtype, device=device) * dilation).repeat(kh)
    py = tap_y.view(-1, 1, 1) + (torch.arange(ho, dtype=dtype, device=device) * stride - padding).view(1, ho, 1)
    px = tap_x.view(-1, 1, 1) + (torch.arange(wo, dtype=dtype, device=device) * stride - padding).view(1, 1, wo)
    gx = px.expand(-1, ho, wo) * (2.0 / max(w - 1, 1)) - 1.0
    gy = py.expand(-1, ho, wo) * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack([gx, gy], dim=-1)


class DeformWeights(nn.Module):
    """The weight and bias of a deformable convolution, laid out and initialised as
    `torchvision.ops.DeformConv2d` (reset_parameters: Kaiming-uniform a=sqrt(5), bias uniform in
    +-1/sqrt(fan_in)); calling it runs torchvision's deform_conv2d, as DeformConv2d does."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = True):
        super().__init__()
        pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))  # noqa: E731
        self.in_channels, self.out_channels, self.groups = cin, cout, 1
        self.kernel_size, self.stride, self.padding, self.dilation = (pair(kernel_size), pair(stride),
                                                                      pair(padding), pair(dilation))
        self.weight = nn.Parameter(torch.empty(cout, cin, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(cout))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import deform_conv2d

        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation)


class DeformableConv2d(nn.Module):
    """Deformable convolution whose offsets a zero-initialised plain convolution predicts."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None,
                 dilation: int = 1, bias: bool = True, backend: str = "auto", checkpoint: bool | str = "auto"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"deformable conv backend {backend!r}; choose one of {BACKENDS}")
        padding = dilation * (kernel_size - 1) // 2 if padding is None else padding
        self.conv = DeformWeights(cin, cout, kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, bias=bias)
        self.offset = nn.Conv2d(cin, 2 * kernel_size * kernel_size, kernel_size, stride=stride,
                                padding=padding, dilation=dilation)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        if checkpoint not in (True, False, "auto"):
            raise ValueError(f"deformable conv checkpoint must be true, false or 'auto', got {checkpoint!r}")
        self.backend = backend
        self.checkpoint = checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_offsets(x, self.offset(x))

    def apply_offsets(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        c = self.conv
        use_tv = self.backend == "torchvision" or (self.backend == "auto" and x.is_cuda)
        if use_tv:
            from torchvision.ops import deform_conv2d

            return deform_conv2d(x, offset, c.weight, c.bias, stride=c.stride, padding=c.padding,
                                 dilation=c.dilation)
        if self._checkpointed(x, offset) and torch.is_grad_enabled() \
                and (x.requires_grad or offset.requires_grad or c.weight.requires_grad):
            # keep only the inputs; recompute the 9x sampled tensor in the backward pass
            return torch.utils.checkpoint.checkpoint(deform_conv2d_grid_sample, x, offset, c.weight, c.bias,
                                                     c.stride[0], c.padding[0], c.dilation[0], use_reentrant=False)
        return deform_conv2d_grid_sample(x, offset, c.weight, c.bias, stride=c.stride[0],
                                         padding=c.padding[0], dilation=c.dilation[0])

    def _checkpointed(self, x: torch.Tensor, offset: torch.Tensor) -> bool:
        if self.checkpoint != "auto":
            return bool(self.checkpoint)
        k = self.conv.weight.shape[2] * self.conv.weight.shape[3]
        return x.shape[0] * x.shape[1] * k * offset.shape[2] * offset.shape[3] >= CHECKPOINT_MIN_ELEMENTS
