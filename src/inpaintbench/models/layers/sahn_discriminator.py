"""SAHN's mask-guided discriminator (SAHN Sec. 3.2, Fig. 4).

Four 4×4 stride-2 convolutions (each halves the feature map; spectral norm, LeakyReLU 0.2) and a
3×3 convolution to one channel give a per-patch logit map at 1/16 of the input size.

Mask guidance: the restored image I_pred = I_full ⊙ (1 − M) + I_out ⊙ M is real outside the hole
and generated inside it, so its target map is `1 − M↓` (M↓ = hole fraction of each patch's cell,
area-downsampled to the prediction map); the full image's target is all ones. "The full and
restored images are jointly used as inputs": read here as both images going through D in one
batch (concatenated along the batch axis), each against its own target map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class MaskGuidedDiscriminator(nn.Module):
    def __init__(self, widths: list[int] | tuple[int, ...] = (16, 32, 64, 64), in_channels: int = 3,
                 use_spectral_norm: bool = True):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"the SAHN discriminator has four stride-2 convolutions; got widths {list(widths)}")
        sn = spectral_norm if use_spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        cin = in_channels
        for w in widths:
            layers += [sn(nn.Conv2d(cin, w, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = w
        layers.append(nn.Conv2d(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mask_target_map(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Target of the restored image: 1 = real patch, 0 = generated, fractional on hole borders."""
    return 1.0 - F.adaptive_avg_pool2d(mask, size)


def discriminator_loss(disc: nn.Module, image: torch.Tensor, restored: torch.Tensor,
                       mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 18 as binary cross-entropy on logits, per patch: real image → 1, restored → 1 − M↓."""
    logits = disc(torch.cat([image, restored], 0))
    real, fake = logits.split(image.shape[0], 0)
    target = mask_target_map(mask, fake.shape[-2:])
    loss_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
    loss_fake = F.binary_cross_entropy_with_logits(fake, target)
    return loss_real + loss_fake, {"real": loss_real, "fake": loss_fake}


def generator_adversarial_loss(disc: nn.Module, restored: torch.Tensor) -> torch.Tensor:
    """Eq. 17 in its non-saturating form −log D(I_pred), averaged over all patches.

    Choice: the paper writes the saturating E[log(1 − D)]; the non-saturating form has the same
    fixed point and usable gradients early in training (Goodfellow et al. 2014).
    """
    logits = disc(restored)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
