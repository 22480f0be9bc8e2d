"""The perceptual/style-loss backbone (train/perceptual.py) is built only where it is used:
training builds it once, before the first step and before MLflow opens a run; evaluation,
inference and forward never do, so a machine with the model checkpoint but without the VGG16
file evaluates it, with the same output. No state dict holds the backbone (old checkpoints'
``backbone.*`` entries are dropped on load). The ImageNet VGG16 is read memory-mapped into a
meta-device skeleton in torchvision's layout without importing torchvision; the seeded stand-in
has the same weights, and the build draws the same global random numbers, as the eager build."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from torch import nn

from inpaintbench import paths, tracking
from inpaintbench.cli import main
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.evaluate import load_method
from inpaintbench.models import registry
from inpaintbench.models.base import BuildContext
from inpaintbench.train import perceptual, trainer
from inpaintbench.train.checkpoints import load as load_ckpt
from inpaintbench.train.perceptual import (VGG16_FILE, VGG16Features, _vgg16_layers_scaled, build_backbone,
                                           lazy_backbone)

from conftest import ROOT, counting_calls, prepare_tiny
from model_batches import rand_box_batch, save_random_teacher

VGG = {"backbone": "vgg16"}


def save_vgg16_stand_in(torch_home, seed: int = 0):
    """A seeded file in torchvision's VGG16 key layout (``features.N.*``) in the hub cache: the
    layers up to pool3 VGG16Features uses, plus two entries of the rest (ignored when read)."""
    torch.manual_seed(seed)
    layers = _vgg16_layers_scaled(1.0)
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.bias, std=0.1)
    state = {f"features.{k}": v for k, v in layers.state_dict().items()}
    state.update({"features.17.weight": torch.randn(2, 2), "classifier.0.weight": torch.randn(3, 2)})
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / VGG16_FILE)
    return folder / VGG16_FILE


def _plain_vgg16(path) -> VGG16Features:
    """The eager path as it was: torchvision's VGG16 features, the whole file read, copied in."""
    from torchvision.models import vgg16

    with torch.device("meta"):
        layers = vgg16(weights=None).features[:17]
    layers = layers.to_empty(device="cpu")  # the random init is overwritten by the copy anyway
    state = torch.load(path, map_location="cpu", weights_only=True)
    layers.load_state_dict({k[len("features."):]: v for k, v in state.items()
                            if k.startswith("features.") and int(k.split(".")[1]) < 17})
    return VGG16Features(layers)


def test_vgg16_layers_are_torchvisions_and_the_fast_load_equals_the_plain_one(tmp_path, monkeypatch):
    from torchvision.models import vgg16

    with torch.device("meta"):
        ours, theirs = _vgg16_layers_scaled(1.0), vgg16(weights=None).features[:17]
    assert [str(m) for m in ours] == [str(m) for m in theirs]  # layer by layer (types, shapes, options)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = save_vgg16_stand_in(tmp_path, seed=1)
    fast, plain = build_backbone(VGG), _plain_vgg16(path)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))
    assert not any(t.is_meta for t in [*fast.parameters(), *fast.buffers()])
    assert not any(p.requires_grad for p in fast.parameters()) and not fast.training
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for a, b in zip(fast(x), plain(x)):
        assert torch.equal(a, b)
    # a file without VGG16's layers is a clear error naming it
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(InpaintBenchError, match=VGG16_FILE):
        build_backbone(VGG)


def _eager_random_vgg16(cfg: dict, seed: int) -> VGG16Features:
    """The random-vgg16 build as it was before it became lazy (default init, then the seeded copy)."""
    layers = _vgg16_layers_scaled(float(cfg.get("width", 1.0)))
    gen = torch.Generator().manual_seed(seed)
    for m in layers.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    return VGG16Features(layers)


@pytest.mark.parametrize("width", [0.25, 1.0])
def test_random_vgg16_has_the_eager_weights_and_draws_the_same_global_numbers(width):
    cfg = {"backbone": "random-vgg16", "width": width}
    torch.manual_seed(5)
    eager = _eager_random_vgg16(cfg, 3)
    after_eager = torch.get_rng_state()
    torch.manual_seed(5)
    lazy = lazy_backbone(cfg, BuildContext(seed=3))
    assert torch.equal(torch.get_rng_state(), after_eager)  # a generator built next starts the same
    assert not lazy.loaded
    net = lazy.get()
    assert torch.equal(torch.get_rng_state(), after_eager)  # building it draws nothing more
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), eager.state_dict().values()))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(net(x), eager(x)))


@pytest.mark.parametrize("arch", ["pconv_unet", "ccsa", "lama_fourier", "psr", "rfr", "ctsdg", "edgeconnect"])
def test_models_build_and_evaluate_without_the_vgg16_file(tmp_path, monkeypatch, arch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache
    model = registry.build(arch, {}, {}, BuildContext(image_size=32, perceptual=VGG))
    assert not [k for k in model.state_dict() if "backbone" in k]
    image, mask = rand_box_batch(1, 32)
    assert model.eval().inpaint(image, mask).shape == image.shape
    assert model(image * (1 - mask), mask).shape == image.shape
    assert not model.backbone_source.loaded
    with pytest.raises(InpaintBenchError, match=VGG16_FILE):
        model.train()


def test_sahn_with_vgg16_evaluates_without_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    teacher = save_random_teacher(tmp_path / "teacher.pt", [8, 16, 32, 64])
    model = registry.build("sahn", {}, {}, BuildContext(image_size=32, perceptual=VGG,
                                                        artifacts={"teacher": str(teacher)}))
    image, mask = rand_box_batch(1, 32)
    assert model.eval().inpaint(image, mask).shape == image.shape
    assert not model.backbone_source.loaded and not model.teacher_source.loaded
    with pytest.raises(InpaintBenchError, match=VGG16_FILE):
        model.train()
    save_vgg16_stand_in(tmp_path / "torch")
    model.train()
    assert model.backbone_source.loaded and model.teacher_source.loaded
    assert model.generator_losses(*rand_box_batch(2, 32)).logs["perceptual"] > 0


def test_building_and_evaluating_imports_no_torchvision(tmp_path):
    code = ("import sys, torch\n"
            "from inpaintbench.models.base import BuildContext\n"
            "from inpaintbench.models.pconv import build\n"
            "m = build({}, {}, BuildContext(image_size=32, perceptual={'backbone': 'vgg16'})).eval()\n"
            "m.inpaint(torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32))\n"
            "assert not m.backbone_source.loaded\n"
            "print('torchvision' in sys.modules)\n")
    env = {"TORCH_HOME": str(tmp_path), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_old_checkpoints_with_backbone_weights_still_load():
    torch.manual_seed(0)
    ctx = BuildContext(image_size=32, perceptual={"backbone": "random-vgg16", "width": 0.25})
    model = registry.build("pconv_unet", {}, {}, ctx).eval()
    old = {**model.state_dict(), **{f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}}
    assert len(old) > len(model.state_dict())  # what checkpoints held while it was a sub-module
    torch.manual_seed(1)
    again = registry.build("pconv_unet", {}, {}, ctx).eval()
    again.load_state_dict(old)  # strict
    assert not again.backbone_source.loaded
    image, mask = rand_box_batch(1, 32)
    assert torch.equal(again.inpaint(image, mask), model.inpaint(image, mask))


def test_backbone_follows_the_model_device_and_memory_format(tmp_path):
    """A backbone that is not NHWC by itself (the trained teacher's taps) is converted when the
    model is channels-last at the time it is built, as ``model.to(memory_format=...)`` did."""
    teacher = save_random_teacher(tmp_path / "teacher.pt", [8, 16, 32, 64])
    ctx = BuildContext(image_size=32, perceptual={"backbone": "teacher"}, artifacts={"teacher": str(teacher)})
    plain = registry.build("pconv_unet", {}, {}, ctx)
    nhwc = registry.build("pconv_unet", {}, {}, ctx).to(memory_format=torch.channels_last)
    nhwc.train()
    conv = next(p for p in nhwc.backbone.parameters() if p.dim() == 4 and p.shape[2] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert next(p for p in plain.backbone.parameters() if p.dim() == 4 and p.shape[2] > 1).is_contiguous()
    image, _ = rand_box_batch(2, 32)
    for a, b in zip(nhwc.backbone(image), plain.backbone(image)):
        assert torch.allclose(a, b, atol=1e-5)
    assert not any(p.requires_grad for p in nhwc.backbone.parameters())


# ---- end to end on the tiny project ------------------------------------------------------------

def _vgg_project(project):
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["perceptual"] = {"backbone": "vgg16"}
    p["training"].update(epochs=1, steps_per_epoch=2, checkpoint_every=2, val_pairs=2)
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def test_a_model_trained_with_vgg16_evaluates_after_the_file_is_removed(project, monkeypatch):
    prepare_tiny(project, textures=False, val=True, test=False)
    _vgg_project(project)
    monkeypatch.setenv("TORCH_HOME", str(project / "torch"))
    vgg_file = save_vgg16_stand_in(project / "torch")
    builds, real = [], perceptual._BACKBONES["vgg16"]
    monkeypatch.setitem(perceptual._BACKBONES, "vgg16", lambda *a: builds.append(1) or real(*a))
    assert main(["train", "tiny", "photos", "pconv", "--no-mlflow"]) == 0
    assert len(builds) == 1  # once per training run
    state = load_ckpt(paths.checkpoint("tiny", "photos", "pconv"))
    assert not [k for k in state["model"] if k.startswith("backbone.")]  # no backbone weights stored
    image, mask = rand_box_batch(2, 32)
    model = load_method(load_params(), "tiny", "photos", "pconv")
    out = model.inpaint(image, mask)
    assert not model.backbone_source.loaded and len(builds) == 1
    vgg_file.unlink()  # a machine with the model checkpoint only
    model = load_method(load_params(), "tiny", "photos", "pconv")
    assert torch.equal(model.inpaint(image, mask), out)
    assert not model.backbone_source.loaded


def test_training_without_the_vgg16_file_stops_before_step_1_and_before_mlflow(project, monkeypatch):
    prepare_tiny(project, textures=False, val=True, test=False)
    _vgg_project(project)
    hub = project / "torch"
    monkeypatch.setenv("TORCH_HOME", str(hub))
    steps = counting_calls(monkeypatch, trainer, "train_step")
    runs = counting_calls(monkeypatch, tracking, "Run")
    with pytest.raises(InpaintBenchError) as err:
        trainer.train_job(load_params(), "tiny", "photos", "pconv", track=True, progress=False)
    assert VGG16_FILE in str(err.value) and str(hub / "hub" / "checkpoints") in str(err.value)
    assert steps == [] and runs == []
    run_dir = paths.run_dir("tiny", "photos", "pconv")
    assert not (run_dir / "last.pt").exists() and not (run_dir / "mlflow_run.json").exists()


def test_training_without_the_teacher_file_stops_before_mlflow(project, monkeypatch):
    """The trainer builds SAHN's lazy teacher at the same point (load_training_parts)."""
    from inpaintbench.train.teacher import RESNET50_FILE

    prepare_tiny(project, textures=False, val=True, test=False)
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["models"]["sahn"] = {"arch": "sahn", "requires": ["teacher"]}
    p["experiments"]["tiny"]["models"].append("sahn")
    p["teacher"] = {"kind": "imagenet-resnet50"}
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    monkeypatch.setenv("TORCH_HOME", str(project / "torch"))
    steps = counting_calls(monkeypatch, trainer, "train_step")
    runs = counting_calls(monkeypatch, tracking, "Run")
    with pytest.raises(InpaintBenchError, match=RESNET50_FILE):
        trainer.train_job(load_params(), "tiny", "photos", "sahn", track=True, progress=False)
    assert steps == [] and runs == []
    assert not (paths.run_dir("tiny", "photos", "sahn") / "mlflow_run.json").exists()
