"""CCSA: cross-scale coherent semantic attention network for image inpainting
(/work/shared/papers/ccsa_cross_scale_semantic_attention.txt, Sec. 3; registered as ``ccsa``).

Structure (Sec. 3.1; Figures 1-2 are described only in the text, so the wiring is our reading):

    encoder   BB1 (H/2) -> BB2 (H/4) -> BB3 (H/8) -> BB4 (H/16)     four basic blocks, one per scale
              SRA_j adds BB_j's gated semantic residual to BB_{j+1}  (``res``; Sec. 3.1)
    decoder   h = BB4;  for j = 3, 2, 1 ("attention from deep to shallow"):
                CCSA_j(h, BB_j): SCA search + generation on h (Sec. 3.2, Eq. 1-2),
                                 score on h (Eq. 3-4), blended with CCSA_{j+1}'s score (Eq. 5),
                                 BB_j's features reconstructed in the holes (Eq. 6)   (``att``)
                h = MSFF(BB_j', h): dilated 3x3 convs r = 1, 2, 4, 8, per-scale scores,
                                 1x1 fusion with the high-level h (Eq. 7-9)
    head      nearest x2, concat with the masked input image and the mask, one 3x3 conv -> RGB
              (the paper gives no output layer; ours is linear, the trainer's composite clamps).

``att: false`` drops the three CCSA modules (the lower-level features go to MSFF as they are),
``res: false`` drops the three SRA modules; everything else is shared by the four ablation
variants RES{0,1}ATT{0,1} (Sec. 5). Hole masks per level: a position of a level's grid is a
hole when more than half of the input pixels it covers are holes (used by SCA and Eq. 6 only;
the partial convolutions keep their own updated masks, Liu et al. 2018).

Widths: BB_j has min(base * 2^(j-1), max_width) channels; ``depth`` partial convs per BB path;
``first_stride`` (default 2) is BB1's stride, so BB_j works at H / (first_stride * 2^(j-1)); 4
puts every scale one octave coarser (the "tiny" CPU setting below).
Small default (built-in 64x64 CPU run, ``DEFAULT_ARGS``): base 8, max_width 32, depth 1, first_stride 4
(BBs at 16, 8, 4, 2 px for a 64 px input; 117,801 parameters), sized for the ~120 ms/step budget
(batch 8, 64x64, one thread, including the partial-conv losses with the width-0.25 random VGG).
Paper scale (Table 3 reports 100 M parameters; widths are not given): base 128, max_width 896, depth 4 (see
``PAPER_SCALE_ARGS``: widths 128, 256, 512, 896, chosen so that the count, 99,989,877, matches
Table 3; asserted in tests/test_ccsa.py).

Loss: the paper states none. We use the partial-convolution losses of Liu et al. 2018, Eq. 8
(train/losses.py: ``pconv_losses``: valid + 6 hole + 0.05 perceptual + 120 style + 0.1 TV)
with the perceptual backbone from params (``lazy_backbone(ctx.perceptual, ctx)``, built on
first training use only), the same for all four variants; weights may be overridden by
``loss.weights``. Optimizer (set in params, Sec. 4.1): Adam, lr 1e-4, betas (0.9, 0.999).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InpaintBenchError
from ..train.perceptual import lazy_backbone
from .base import BuildContext, PConvLossModel
from .layers.ccsa_attention import CrossScaleCoherentAttention
from .layers.ccsa_blocks import BasicBlock, MultiScaleFusion, SemanticResidualAttention
from .registry import register

NUM_SCALES = 4  # "four BBs are included, each BB represents a distinct scale space" (Sec. 3.1)
DEFAULT_ARGS = {"base": 8, "max_width": 32, "depth": 1, "first_stride": 4, "res": True, "att": True}
PAPER_SCALE_ARGS = {"base": 128, "max_width": 896, "depth": 4, "first_stride": 2, "res": True, "att": True}


def level_hole(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Hole mask on a coarser grid: 1 where more than half the covered input pixels are holes."""
    return (F.adaptive_avg_pool2d(mask, size) > 0.5).to(mask.dtype)


class CCSANet(PConvLossModel):
    def __init__(self, base: int = 12, max_width: int = 48, depth: int = 1, res: bool = True,
                 att: bool = True, first_stride: int = 2, smooth_k: int = 3, softmax_scale: float = 10.0,
                 sra_reduction: int = 4, backbone: nn.Module | None = None, loss_weights: dict | None = None):
        super().__init__()
        self.res, self.att = bool(res), bool(att)
        widths = [min(base * 2 ** j, max_width) for j in range(NUM_SCALES)]
        self.widths = widths
        cins = [3] + widths[:-1]
        self.first_stride = int(first_stride)
        strides = [self.first_stride] + [2] * (NUM_SCALES - 1)
        self.blocks = nn.ModuleList(BasicBlock(cins[j], widths[j], depth, strides[j]) for j in range(NUM_SCALES))
        self.sra = nn.ModuleList(
            SemanticResidualAttention(widths[j], widths[j + 1], sra_reduction) for j in range(NUM_SCALES - 1)
        ) if self.res else None
        # joint j links BB_{j+1} (high) to BB_j (low), j = 0..2; the deepest joint has no previous score
        self.ccsa = nn.ModuleList(
            CrossScaleCoherentAttention(has_prev=j < NUM_SCALES - 2, smooth_k=smooth_k, softmax_scale=softmax_scale)
            for j in range(NUM_SCALES - 1)
        ) if self.att else None
        self.msff = nn.ModuleList(MultiScaleFusion(widths[j], widths[j + 1]) for j in range(NUM_SCALES - 1))
        self.head = nn.Conv2d(widths[0] + 4, 3, 3, padding=1)
        self.set_backbone(backbone)  # lazy: built on first training use only (models/base.py)
        self.loss_weights = loss_weights or {}

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, w = image_in.shape[-2:]
        step = self.first_stride * 2 ** (NUM_SCALES - 1)
        if h % step or w % step:
            raise InpaintBenchError(f"ccsa needs image sides divisible by {step}, got {h}x{w}; "
                                    f"crop or resize the images (e.g. to 64, 128 or 256)")
        x, valid = image_in, 1 - mask  # partial conv wants 1 = known
        feats = []
        for j, block in enumerate(self.blocks):
            x, valid = block(x, valid)
            if self.sra is not None and j > 0:
                x = self.sra[j - 1](feats[-1], x)  # SRA: residual from BB_j to BB_{j+1}
            feats.append(x)
        high, prev_score = feats[-1], None
        for j in reversed(range(NUM_SCALES - 1)):  # deep to shallow
            low = feats[j]
            if self.ccsa is not None:
                high, low, prev_score = self.ccsa[j](
                    high, level_hole(mask, high.shape[-2:]), low, level_hole(mask, low.shape[-2:]), prev_score)
            high = self.msff[j](low, high)
        up = F.interpolate(high, size=(h, w), mode="nearest")
        return self.head(torch.cat([up, image_in, mask], 1))


@register("ccsa")
def build(args: dict, loss: dict, ctx: BuildContext) -> CCSANet:
    backbone = lazy_backbone(ctx.perceptual, ctx)
    return CCSANet(backbone=backbone, loss_weights=loss.get("weights"), **{**DEFAULT_ARGS, **args})
