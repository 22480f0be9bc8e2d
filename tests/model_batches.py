"""Shared by the model tests: a one-thread seeded torch for each test, real-photo batches and a
centred box hole, the build contexts without / with the seeded random perceptual backbone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from inpaintbench.models.base import BuildContext

NO_BACKBONE = BuildContext(perceptual={"backbone": "none"})
RANDOM_VGG = BuildContext(perceptual={"backbone": "random-vgg16", "width": 0.25})


@pytest.fixture(autouse=True)
def one_thread():
    """Import this fixture into a test module to run each of its tests on one thread, seeded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def photo_batch(size: int = 32, n: int = 2) -> torch.Tensor:
    """n real-photo crops (astronaut, chelsea) resized to size x size, N3HW in [0, 1]."""
    crops = [data.astronaut()[30:330, 100:400], data.chelsea()[0:300, 100:400]]
    t = torch.stack([torch.from_numpy(c.astype(np.float32) / 255).permute(2, 0, 1) for c in crops])
    return F.interpolate(t, size=(size, size), mode="area")[torch.arange(n) % 2]


def box_mask(size: int = 32, n: int = 2) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size)
    m[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1   # 1 = hole
    return m
