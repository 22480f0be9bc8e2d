"""`inpaintbench inpaint` on the user's own files: single image and folder mode, with a classical,
a trained and a released model; composite convention and the errors for bad masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_params, write_params
from inpaintbench import paths
from inpaintbench.cli import main
from inpaintbench.config import load_params
from inpaintbench.inpaint import run_inpaint
from inpaintbench.models import registry
from inpaintbench.models.base import BuildContext
from inpaintbench.train.checkpoints import save


def write_rgb(path, h, w, seed):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def write_mask(path, h, w, box=(4, 12, 6, 20), values=(0, 255)):
    m = np.full((h, w), values[0], np.uint8)
    m[box[0]:box[1], box[2]:box[3]] = values[1]
    Image.fromarray(m).save(path)
    return m > 127


def read(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_single_image_with_a_classical_method_keeps_known_pixels(project):
    img = write_rgb(project / "a.png", 24, 30, 0)   # not a multiple of 8: padded and cropped back
    hole = write_mask(project / "a_mask.png", 24, 30)
    assert main(["inpaint", "--model", "biharmonic", "--image", "a.png", "--mask", "a_mask.png", "-o", "out.png"]) == 0
    out = read(project / "out.png")
    assert out.shape == img.shape
    assert np.array_equal(out[~hole], img[~hole])            # out = pred*mask + image*(1-mask)
    assert np.abs(out[hole].astype(int) - img[hole]).mean() > 1  # the hole was filled, not copied


def test_odd_sizes_are_padded_to_what_the_model_needs(project):
    from inpaintbench.inpaint import inpaint_array
    from inpaintbench.models.rfr import RFRNet

    model = RFRNet(base=4, recurrences=1).eval()   # needs sides that are multiples of 16
    rng = np.random.default_rng(0)
    image = rng.random((37, 45, 3)).astype(np.float32)
    mask = np.zeros((37, 45), np.float32)
    mask[10:20, 12:30] = 1
    out = inpaint_array(model, image, mask)
    assert out.shape == image.shape and np.isfinite(out).all()
    assert np.array_equal(out[mask == 0], image[mask == 0])


def test_errors_for_size_mismatch_and_non_binary_masks(project, capsys):
    write_rgb(project / "a.png", 24, 30, 0)
    write_mask(project / "small.png", 20, 30)
    assert main(["inpaint", "--model", "biharmonic", "--image", "a.png", "--mask", "small.png", "-o", "o.png"]) == 2
    assert "30x20 but image a.png is 30x24" in capsys.readouterr().err
    write_mask(project / "grey.png", 24, 30, values=(0, 200))
    assert main(["inpaint", "--model", "biharmonic", "--image", "a.png", "--mask", "grey.png", "-o", "o.png"]) == 2
    err = capsys.readouterr().err
    assert "not binary" in err and "--threshold" in err and not (project / "o.png").exists()
    assert main(["inpaint", "--model", "biharmonic", "--image", "a.png", "--mask", "grey.png", "-o", "o.png",
                 "--threshold", "0.5"]) == 0
    with pytest.raises(SystemExit):  # argparse names the valid models
        main(["inpaint", "--model", "no-such-model", "--image", "a.png", "--mask", "grey.png", "-o", "o.png"])
    assert "invalid choice: 'no-such-model'" in capsys.readouterr().err


def test_invert_mask_swaps_hole_and_known(project):
    img = write_rgb(project / "a.png", 16, 16, 1)
    keep = write_mask(project / "keep.png", 16, 16, box=(0, 16, 0, 10))  # white = keep
    run_inpaint(load_params("params.yaml"), "copy-input", "a.png", "keep.png", "o.png", invert_mask=True, progress=False)
    out = read(project / "o.png")
    assert np.array_equal(out[keep], img[keep]) and not np.array_equal(out[~keep], img[~keep])


def test_folder_mode_matches_masks_by_name(project, capsys):
    (project / "imgs").mkdir()
    (project / "masks").mkdir()
    imgs = {s: write_rgb(project / "imgs" / f"{s}.png", 16, 16, i) for i, s in enumerate(["x", "y"])}
    holes = {"x": write_mask(project / "masks" / "x.png", 16, 16), "y": write_mask(project / "masks" / "y_mask.png", 16, 16, box=(0, 5, 0, 5))}
    assert main(["inpaint", "--model", "biharmonic", "--image", "imgs", "--mask", "masks", "-o", "out"]) == 0
    for s in imgs:
        out = read(project / "out" / f"{s}.png")
        assert np.array_equal(out[~holes[s]], imgs[s][~holes[s]])
    write_rgb(project / "imgs" / "z.png", 16, 16, 5)
    assert main(["inpaint", "--model", "biharmonic", "--image", "imgs", "--mask", "masks", "-o", "out"]) == 2
    assert "no mask in masks for 1 image(s): z.png" in capsys.readouterr().err


def test_trained_model_uses_its_checkpoint(project):
    ctx = BuildContext(image_size=32, perceptual={"backbone": "none"})
    model = registry.build("pconv_unet", {"base": 8, "depth": 3}, {}, ctx)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    save(paths.checkpoint("tiny", "photos", "pconv"),
         {"model": model.state_dict(), "args": {"base": 8, "depth": 3}, "loss": {},
          "context": {"image_size": 32, "seed": 0, "perceptual": {"backbone": "none"}}})
    img = write_rgb(project / "a.png", 32, 32, 3)
    hole = write_mask(project / "m.png", 32, 32)
    assert main(["inpaint", "--model", "pconv", "--image", "a.png", "--mask", "m.png", "-o", "o.png"]) == 0
    x = torch.from_numpy(img / 255.0).float().permute(2, 0, 1)[None]
    m = torch.from_numpy(hole.astype(np.float32))[None, None]
    expected = model.eval().inpaint(x, m)[0].permute(1, 2, 0).numpy()
    assert np.abs(read(project / "o.png") / 255.0 - expected).max() <= 0.5 / 255 + 1e-6


def test_untrained_model_is_a_clear_error(project, capsys):
    write_rgb(project / "a.png", 16, 16, 0)
    write_mask(project / "m.png", 16, 16)
    assert main(["inpaint", "--model", "pconv", "--image", "a.png", "--mask", "m.png", "-o", "o.png"]) == 2
    assert "no trained checkpoint" in capsys.readouterr().err


def test_released_model_from_the_hub_cache(project, monkeypatch, tmp_path):
    from test_released import lama_checkpoint, lama_spec

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))   # the cache is $TORCH_HOME/hub
    data = lama_checkpoint(tmp_path / "hub" / "checkpoints" / "lama-test.ckpt")
    params = tiny_params()
    params["models"]["lama-test"] = lama_spec()
    write_params(project, params)
    image = (data["image"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(image).save(project / "a.png")
    hole = data["mask"][0, 0].numpy() > 0.5
    Image.fromarray((hole * 255).astype(np.uint8)).save(project / "m.png")
    assert main(["inpaint", "--model", "lama-test", "--image", "a.png", "--mask", "m.png", "-o", "o.png"]) == 0
    from inpaintbench.models.released import build_released

    net = build_released("lama-test", lama_spec())
    x = torch.from_numpy(image / 255.0).float().permute(2, 0, 1)[None]
    expected = net.inpaint(x, torch.from_numpy(hole.astype(np.float32))[None, None])[0].permute(1, 2, 0).numpy()
    out = read(project / "o.png") / 255.0
    assert np.abs(out - expected).max() <= 0.5 / 255 + 1e-6
    assert np.array_equal(read(project / "o.png")[~hole], image[~hole])
