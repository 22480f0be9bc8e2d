"""Classical baseline: biharmonic inpainting (scikit-image `inpaint_biharmonic`), no training."""
from __future__ import annotations

import numpy as np
from skimage.restoration import inpaint_biharmonic

from .base import BuildContext, ClassicalModel
from .registry import register


class Biharmonic(ClassicalModel):
    def inpaint_numpy(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hole = mask > 0.5
        if not hole.any():
            return image.copy()
        filled = inpaint_biharmonic(image, hole, channel_axis=-1)
        return np.where(hole[..., None], np.clip(filled, 0, 1), image).astype(np.float32)


class CopyInput(ClassicalModel):
    """The floor every learned model must beat: the masked input itself (holes stay black)."""

    def inpaint_numpy(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return (image * (1 - mask[..., None])).astype(np.float32)


@register("biharmonic", learned=False)
def build(args: dict, loss: dict, ctx: BuildContext) -> Biharmonic:
    return Biharmonic(**args)


@register("copy_input", learned=False)
def build_copy(args: dict, loss: dict, ctx: BuildContext) -> CopyInput:
    return CopyInput(**args)

