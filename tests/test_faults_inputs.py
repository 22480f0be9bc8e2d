"""Faults, class "inputs" (issue 15): inputs changed under the workflow are found where a step
reads them (a prepared image against its manifest's sha256, which once moved a PSNR from 42.8 to
55.0 silently), and 16-bit greyscale images are scaled, not clipped to white."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inpaintbench import paths
from inpaintbench.cli import main
from inpaintbench.errors import InpaintBenchError
from inpaintbench.evaluate import load_pairs
from inpaintbench.io import load_image, load_mask, read_csv

from conftest import prepare_tiny


@pytest.fixture
def paired(project):
    prepare_tiny(project, val=False)
    return project


def test_prepared_image_changed_after_prepare_is_refused(paired, capsys):
    pairs_csv = paths.pairs_csv("tiny", "textures", "test")
    assert len(load_pairs(pairs_csv, 32)) == 6
    row = read_csv(pairs_csv)[0]
    assert row["image_sha256"]
    img = Image.open(row["image_path"]).convert("RGB")
    Image.fromarray(255 - np.asarray(img)).save(row["image_path"])  # another image, same name and size
    with pytest.raises(InpaintBenchError, match="does not match the sha256"):
        load_pairs(pairs_csv, 32)
    assert main(["evaluate", "tiny", "photos", "biharmonic", "--no-mlflow"]) == 2
    assert "does not match the sha256" in capsys.readouterr().err


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    img = load_image(path)
    assert img.shape == (32, 32, 3)
    np.testing.assert_allclose(img[..., 0], ramp / 65535.0, atol=1e-6)
    assert img.mean() == pytest.approx(0.5, abs=0.01)  # was ~1.0 (clipped to white)


def test_sixteen_bit_mask_is_thresholded_at_mid_grey(tmp_path):
    hole = np.zeros((32, 32), np.uint16)
    hole[:, :16] = 65535
    hole[:, 16:20] = 20000  # below mid-grey: known, though above 255
    path = tmp_path / "m16.png"
    Image.fromarray(hole).save(path)
    mask = load_mask(path, 32)
    assert mask[:, :16].all() and not mask[:, 16:].any()


def test_training_refuses_a_changed_prepared_image(project):
    from inpaintbench.config import load_params
    from inpaintbench.train.trainer import train_job

    for argv in (["prepare", "photos"], ["masks", "generated", "--size", "32"], ["pairs", "tiny", "photos", "--split", "val"]):
        assert main(argv) == 0
    row = next(r for r in read_csv(paths.prepared_manifest("photos")) if r["split"] == "train")
    path = paths.prepared_dir("photos") / row["path"]
    Image.fromarray(255 - np.asarray(Image.open(path).convert("RGB"))).save(path)
    with pytest.raises(InpaintBenchError, match="does not match the sha256"):
        train_job(load_params(), "tiny", "photos", "pconv", track=False, progress=False)
