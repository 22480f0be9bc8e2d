"""The frozen teacher of SAHN, SPL and SPN (train/teacher.py) is loaded only where it is used:
training builds it once, before the first step; evaluation and inference never do, so a machine
with the model checkpoint but without the teacher's weights evaluates it, with the same output.
End to end on the tiny project (teacher step, training, evaluate.load_method)."""
from __future__ import annotations

import pytest
import torch
import yaml

from inpaintbench import paths
from inpaintbench.cli import main
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.evaluate import load_method
from inpaintbench.models import registry
from inpaintbench.models.base import BuildContext
from inpaintbench.train import teacher as teacher_module
from inpaintbench.train import trainer
from inpaintbench.train.checkpoints import load as load_ckpt
from inpaintbench.train.teacher import (ASL_TRESNET_L_FILE, RESNET50_FILE, STATIC_CHANNELS, LazyTeacher,
                                        teacher_channels)

from conftest import counting_calls, prepare_tiny
from model_batches import rand_box_batch, save_random_teacher

TINY = {  # the built-in (small) defaults
    "sahn": {"arch": "sahn", "requires": ["teacher"]},
    "spn": {"arch": "spn", "requires": ["teacher"]},
}


def _project(project, models, teacher):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["models"].update({m: TINY[m] for m in models})
    p["experiments"]["tiny"]["models"] = [*p["experiments"]["tiny"]["models"], *models]
    p["teacher"] = teacher
    p["training"].update(epochs=1, steps_per_epoch=2, checkpoint_every=2)
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def _counting_steps(monkeypatch) -> list:
    return counting_calls(monkeypatch, trainer, "train_step")


def test_trained_models_evaluate_without_the_teacher_file(project, monkeypatch):
    prepare_tiny(project, textures=False, val=True, test=False)
    _project(project, ["sahn", "spn"], {"kind": "trained", "widths": [4, 8, 8, 8], "epochs": 1})
    assert main(["teacher", "tiny", "photos"]) == 0
    teacher_file = paths.artifact("tiny", "photos", "teacher")
    steps = _counting_steps(monkeypatch)
    builds = counting_calls(monkeypatch, teacher_module, "build_teacher")
    image, mask = rand_box_batch(2, 32)
    outputs = {}
    for i, name in enumerate(("sahn", "spn")):
        assert main(["train", "tiny", "photos", name, "--no-mlflow"]) == 0
        assert len(builds) == i + 1  # once per training run
        state = load_ckpt(paths.checkpoint("tiny", "photos", name))
        assert not [k for k in state["model"] if k.startswith("teacher.")]  # no teacher weights stored
        model = load_method(load_params(), "tiny", "photos", name)
        assert not model.teacher_source.loaded  # evaluation never built it
        outputs[name] = model.inpaint(image, mask)
        assert not model.teacher_source.loaded
    assert len(steps) == 4 and len(builds) == 2  # two steps each; evaluation built no teacher
    teacher_file.unlink()  # a machine with the model checkpoints only
    for name in ("sahn", "spn"):
        model = load_method(load_params(), "tiny", "photos", name)
        assert torch.equal(model.inpaint(image, mask), outputs[name])
        # training it would need the file: the error names it
        with pytest.raises(InpaintBenchError, match="does not exist"):
            model.train()


@pytest.mark.parametrize("kind,file", [("imagenet-resnet50", RESNET50_FILE), ("asl-tresnet-l", ASL_TRESNET_L_FILE)])
def test_training_without_the_weights_stops_before_the_first_step(project, monkeypatch, kind, file):
    prepare_tiny(project, textures=False, val=True, test=False)
    _project(project, ["sahn"], {"kind": kind})
    hub = project / "torch"
    monkeypatch.setenv("TORCH_HOME", str(hub))
    steps = _counting_steps(monkeypatch)
    with pytest.raises(InpaintBenchError) as err:
        trainer.train_job(load_params(), "tiny", "photos", "sahn", track=False, progress=False)
    assert file in str(err.value) and str(hub / "hub" / "checkpoints") in str(err.value)
    assert steps == []
    assert not (paths.run_dir("tiny", "photos", "sahn") / "last.pt").exists()


def test_released_teacher_kinds_build_the_generator_without_their_files(tmp_path, monkeypatch):
    """No weights are read to build SAHN/SPL/SPN: the tap channels of the released teachers are a
    table (checked against the real taps, built on the meta device), inference runs, training
    asks for the file."""
    from torchvision.models import resnet50

    from inpaintbench.train.teacher import ResNet50Taps, TResNetTaps, _tresnet_l

    with torch.device("meta"):
        assert ResNet50Taps(resnet50(weights=None)).channels == STATIC_CHANNELS["imagenet-resnet50"]
        assert TResNetTaps(_tresnet_l(0)).channels == STATIC_CHANNELS["asl-tresnet-l"]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty cache
    image, mask = rand_box_batch(1, 32)
    for arch in ("sahn", "spl", "spn"):
        for kind, file in (("imagenet-resnet50", RESNET50_FILE), ("asl-tresnet-l", ASL_TRESNET_L_FILE)):
            model = registry.build(arch, {}, {}, BuildContext(image_size=32, perceptual={"backbone": "none"},
                                                              teacher={"kind": kind}))
            assert model.teacher_source.channels == STATIC_CHANNELS[kind]
            assert not [k for k in model.state_dict() if "teacher" in k]
            assert model.eval().inpaint(image, mask).shape == image.shape
            with pytest.raises(InpaintBenchError, match=file):
                model.train()


def test_trained_teacher_channels_come_from_the_file_else_the_params(tmp_path):
    path = save_random_teacher(tmp_path / "teacher.pt", [4, 6, 10, 12])
    ctx = BuildContext(artifacts={"teacher": str(path)}, teacher={"kind": "trained", "widths": [1, 2, 3, 4]})
    assert teacher_channels("trained", ctx) == [4, 6, 10]  # the file's saved args win
    path.unlink()
    assert teacher_channels("trained", ctx) == [1, 2, 3]  # absent file: the widths it is trained with
    assert teacher_channels("trained", BuildContext(artifacts={"teacher": str(path)})) == [8, 16, 32]  # defaults
    # a teacher whose taps differ from the channels the model was built for is refused clearly
    save_random_teacher(path, [4, 6, 10, 12])
    lazy = LazyTeacher("trained", BuildContext(artifacts={"teacher": str(path)}))
    lazy.channels = [1, 2, 3]
    with pytest.raises(InpaintBenchError, match="re-run the teacher step"):
        lazy.get()


@pytest.mark.parametrize("arch", ["sahn", "spl"])
def test_old_checkpoints_with_teacher_weights_still_load(tmp_path, arch):
    """Checkpoints written while the teacher was a sub-module hold ``teacher.*`` keys: dropped."""
    path = save_random_teacher(tmp_path / "teacher.pt", [8, 16, 32, 64])
    ctx = BuildContext(image_size=32, perceptual={"backbone": "none"}, artifacts={"teacher": str(path)})
    torch.manual_seed(0)
    model = registry.build(arch, {}, {}, ctx).eval()
    old = {**model.state_dict(), **{f"teacher.net.{k}": v for k, v in model.teacher.state_dict().items()}}
    assert model.teacher_source.loaded and not [k for k in model.state_dict() if k.startswith("teacher.")]
    torch.manual_seed(1)
    again = registry.build(arch, {}, {}, ctx).eval()
    again.load_state_dict(old)  # strict
    assert not again.teacher_source.loaded
    image, mask = rand_box_batch(1, 32)
    assert torch.equal(again.inpaint(image, mask), model.inpaint(image, mask))


def test_teacher_follows_the_generator_memory_format(tmp_path):
    """``training.channels_last`` converts the model before the first step; the teacher built
    there is converted too (as it was when it was a sub-module), and gives the same targets."""
    path = save_random_teacher(tmp_path / "teacher.pt", [8, 16, 32, 64])
    ctx = BuildContext(image_size=32, perceptual={"backbone": "none"}, artifacts={"teacher": str(path)})
    image, _ = rand_box_batch(2, 32)
    plain = registry.build("sahn", {}, {}, ctx)
    nhwc = registry.build("sahn", {}, {}, ctx).to(memory_format=torch.channels_last)
    nhwc.train()
    conv = nhwc.teacher.net.stage2[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert plain.teacher.net.stage2[0].weight.is_contiguous()
    for a, b in zip(nhwc.teacher_features(image), plain.teacher_features(image)):
        assert torch.allclose(a, b, atol=1e-5)
