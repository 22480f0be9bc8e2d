"""Perceptual backbones: the ImageNet VGG16 from the torch.hub cache (clear error offline) and the
seeded random stand-in."""
import pytest
import torch

from inpaintbench.errors import InpaintBenchError
from inpaintbench.train.perceptual import VGG16_FILE, build_backbone


def test_missing_vgg16_weights_offline_name_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InpaintBenchError) as err:
        build_backbone({"backbone": "vgg16"})
    assert VGG16_FILE in str(err.value) and str(tmp_path / "hub" / "checkpoints") in str(err.value)


def test_vgg16_weights_in_the_cache_are_loaded(tmp_path, monkeypatch):
    from torchvision.models import vgg16

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    ref = vgg16(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), tmp_path / "hub" / "checkpoints" / VGG16_FILE)
    net = build_backbone({"backbone": "vgg16"})
    assert torch.equal(net.slices[0][0].weight, ref.features[0].weight)
    assert not any(p.requires_grad for p in net.parameters())
    feats = net(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256]  # pool1, pool2, pool3


def test_random_vgg16_is_seeded_frozen_and_thinned():
    a = build_backbone({"backbone": "random-vgg16", "width": 0.25, "seed": 1})
    b = build_backbone({"backbone": "random-vgg16", "width": 0.25, "seed": 1})
    c = build_backbone({"backbone": "random-vgg16", "width": 0.25, "seed": 2})
    x = torch.rand(2, 3, 32, 32)
    fa, fb, fc = a(x), b(x), c(x)
    assert all(torch.equal(u, v) for u, v in zip(fa, fb))
    assert not torch.equal(fa[0], fc[0])
    assert [f.shape[1] for f in fa] == [16, 32, 64]
    a.train()
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(InpaintBenchError, match="unknown perceptual backbone 'vgg19'"):
        build_backbone({"backbone": "vgg19"})
    assert build_backbone({"backbone": "none"}) is None
