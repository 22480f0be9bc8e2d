"""SAHN (models/sahn.py, layers/spade.py, layers/sahn_*.py, train/teacher.py): CPU, fast, seeded."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from inpaintbench.errors import InpaintBenchError
from inpaintbench.io import save_image
from inpaintbench.models import registry
from inpaintbench.models.base import BuildContext, composite
from inpaintbench.models.layers.sahn_deform import DeformableConv2d, deform_conv2d_grid_sample
from inpaintbench.models.layers.sahn_discriminator import (MaskGuidedDiscriminator, discriminator_loss,
                                                           mask_target_map)
from inpaintbench.models.layers.spade import SPADE, SPADEResBlock
from inpaintbench.models.sahn import (DEFAULT_ARGS, PAPER_ARGS, build_discriminator, build_generator,
                                      prior_loss, reconstruction_loss)
from inpaintbench.train.perceptual import build_backbone
from inpaintbench.train.trainer import train_step
from inpaintbench.train.teacher import (RESNET50_FILE, ResNet50Taps, TeacherCNN, build_teacher, load_teacher,
                                        train_teacher)

from model_batches import one_thread_unseeded, rand_box_batch, save_random_teacher  # noqa: F401 (autouse fixture)

VARIANTS = {"sahn": {}, "sahn-no-unet": {"unet": False}, "sahn-no-msf": {"msf": False}}
TEACHER_WIDTHS = [8, 16, 32, 64]


@pytest.fixture
def teacher_ckpt(tmp_path):
    return save_random_teacher(tmp_path / "teacher.pt", TEACHER_WIDTHS)


def _ctx(path, size=64, backbone="teacher"):
    return BuildContext(image_size=size, perceptual={"backbone": backbone}, artifacts={"teacher": str(path)})


# ---------------------------------------------------------------- building blocks

def test_spade_modulation_matches_formula():
    torch.manual_seed(0)
    spade = SPADE(channels=3, cond_channels=2, hidden=5)
    x = torch.randn(2, 3, 6, 7) * 3 + 1
    cond = torch.randn(2, 2, 6, 7)
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    normed = (x - mean) / torch.sqrt(var + 1e-5)
    hidden = F.relu(F.conv2d(cond, spade.embed[0].weight, spade.embed[0].bias, padding=1))
    lam = 1 + F.conv2d(hidden, spade.to_gamma.weight, spade.to_gamma.bias, padding=1)
    theta = F.conv2d(hidden, spade.to_beta.weight, spade.to_beta.bias, padding=1)
    expected = lam * normed + theta
    assert torch.allclose(spade(x, cond), expected, atol=1e-5)
    # λ and θ are spatial tensors (Fig. 3A), not per-channel vectors
    assert lam.shape == x.shape and lam[0, 0].std() > 0


@pytest.mark.parametrize("backend", ["grid_sample", "torchvision"])
def test_deformable_conv_with_zero_offsets_is_plain_conv(backend):
    torch.manual_seed(0)
    layer = DeformableConv2d(5, 4, 3, backend=backend)
    x = torch.randn(2, 5, 9, 11)
    assert torch.count_nonzero(layer.offset(x)) == 0  # zero-initialised offset predictor
    expected = F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1)
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_grid_sample_backend_matches_torchvision_with_offsets():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 10, requires_grad=True)
    offset = (torch.randn(2, 18, 8, 10) * 2.5).requires_grad_()  # many points fall outside the image
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    bias = torch.randn(4)
    ours = deform_conv2d_grid_sample(x, offset, weight, bias, padding=1)
    ref = deform_conv2d(x, offset, weight, bias, padding=1)
    assert torch.allclose(ours, ref, atol=1e-4)
    g_ours = torch.autograd.grad(ours.square().sum(), [x, offset, weight])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, offset, weight])
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("kw", [{}, {"stride": 2, "padding": 2, "dilation": 2}, {"bias": False}])
def test_deform_weights_equal_torchvisions_deformconv2d(kw):
    """DeformWeights (no torchvision import to build a model) holds the same keys and, for the same
    seed, the same values as torchvision.ops.DeformConv2d, and computes the same function."""
    from torchvision.ops import DeformConv2d

    from inpaintbench.models.layers.sahn_deform import DeformWeights

    torch.manual_seed(3)
    ref = DeformConv2d(6, 5, 3, **{"padding": 1, **kw})
    torch.manual_seed(3)
    ours = DeformWeights(6, 5, 3, **{"padding": 1, **kw})
    assert ref.state_dict().keys() == ours.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k]), k
    for a in ("stride", "padding", "dilation", "kernel_size", "in_channels", "out_channels", "groups"):
        assert getattr(ours, a) == getattr(ref, a), a
    x = torch.randn(2, 6, 9, 9)
    oh = (9 + 2 * ref.padding[0] - ref.dilation[0] * 2 - 1) // ref.stride[0] + 1
    offset = torch.randn(2, 18, oh, oh)
    assert torch.equal(ours(x, offset), ref(x, offset))


def test_building_sahn_does_not_import_torchvision(tmp_path):
    import subprocess
    import sys

    probe = ("import sys; from inpaintbench.models.layers.sahn_deform import DeformableConv2d; "
             "DeformableConv2d(4, 4, 3); print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "False"


def test_spade_resblock_uses_deformable_convs_and_keeps_shape():
    torch.manual_seed(0)
    block = SPADEResBlock(6, 4, cond_channels=3, hidden=5)
    assert isinstance(block.conv_0, DeformableConv2d) and isinstance(block.conv_1, DeformableConv2d)
    out = block(torch.randn(2, 6, 8, 8), torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 4, 8, 8)


def test_prior_loss_matches_hand_computation():
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 0, 0] = 1.0
    mask[0, 0, 0, 1] = 1.0  # top-left 2×2 cell: hole fraction 0.5; 4×4 → 1×1: 2/16
    goals = [torch.ones(1, 1, 4, 4), torch.ones(1, 1, 2, 2), torch.ones(1, 1, 1, 1)]
    priors = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2), torch.full((1, 1, 1, 1), 3.0)]
    alpha = 0.4
    # scale 1: |1-0| weights 1 + 0.4 at two hole pixels, 1 elsewhere -> (14 + 2*1.4) / 16
    s1 = (14 * 1.0 + 2 * 1.4) / 16
    # scale 2: cells with hole fraction 0.5, 0, 0, 0 -> (1.2 + 3) / 4
    s2 = (1 + 0.4 * 0.5 + 3) / 4
    # scale 3: |1-3| * (1 + 0.4 * 2/16)
    s3 = 2 * (1 + 0.4 * 2 / 16)
    got = prior_loss(goals, priors, mask, alpha)
    assert got.item() == pytest.approx(s1 + s2 + s3, rel=1e-6)
    # without hole weighting the hole plays no special role
    assert prior_loss(goals, priors, mask, 0.0).item() == pytest.approx(1 + 1 + 2, rel=1e-6)


def test_reconstruction_loss_weights_the_hole():
    image = torch.zeros(1, 3, 2, 2)
    pred = torch.ones(1, 3, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert reconstruction_loss(pred, image, mask, 5.0).item() == pytest.approx((6 + 3) / 4)


def test_discriminator_target_map_follows_mask():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :32] = 1.0   # left half generated
    mask[..., :16, 32:48] = 1.0  # one more 16×16 patch generated
    mask[..., 16:24, 48:] = 1.0  # half of two patches generated
    target = mask_target_map(mask, (4, 4))[0, 0]
    expected = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0.5], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)
    assert torch.equal(target, expected)

    disc = MaskGuidedDiscriminator((4, 4, 4, 4))
    assert disc(torch.rand(2, 3, 64, 64)).shape == (2, 1, 4, 4)

    # a discriminator that outputs exactly the mask-derived targets beats one that ignores the mask
    hard = torch.zeros(1, 1, 64, 64)
    hard[..., :, :32] = 1.0
    image, restored = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    hard_target = mask_target_map(hard, (4, 4))

    def oracle(x):
        real = torch.full((1, 1, 4, 4), 12.0)
        return torch.cat([real, 24 * hard_target - 12], 0)

    def blind(x):
        return torch.full((2, 1, 4, 4), 12.0)  # calls everything real

    good, parts = discriminator_loss(oracle, image, restored, hard)
    bad, _ = discriminator_loss(blind, image, restored, hard)
    assert good.item() < 1e-4 and parts["fake"].item() < 1e-4
    assert bad.item() > 5.0


# ---------------------------------------------------------------- teacher

def test_teacher_stays_frozen_through_training(teacher_ckpt):
    torch.manual_seed(0)
    model = registry.build("sahn", {}, {}, _ctx(teacher_ckpt, 32))
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert all(not p.requires_grad for p in model.teacher.parameters())
    assert not teacher_ids & {id(p) for p in model.generator_parameters()}
    model.train()
    assert not model.teacher.training and not any(m.training for m in model.teacher.modules())
    opt_g = torch.optim.Adam(model.generator_parameters(), 1e-2)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), 1e-2)
    image, mask = rand_box_batch(2, 32)
    for _ in range(3):
        train_step(model, image, mask, opt_g, opt_d)
    for p in model.teacher.parameters():
        assert p.grad is None
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics


def _tiny_manifest(root, n_per_class=6, size=16):
    """Images whose labels are visible: 'red'/'blue' dominant colour, 'striped' for stripes."""
    rng = np.random.default_rng(0)
    rows = []
    (root / "images").mkdir(parents=True)
    i = 0
    for colour in ("red", "blue"):
        for k in range(n_per_class):
            img = rng.uniform(0, 0.3, (size, size, 3)).astype(np.float32)
            img[..., 0 if colour == "red" else 2] += 0.6
            labels = [colour]
            if k % 2:
                img[::4] = 1.0
                labels.append("striped")
            split = "train" if k < n_per_class - 1 else "val"
            save_image(root / "images" / f"{i}.png", np.clip(img, 0, 1))
            rows.append({"id": str(i), "path": f"images/{i}.png", "split": split, "source": "tiny",
                         "sha256": "", "labels": ";".join(labels)})
            i += 1
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["id", "path", "split", "source", "sha256", "labels"])
        w.writeheader()
        w.writerows(rows)
    (root / "labels.txt").write_text("blue\nred\nstriped\n")
    return root / "manifest.csv"


def test_train_teacher_reduces_loss_and_writes_checkpoint(tmp_path):
    manifest = _tiny_manifest(tmp_path / "prepared")
    out = tmp_path / "runs" / "teacher.pt"
    cfg = {"widths": [4, 8, 8, 8], "epochs": 40, "batch_size": 4, "lr": 1e-2, "input_scale": 1.0}
    metrics = train_teacher(manifest, out, cfg, seed=0, device="cpu")
    assert metrics["num_images"] == 10 and metrics["num_labels"] == 3
    assert metrics["train_loss"] < 0.6 * metrics["initial_loss"]
    assert metrics["epoch_losses"][-1] < metrics["epoch_losses"][0]
    assert 0.0 <= metrics["train_accuracy"] <= 1.0 and metrics["train_accuracy"] > 0.8
    model, state = load_teacher(out)
    assert state["labels"] == ["blue", "red", "striped"]
    assert state["args"] == {"num_labels": 3, "widths": [4, 8, 8, 8]}
    assert not list(out.parent.glob(".teacher.pt*"))  # atomic write left no temp file
    # deterministic: same seed, same checkpoint
    metrics2 = train_teacher(manifest, tmp_path / "again.pt", cfg, seed=0, device="cpu")
    assert metrics2["train_loss"] == metrics["train_loss"]


def test_train_teacher_errors_are_clear(tmp_path):
    manifest = _tiny_manifest(tmp_path / "p")
    with pytest.raises(InpaintBenchError, match="unknown teacher params"):
        train_teacher(manifest, tmp_path / "t.pt", {"width": 3}, 0, "cpu")
    (tmp_path / "p" / "labels.txt").write_text("red\n")
    with pytest.raises(InpaintBenchError, match="not in"):
        train_teacher(manifest, tmp_path / "t.pt", {}, 0, "cpu")
    (tmp_path / "p" / "labels.txt").unlink()
    with pytest.raises(InpaintBenchError, match="labels.txt"):
        train_teacher(manifest, tmp_path / "t.pt", {}, 0, "cpu")


def test_teacher_options_and_errors(tmp_path, teacher_ckpt, monkeypatch):
    with pytest.raises(InpaintBenchError, match="requires: \\[teacher\\]"):
        registry.build("sahn", {}, {}, BuildContext(perceptual={"backbone": "none"}))
    with pytest.raises(InpaintBenchError, match="does not exist"):
        build_teacher("trained", path=str(tmp_path / "missing.pt"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InpaintBenchError) as err:
        build_teacher("resnet50")
    assert RESNET50_FILE in str(err.value) and str(tmp_path / "torch" / "hub" / "checkpoints") in str(err.value)
    with pytest.raises(InpaintBenchError, match="unknown SAHN args"):
        registry.build("sahn", {"widths": 3}, {}, _ctx(teacher_ckpt))
    # the teacher as perceptual backbone: three frozen feature maps
    backbone = build_backbone({"backbone": "teacher"}, _ctx(teacher_ckpt))
    feats = backbone(torch.rand(1, 3, 32, 32))
    assert [f.shape[-1] for f in feats] == [16, 8, 4]
    assert all(not p.requires_grad for p in backbone.parameters())


def test_resnet50_taps_have_the_paper_scales():
    from torchvision.models import resnet50

    taps = ResNet50Taps(resnet50(weights=None))
    feats = taps.features(torch.rand(1, 3, 128, 128))  # I'_full of a 64×64 image
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 64, 64), (256, 32, 32), (512, 16, 16)]


# ---------------------------------------------------------------- whole model

@pytest.mark.parametrize("size", [64, 256])
def test_shapes(teacher_ckpt, size):
    torch.manual_seed(0)
    model = registry.build("sahn", {}, {}, _ctx(teacher_ckpt, size, backbone="none")).eval()
    image, mask = rand_box_batch(1, size)
    with torch.no_grad():
        pred, priors = model.generator(image * (1 - mask), mask)
        goals = model.teacher_features(image)
    assert pred.shape == image.shape and 0 <= pred.min() and pred.max() <= 1
    assert [tuple(p.shape[-2:]) for p in priors] == [(size, size), (size // 2, size // 2), (size // 4, size // 4)]
    assert [p.shape for p in priors] == [g.shape for g in goals]
    assert model.discriminator(image).shape == (1, 1, size // 16, size // 16)
    assert model.inpaint(image, mask).shape == image.shape


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_with_falling_generator_loss(teacher_ckpt, name):
    torch.manual_seed(0)
    model = registry.build("sahn", VARIANTS[name], {}, _ctx(teacher_ckpt, 32))
    model.train()
    disc_ids = {id(p) for p in model.discriminator.parameters()}
    assert disc_ids and not disc_ids & {id(p) for p in model.generator_parameters()}
    opt_g = torch.optim.Adam(model.generator_parameters(), 2e-3, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(model.discriminator.parameters(), 2e-3, betas=(0.0, 0.9))
    image, mask = rand_box_batch(2, 32)
    losses = []
    for _ in range(8):
        out, d = train_step(model, image, mask, opt_g, opt_d)
        losses.append(out.total.item())
    assert set(out.logs) == {"l1", "rec", "perceptual", "adv_g", "prior"}
    assert set(d.logs) == {"real", "fake"}
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0]


def test_ablations_remove_their_part(teacher_ckpt):
    full = registry.build("sahn", {}, {}, _ctx(teacher_ckpt, backbone="none"))
    no_unet = registry.build("sahn", {"unet": False}, {}, _ctx(teacher_ckpt, backbone="none"))
    no_msf = registry.build("sahn", {"msf": False}, {}, _ctx(teacher_ckpt, backbone="none"))
    has = lambda m, cls: any(isinstance(x, cls) for x in m.generator.modules())  # noqa: E731
    assert has(full, SPADEResBlock) and has(full, DeformableConv2d)
    assert has(no_unet, SPADEResBlock)
    assert not has(no_msf, SPADEResBlock) and not has(no_msf, DeformableConv2d) and not has(no_msf, SPADE)
    w = DEFAULT_ARGS["sem_widths"]
    assert full.generator.prior.fuse[0].body[0].in_channels == 2 * w[0]  # U-Net skip concatenated
    assert no_unet.generator.prior.fuse[0].body[0].in_channels == w[0]
    assert len(no_msf.generator.structure.maps) == 1 and len(full.generator.structure.maps) == 3


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts():
    teacher_small = TeacherCNN(3, TEACHER_WIDTHS).channels
    assert teacher_small == [8, 16, 32]
    assert _count(build_generator({}, teacher_small)) == 95_371
    assert _count(build_generator({"unet": False}, teacher_small)) == 93_947
    assert _count(build_generator({"msf": False}, teacher_small)) == 48_323
    assert _count(build_discriminator({})) == 27_385
    # paper scale (256×256, ResNet-50 teacher taps 64/256/512 channels); the paper reports 98.7 M
    # for its whole model including, presumably, the ASL TResNet-L teacher (Sec. 4.5)
    resnet_channels = [64, 256, 512]
    assert _count(build_generator(PAPER_ARGS, resnet_channels)) == 39_799_615
    assert _count(build_generator({**PAPER_ARGS, "unet": False}, resnet_channels)) == 39_574_143
    assert _count(build_generator({**PAPER_ARGS, "msf": False}, resnet_channels)) == 21_243_139
    assert _count(build_discriminator(PAPER_ARGS)) == 2_761_153


def test_composite_and_loss_weights(teacher_ckpt):
    torch.manual_seed(0)
    model = registry.build("sahn", {}, {"weights": {"adversarial": 0.0, "perceptual": 0.0, "prior": 0.0}},
                           _ctx(teacher_ckpt, 32))
    image, mask = rand_box_batch(2, 32)
    out = model.generator_losses(image, mask)
    assert out.total.item() == pytest.approx(float(out.logs["rec"]), rel=1e-5)
    restored = model.inpaint(image, mask)
    assert torch.equal(restored * (1 - mask), image * (1 - mask))
    assert torch.allclose(restored, composite(out.pred.clamp(0, 1), image, mask), atol=1e-6)
    with pytest.raises(InpaintBenchError, match="unknown SAHN loss weights"):
        registry.build("sahn", {}, {"weights": {"l1": 1.0}}, _ctx(teacher_ckpt, 32))


def test_paper_scale_generator_runs():
    torch.manual_seed(0)
    gen = build_generator(PAPER_ARGS, [64, 256, 512]).eval()  # ResNet-50 teacher channels
    image, mask = rand_box_batch(1, 64)
    with torch.no_grad():
        pred, priors = gen(image * (1 - mask), mask)
    assert pred.shape == image.shape
    assert [tuple(p.shape[1:]) for p in priors] == [(64, 64, 64), (256, 32, 32), (512, 16, 16)]
