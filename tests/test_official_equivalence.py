"""Our baselines against their official code.

Each fixture in tests/fixtures/official/ was generated once by running the official repository's
model code (commit in the fixture's ``meta`` and below) with seeded random weights on a seeded small
input; it holds those weights in the official key layout and the official output. Our converter
must use every official key (strict load, nothing missing) and our model must reproduce the
official output to 1e-5. The official code itself is not part of this repository.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "official"
COMMITS = {
    "lama": "786f5936b27fb3dacd2b1ad799e4de968ea697e7",  # advimman/lama
    "edgeconnect": "3142579785c5c8cc92ad655616d40f4f52fc7ec1",  # knazeri/edge-connect
}


def fixture(name: str) -> dict:
    data = torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)
    assert data["meta"]["commit"] == COMMITS[name]
    return data


def assert_close(ours: torch.Tensor, official: torch.Tensor) -> float:
    assert ours.shape == official.shape
    diff = float((ours - official).abs().max())
    assert diff <= 1e-5, f"max abs diff {diff:.3g} against the official output"
    return diff


def test_lama_fourier_matches_official_ffc_resnet_generator():
    from inpaintbench.models.lama import LamaGenerator, convert_official_generator

    data = fixture("lama")
    official = {k[len("generator."):]: v for k, v in data["state_dict"].items() if k.startswith("generator.")}
    args, state = convert_official_generator(official)
    assert args == {"ngf": 4, "n_down": 3, "n_blocks": 2, "ratio_g": 0.75}
    gen = LamaGenerator(**args)
    gen.load_state_dict(state, strict=True)  # every official key used, none of ours missing
    assert len(state) == len(official)
    gen.eval()
    image, mask = data["image"], data["mask"]
    with torch.no_grad():
        out = gen(torch.cat([image * (1 - mask), mask], 1))
    assert_close(out, data["output"])


def test_edgeconnect_matches_official_edge_and_inpaint_generators():
    from inpaintbench.models.edgeconnect import EdgeConnect
    from inpaintbench.models.layers.edge_blocks import convert_official_generator, official_generator_args

    data = fixture("edgeconnect")
    g1_official, g2_official = data["edge_gen"]["generator"], data["inpaint_gen"]["generator"]
    assert official_generator_args(g1_official) == {"base": 4, "res_blocks": 2}
    model = EdgeConnect(base=4, res_blocks=2).eval()
    model.g1.load_state_dict(convert_official_generator(g1_official), strict=True)
    model.g2.load_state_dict(convert_official_generator(g2_official), strict=True)
    image, mask = data["image"], data["mask"]
    with torch.no_grad():
        out = model.complete(image * (1 - mask), data["gray"] * (1 - mask), data["edges"], mask)
    assert_close(out, data["output"])
