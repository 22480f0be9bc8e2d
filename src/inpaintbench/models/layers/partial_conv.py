"""Partial convolution (Liu et al. 2018, "Image inpainting for irregular holes using partial
convolutions", Sec. 3.1, Eq. 1-2).

    x' = W^T (X ⊙ M) · sum(1)/sum(M) + b   if sum(M) > 0, else 0        (Eq. 1)
    m' = 1 if sum(M) > 0, else 0                                         (Eq. 2)

M here is the *valid* mask (1 = known pixel), the opposite of the project's hole mask: models
convert once at their input (`valid = 1 - mask`), as DESIGN.md asks. The mask is usually
single-channel (N1HW) and shared by all input channels, so sum(1)/sum(M) is the window size over
the count of valid positions in the window. A mask with one channel per input channel (NCHW) is
NVIDIA's ``multi_channel=True`` (NVIDIA/partialconv partialconv2d.py): sum(1) and sum(M) then run
over the channels too; the updated mask is the same for every output channel and returned N1HW.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PartialConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kh, kw = self.kernel_size
        with torch.no_grad():
            window = torch.ones(1, valid.shape[1], kh, kw, device=valid.device, dtype=valid.dtype)
            valid_count = F.conv2d(valid, window, stride=self.stride, padding=self.padding, dilation=self.dilation)
            new_valid = (valid_count > 0).to(valid.dtype)
            scale = window.numel() / (valid_count + 1e-8) * new_valid  # as NVIDIA/MMagic: W/(sum(M) + 1e-8)
        raw = F.conv2d(x * valid, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.bias is None:
            return raw * scale.to(raw.dtype), new_valid
        # the official arithmetic (NVIDIA partialconv2d.py, MMagic): ((W·X + b) − b)·ratio + b
        bias = self.bias.view(1, -1, 1, 1)
        return ((raw - bias) * scale.to(raw.dtype) + bias) * new_valid.to(raw.dtype), new_valid


class PartialConvBlock(nn.Module):
    """PartialConv2d -> optional BatchNorm -> activation, passing the updated mask along."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 bn: bool = True, act: str = "relu", bias: bool | None = None, slope: float = 0.2):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        bias = not bn if bias is None else bias
        self.conv = PartialConv2d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation, bias=bias)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.act = {"relu": nn.ReLU(inplace=True), "leaky": nn.LeakyReLU(slope, inplace=True), "none": nn.Identity()}[act]

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, valid = self.conv(x, valid)
        return self.act(self.bn(x)), valid
