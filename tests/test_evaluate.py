"""Evaluation end to end on a tiny project: per-image metrics, FID per bucket, aggregation,
and clear errors for bad inputs."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from inpaintbench import paths
from inpaintbench.cli import main
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.evaluate import evaluate_job
from inpaintbench.io import load_image, read_csv
from inpaintbench.metrics.quality import psnr
from inpaintbench.report.aggregate import aggregate_experiment

from conftest import prepare_tiny


@pytest.fixture
def pairs_ready(project):
    prepare_tiny(project, val=False)
    return project


def _set(project, **blocks):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p.update(blocks)
    (project / "params.yaml").write_text(yaml.safe_dump(p))


def test_metrics_per_image_match_an_independent_recomputation(pairs_ready):
    _set(pairs_ready, fid={"enabled": False})
    out = evaluate_job(load_params(), "tiny", "photos", "copy-input")
    rows = read_csv(out)
    assert len(rows) == 2 * 2 * 3  # datasets × buckets × pairs
    pairs = {r["pair_id"]: r for r in read_csv(paths.pairs_csv("tiny", "photos", "test"))}
    for r in rows[:6]:
        p = pairs[r["pair_id"]]
        img = load_image(p["image_path"])
        mask = np.asarray(load_image(p["mask_path"]))[..., 0] > 0.5
        copy = img * (1 - mask[..., None])  # the floor: holes stay black
        assert float(r["psnr"]) == pytest.approx(psnr(copy, img), abs=1e-4)
    status = json.loads((out.parent / "fid_status.json").read_text())
    assert status == {"computed": False, "reason": "FID not computed: disabled in params.yaml (fid.enabled: false)."}


def test_fid_per_bucket_reaches_the_summary(pairs_ready):
    # random-init Inception: exercises the FID path offline (the report says it is not a real FID)
    _set(pairs_ready, fid={"enabled": True, "random_init": True, "batch_size": 8})
    params = load_params()
    for model in ("copy-input", "biharmonic"):
        evaluate_job(params, "tiny", "photos", model)
    fid = pd.read_csv(paths.result_dir("tiny", "photos", "biharmonic") / "fid.csv")
    assert set(fid["bucket"]) == {"(0.1, 0.3]", "(0.3, 0.5]", "all"}
    assert (fid[fid["bucket"] == "all"]["count"] == 6).all()
    params.raw["experiments"]["tiny"]["models"] = ["copy-input", "biharmonic"]
    summary = pd.read_csv(aggregate_experiment(params, "tiny"))
    f = summary[(summary["metric"] == "fid") & (summary["bucket"] == "all")].set_index(["dataset", "model"])["mean"]
    # filling holes smoothly is closer to the ground-truth distribution than leaving them black
    assert f[("photos", "biharmonic")] < f[("photos", "copy-input")]


def test_fid_required_but_weights_missing_is_a_clear_error(pairs_ready, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _set(pairs_ready, fid={"enabled": True})
    with pytest.raises(InpaintBenchError, match=r"pt_inception-2015-12-05-6726825d\.pth.*checkpoints"):
        evaluate_job(load_params(), "tiny", "photos", "copy-input")


def test_corrupt_image_in_pairs_is_a_clear_error(pairs_ready, capsys):
    first = read_csv(paths.pairs_csv("tiny", "photos", "test"))[0]["image_path"]
    with open(first, "wb") as fh:
        fh.write(b"not a png")
    assert main(["evaluate", "tiny", "photos", "copy-input"]) == 2
    err = capsys.readouterr().err
    # the manifest's sha256 catches the damaged file before it is decoded
    assert "does not match the sha256 in the manifest" in err and first in err and "Traceback" not in err


def test_undecodable_image_is_a_clear_error(tmp_path):
    from inpaintbench.io import load_image

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InpaintBenchError, match=r"cannot read image .*bad\.png"):
        load_image(bad)


def test_missing_checkpoint_names_the_step_to_run(pairs_ready, capsys):
    assert main(["evaluate", "tiny", "photos", "pconv"]) == 2
    assert "run the training step first" in capsys.readouterr().err
