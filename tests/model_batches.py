"""Shared by the model tests: a one-thread (seeded or not) torch for each test, real-photo batches
and a centred box hole, seeded random batches with an off-centre box hole, a seeded random
teacher checkpoint, the build contexts without / with the seeded random perceptual backbone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from inpaintbench.models.base import BuildContext

NO_BACKBONE = BuildContext(perceptual={"backbone": "none"})
RANDOM_VGG = BuildContext(perceptual={"backbone": "random-vgg16", "width": 0.25})


def _on_one_thread(seed: int | None):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if seed is not None:
        torch.manual_seed(seed)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread():
    """Import this fixture into a test module to run each of its tests on one thread, seeded."""
    yield from _on_one_thread(0)


@pytest.fixture(autouse=True)
def one_thread_unseeded():
    """As `one_thread`, without seeding the global generator (for modules whose tests seed their own)."""
    yield from _on_one_thread(None)


def photo_batch(size: int = 32, n: int = 2) -> torch.Tensor:
    """n real-photo crops (astronaut, chelsea) resized to size x size, N3HW in [0, 1]."""
    crops = [data.astronaut()[30:330, 100:400], data.chelsea()[0:300, 100:400]]
    t = torch.stack([torch.from_numpy(c.astype(np.float32) / 255).permute(2, 0, 1) for c in crops])
    return F.interpolate(t, size=(size, size), mode="area")[torch.arange(n) % 2]


def box_mask(size: int = 32, n: int = 2) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size)
    m[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1   # 1 = hole
    return m


def rand_box_batch(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n uniform-random N3HW images from their own generator (seed) and an off-centre box hole
    (rows size/4 to 5size/8, columns size/8 to size/2; 1 = hole)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, generator=gen)
    mask = torch.zeros(n, 1, size, size)
    mask[..., size // 4: size // 2 + size // 8, size // 8: size // 2] = 1.0
    return image, mask


def save_random_teacher(path: Path, widths: list[int]) -> Path:
    """A random TeacherCNN (seed 0, 3 images in, classes a/b/c) saved at path, as the SAHN/SPL/SPN
    builds load it (artifacts.teacher)."""
    from inpaintbench.train.teacher import TeacherCNN, save_teacher

    torch.manual_seed(0)
    save_teacher(path, TeacherCNN(3, widths), ["a", "b", "c"], {"widths": widths})
    return path
