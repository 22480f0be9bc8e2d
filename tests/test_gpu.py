"""Training on CUDA with bf16 autocast (skipped where no GPU is visible)."""
import pytest
import torch

from inpaintbench.config import load_params
from inpaintbench.train import checkpoints
from inpaintbench.train.trainer import train_job

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_trains_on_cuda_with_bf16_autocast(project):
    from inpaintbench.cli import main

    for argv in (["prepare", "photos"], ["masks", "generated", "--size", "32"], ["pairs", "tiny", "photos", "--split", "val"]):
        assert main(argv) == 0
    params = load_params()
    params.raw["device"] = "cuda"
    out = train_job(params, "tiny", "photos", "pconv", track=False, progress=False)
    state = checkpoints.load(out)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
