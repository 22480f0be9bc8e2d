"""The contract every model in the registry keeps.

Conventions (DESIGN.md): images float32 RGB in [0, 1], NCHW; masks N1HW with 1 = hole.
The trainer owns the loop (optimizers, AMP, checkpoints, logging); a model owns its losses.

A learned model subclasses `InpaintModel` and implements:

* ``forward(image_in, mask) -> pred``: ``image_in = image * (1 - mask)`` (holes zeroed),
  ``pred`` is the raw N3HW prediction (the caller composites ``pred*mask + image*(1-mask)``).
* ``generator_losses(image, mask) -> StepOutput``: one forward pass plus every generator
  loss term; ``total`` is what the generator optimizer minimises.
* optionally a ``discriminator`` sub-module and ``discriminator_losses(image, mask, pred)``:
  when ``discriminator`` is not None the trainer runs a discriminator step after every
  generator step with its own optimizer (the "optional GAN step").
* optionally ``on_epoch_start(epoch, num_epochs)`` for staged training (e.g. EdgeConnect).

A classical (non-learned) method subclasses `ClassicalModel` and implements ``inpaint_numpy``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn


@dataclass
class StepOutput:
    total: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)
    pred: torch.Tensor | None = None


@dataclass
class BuildContext:
    """What a model factory may need beyond its own params.

    image_size: training/eval resolution; seed: the global seed; perceptual: the params'
    ``perceptual`` block (see train/perceptual.py); artifacts: paths of files other rules
    produced for this model (e.g. {"teacher": "runs/.../teacher.pt"}); num_labels: label
    count of the training set (for teachers); device: torch device string; teacher: the
    experiment's ``teacher`` params block (its ``kind`` picks SAHN/SPL/SPN's teacher, train/teacher.py).
    """

    image_size: int = 64
    seed: int = 0
    perceptual: dict = field(default_factory=lambda: {"backbone": "random-vgg16"})
    artifacts: dict = field(default_factory=dict)
    num_labels: int = 0
    device: str = "cpu"
    teacher: dict = field(default_factory=lambda: {"kind": "trained"})  # the experiment's `teacher` block


def composite(pred: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DESIGN.md: out = pred * mask + image * (1 - mask)."""
    return pred * mask + image * (1 - mask)


class InpaintModel(nn.Module):
    learned: bool = True

    # `discriminator` reads the registered sub-module of that name (None when the model has none).
    # A class attribute would shadow the sub-module, since nn.Module keeps modules in _modules.
    @property
    def discriminator(self) -> nn.Module | None:
        return self._modules.get("discriminator")

    @discriminator.setter
    def discriminator(self, module: nn.Module | None) -> None:
        self._modules["discriminator"] = module

    def forward(self, image_in: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def discriminator_losses(self, image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor) -> StepOutput:
        raise NotImplementedError(f"{type(self).__name__} has no discriminator")

    def generator_parameters(self) -> Iterable[nn.Parameter]:
        disc = set(id(p) for p in self.discriminator.parameters()) if self.discriminator is not None else set()
        return [p for p in self.parameters() if p.requires_grad and id(p) not in disc]

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        return None

    # ---- the perceptual/style-loss backbone (train/perceptual.py): lazy, training only ----------
    def set_backbone(self, backbone) -> None:
        """Hold the perceptual/style-loss network (a `LazyBackbone`, a built module, or None). It
        serves training losses only: built on first training use (`train`, or a loss reading
        ``self.backbone``), never for evaluation, inference or forward; no sub-module, so no state
        dict holds it (the ``backbone.*`` entries of older checkpoints are dropped on load)."""
        from ..train.perceptual import LazyBackbone, drop_backbone_keys

        if isinstance(backbone, nn.Module):
            backbone = LazyBackbone.of(backbone)
        self.__dict__["backbone_source"] = backbone
        if not self.__dict__.get("_drops_backbone_keys"):
            self.register_load_state_dict_pre_hook(drop_backbone_keys)
            self.__dict__["_drops_backbone_keys"] = True

    @property
    def backbone(self) -> nn.Module | None:
        """The frozen perceptual backbone, built (once) on first access, on the model's device."""
        if "backbone" in self._modules:  # a model that assigned a module to `self.backbone` itself
            return self._modules["backbone"]
        source = self.__dict__.get("backbone_source")
        if source is None:
            return None
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        return source.get(first.device if first is not None else None, like=self)

    @backbone.setter
    def backbone(self, value) -> None:  # reached for non-modules (nn.Module.__setattr__ keeps modules)
        self.set_backbone(value)

    def train(self, mode: bool = True):
        """Training mode builds the lazy training-only parts first (the perceptual backbone here;
        SAHN/SPL/SPN add their teacher), so a missing weight file stops a run before its first step."""
        if mode:
            self.backbone  # noqa: B018 (builds it)
        return super().train(mode)

    def load_training_parts(self) -> None:
        """Build now what only training uses and evaluation never loads (perceptual backbone,
        teacher): the trainer calls this right after building the model, before anything else."""
        self.train()

    @torch.no_grad()
    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Composite output for evaluation: N3HW in [0, 1]."""
        pred = self(image * (1 - mask), mask)
        return composite(pred.clamp(0, 1), image, mask)


class PConvLossModel(InpaintModel):
    """A model trained with the partial-convolution losses (Liu et al. 2018, Eq. 8; see
    train/losses.py). Subclasses call ``self.set_backbone(...)`` (the perceptual/style feature
    network, lazy, or None) and set ``self.loss_weights`` (overrides of the Eq. 8 weights)."""

    def generator_losses(self, image: torch.Tensor, mask: torch.Tensor) -> StepOutput:
        from ..train.losses import pconv_losses

        pred = self(image * (1 - mask), mask)
        total, logs = pconv_losses(pred, image, mask, self.backbone, self.loss_weights)
        return StepOutput(total, logs, pred)


class ClassicalModel:
    """A method with no training: works on numpy HxWx3 float images and HxW masks (1 = hole)."""

    learned = False

    def inpaint_numpy(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
