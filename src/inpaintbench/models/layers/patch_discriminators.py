"""Patch-level discriminators shared by the GAN baselines.

* `SNPatchGAN` — DeepFill v2 (Yu et al. 2019), Sec. 3.2 "SN-PatchGAN": six 5×5 stride-2
  convolutions with spectral normalisation (Miyato et al. 2018) and leaky ReLU, widths
  64-128-256-256-256-256 at published size; input image + mask (+ sketch, unused here) as
  channels. Every element of the output h×w×c feature map is a GAN score on one patch, so the
  hinge loss is applied to all of them directly (no fully connected layer).
  As the released code (JiahuiYu/generative_inpainting, inpaint_model.py build_sn_patch_gan_
  discriminator: every dis_conv has a leaky ReLU), the last layer is followed by a leaky ReLU too.
  Hinge losses (Sec. 3.2):  L_D = E[ReLU(1 − D(x))] + E[ReLU(1 + D(G(z)))],  L_G = −E[D(G(z))].

* `NLayerPatchDiscriminator` — LaMa (Suvorov et al. 2022) Sec. 3.2: "we use a discriminator that
  works on a local patch level", the PatchGAN of pix2pix/pix2pixHD (Isola et al. 2017; Wang et
  al. 2018): a 4×4 stride-2 conv + leaky ReLU, then `n_layers − 1` stride-2 and one stride-1
  conv + BN + leaky ReLU (widths doubling up to 8·ndf), then a 4×4 conv to one logit per patch.
  It returns the logits and the intermediate activations, which LaMa's discriminator-based
  perceptual (feature matching) loss L_DiscPL compares (Sec. 3.3).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class SNPatchGAN(nn.Module):
    def __init__(self, in_channels: int = 4, base: int = 64, n_layers: int = 6):
        super().__init__()
        widths = [min(base * 2 ** i, base * 4) for i in range(n_layers)]
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            layers += [spectral_norm(nn.Conv2d(cin, cout, 5, stride=2, padding=2)), nn.LeakyReLU(0.2)]
            cin = cout
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SN-PatchGAN discriminator hinge loss terms (Yu et al. 2019, Eq. in Sec. 3.2)."""
    return F.relu(1 - real_scores).mean(), F.relu(1 + fake_scores).mean()


def hinge_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """SN-PatchGAN generator loss L_G = −E[D(G(z))] (Sec. 3.2)."""
    return -fake_scores.mean()


class NLayerPatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        kw, pad = 4, int(math.ceil((4 - 1) / 2))
        blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, ndf, kw, 2, pad), nn.LeakyReLU(0.2))]
        nf = ndf
        for i in range(1, n_layers + 1):
            prev, nf = nf, min(nf * 2, ndf * 8)
            stride = 2 if i < n_layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(prev, nf, kw, stride, pad, bias=False),
                                        nn.BatchNorm2d(nf), nn.LeakyReLU(0.2)))
        blocks.append(nn.Conv2d(nf, 1, kw, 1, pad))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for block in self.blocks[:-1]:
            x = block(x)
            feats.append(x)
        return self.blocks[-1](x), feats
