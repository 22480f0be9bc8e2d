"""params.yaml validation: clear messages for bad keys, wrong types, unknown names."""

import pytest

from inpaintbench.config import Bucket, Params, derive_seed, load_params
from inpaintbench.errors import InpaintBenchError

from conftest import ROOT, tiny_params


def _bad(mutate, match):
    p = tiny_params()
    mutate(p)
    with pytest.raises(InpaintBenchError, match=match):
        Params(p)


def test_tiny_params_are_valid_and_expand_to_train_jobs():
    p = Params(tiny_params())
    jobs = p.train_jobs()
    assert [(j.experiment, j.train, j.model) for j in jobs] == [("tiny", "photos", "pconv")]
    assert p.active_experiments() == ["tiny"]


def test_repository_params_file_is_valid():
    p = load_params(ROOT / "params.yaml")
    assert "builtin" in p.active_experiments()
    assert any(p.is_learned(m) for m in p.experiment("builtin")["models"])


def test_unknown_top_level_key():
    _bad(lambda p: p.update(sed=1), r"unknown key 'sed'")


def test_wrong_type_names_the_key_path():
    _bad(lambda p: p["training"].update(batch_size="eight"), r"training\.batch_size: expected an integer")
    _bad(lambda p: p.update(seed=True), r"seed: expected an integer")


def test_unknown_model_in_experiment():
    _bad(lambda p: p["experiments"]["tiny"]["models"].append("pconvv"), r"experiments\.tiny\.models\[3\]: unknown model 'pconvv'")


def test_unknown_dataset_in_run():
    _bad(lambda p: p["experiments"]["tiny"]["runs"][0]["eval"].append("celebx"), r"unknown dataset 'celebx'")


def test_unknown_architecture():
    _bad(lambda p: p["models"]["pconv"].update(arch="unet9000"), r"unknown architecture 'unet9000'")


def test_bad_device_bucket_suite_and_size():
    _bad(lambda p: p.update(device="tpu"), r"device: expected one of auto, cpu, cuda")
    _bad(lambda p: p["experiments"]["tiny"].update(buckets=["0.1-0.3"]), r"not an interval")
    _bad(lambda p: p["experiments"]["tiny"].update(buckets=["(0.5, 0.3]"]), r"low < high")
    _bad(lambda p: p.update(suite="nope"), r"suite: 'nope'")
    _bad(lambda p: p["datasets"]["textures"].update(size=64), r"prepared at 64 px but the experiment runs at 32 px")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(InpaintBenchError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "p.yaml").write_text("seed: [unclosed\n")
    with pytest.raises(InpaintBenchError, match="not valid YAML"):
        load_params(tmp_path / "p.yaml")


def test_bucket_interval_edges():
    b = Bucket.parse("(0.2, 0.4]")
    assert not b.contains(0.2) and b.contains(0.2000001) and b.contains(0.4) and not b.contains(0.4000001)
    c = Bucket.parse("[0.2,0.4)")
    assert c.contains(0.2) and not c.contains(0.4)
    assert c.label == "[0.2, 0.4)"


def test_model_training_overrides_merge_optimizer():
    p = tiny_params()
    p["models"]["pconv"]["optimizer"] = {"lr": 5e-5, "betas": [0.0, 0.9]}
    params = Params(p)
    t = params.training("pconv")
    assert t["optimizer"] == {"name": "adam", "lr": 5e-5, "betas": [0.0, 0.9]}
    assert t["batch_size"] == 4


def test_derive_seed_is_stable_and_purpose_specific():
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1)
    assert derive_seed(0, "a", 1) != derive_seed(0, "a", 2) != derive_seed(1, "a", 1)


def test_experiment_teacher_block_overlays_the_global_one():
    p = tiny_params()
    p["teacher"] = {"widths": [8, 16, 32, 64], "epochs": 5}
    p["experiments"]["tiny"]["teacher"] = {"widths": [32, 64, 128, 256]}
    assert Params(p).teacher("tiny") == {"widths": [32, 64, 128, 256], "epochs": 5}
