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


# --- the batched perceptual/style passes (train/losses.py) equal the per-input ones -------------

def _old_features(net, x):
    """The backbone as it ran before the batched/NHWC passes: NCHW weights and input, one call."""
    import copy

    ref = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    x = (x.contiguous() - ref.mean) / ref.std
    feats = []
    for block in ref.slices:
        x = block(x)
        feats.append(x)
    return feats


def _feats_close(new, old):
    """Equal to rounding: batched / NHWC convs differ from one NCHW call only in the last bits."""
    return all(torch.allclose(a, b, rtol=1e-5, atol=2e-6 * float(b.abs().max())) for a, b in zip(new, old))


def _close(a, b, rel=1e-5):
    return abs(float(a) - float(b)) <= rel * max(abs(float(b)), 1e-12)


def _batch(seed=0, n=3, size=32):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, generator=g)
    hole = (torch.rand(n, 1, size, size, generator=g) > 0.6).float()
    pred = torch.rand(n, 3, size, size, generator=g).requires_grad_()
    return image, hole, pred


def test_pconv_perceptual_and_style_equal_the_separate_forwards():
    from inpaintbench.train.losses import out_comp_perceptual_style, perceptual_loss, style_loss

    net = build_backbone({"backbone": "random-vgg16", "width": 0.25, "seed": 4})
    image, hole, pred = _batch()
    comp = pred * hole + image * (1 - hole)
    f_gt = [f.detach() for f in _old_features(net, image)]
    f_out, f_comp = _old_features(net, pred), _old_features(net, comp)
    old_perc = perceptual_loss(f_out, f_gt) + perceptual_loss(f_comp, f_gt)
    old_style = style_loss(f_out, f_gt) + style_loss(f_comp, f_gt)
    (old_grad,) = torch.autograd.grad(0.05 * old_perc + 120 * old_style, pred, retain_graph=True)
    perc, style = out_comp_perceptual_style(net, pred, comp, image)
    (grad,) = torch.autograd.grad(0.05 * perc + 120 * style, pred)
    assert _close(perc, old_perc) and _close(style, old_style)
    assert torch.allclose(grad, old_grad, rtol=1e-4, atol=1e-6 * float(old_grad.abs().max()))


def test_out_comp_features_and_grams_equal_the_per_input_ones():
    from inpaintbench.train.losses import gram, out_comp_features

    net = build_backbone({"backbone": "random-vgg16", "width": 0.25, "seed": 5})
    image, hole, pred = _batch(1)
    comp = pred * hole + image * (1 - hole)
    (f_out, f_comp, f_gt), (g_out, g_comp, g_gt) = out_comp_features(net, pred, comp, image, grams=True)
    assert not f_gt[0].requires_grad and not g_gt[0].requires_grad and f_out[0].requires_grad
    for new, x in ((f_out, pred), (f_comp, comp), (f_gt, image)):
        old = _old_features(net, x)
        assert [f.shape for f in new] == [f.shape for f in old]
        assert _feats_close(new, old)
    for new, feats in ((g_out, f_out), (g_comp, f_comp), (g_gt, f_gt)):
        assert all(torch.allclose(a, gram(f), rtol=1e-5, atol=1e-9) for a, f in zip(new, feats))
    assert out_comp_features(net, pred, comp, image)[0][0].shape == f_out[0].shape


def test_batched_and_target_features_split_per_input():
    from inpaintbench.train.losses import batched_features, target_features

    net = build_backbone({"backbone": "random-vgg16", "width": 0.25, "seed": 6})
    a, b = torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 32)
    fa, fb = batched_features(net, a, b)
    assert [f.shape[0] for f in fa] == [2] * 3 and [f.shape[0] for f in fb] == [3] * 3
    for new, x in ((fa, a), (fb, b)):
        assert _feats_close(new, _old_features(net, x))
    (only,) = target_features(net, a.requires_grad_())
    assert not any(f.requires_grad for f in only)


def test_psr_loss_terms_equal_the_separate_forwards():
    from inpaintbench.models.psr import PSRNet
    from inpaintbench.train.losses import gram

    net = build_backbone({"backbone": "random-vgg16", "width": 0.25, "seed": 7})
    model = PSRNet(base=4, backbone=net)
    image, hole, _ = _batch(2, n=2, size=64)
    torch.manual_seed(0)
    out = model.generator_losses(image, hole)
    pred = out.pred.detach()
    comp = pred * hole + image * (1 - hole)
    f_gt, f_out, f_comp = (_old_features(net, x) for x in (image, pred, comp))
    perc = sum((a - g).abs().mean() + (b - g).abs().mean() for a, b, g in zip(f_out, f_comp, f_gt))
    style = sum((gram(a) - gram(g)).pow(2).mean() + (gram(b) - gram(g)).pow(2).mean()
                for a, b, g in zip(f_out, f_comp, f_gt))
    assert _close(out.logs["perceptual"], perc) and _close(out.logs["style"], style)
