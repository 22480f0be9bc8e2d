"""The shared frozen teacher of SAHN, SPL and SPN (train/teacher.py): kinds, converter, errors."""
from __future__ import annotations

import copy

import pytest
import torch

from inpaintbench.config import Params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.models.base import BuildContext
from inpaintbench.train.teacher import (ASL_HEAD_KEYS, ASL_TRESNET_L_FILE, ASL_TRESNET_L_URL, RESNET50_FILE,
                                        RESNET50_URL, TeacherCNN, _tresnet_l, build_teacher, convert_asl_tresnet,
                                        save_teacher, teacher_choice, teacher_for, train_teacher)

TRESNET_L = {"width": 76, "layers": [4, 5, 18, 3], "blocks": ["basic", "basic", "bottleneck", "bottleneck"]}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _abn(prefix: str, c: int, gen) -> dict:
    """InPlaceABN keeps weight, bias, running_mean, running_var (no num_batches_tracked); its
    weight may be negative (the effective scale is |γ| + ε)."""
    return {f"{prefix}.weight": torch.randn(c, generator=gen), f"{prefix}.bias": torch.randn(c, generator=gen),
            f"{prefix}.running_mean": torch.randn(c, generator=gen) * 0.1,
            f"{prefix}.running_var": torch.rand(c, generator=gen) + 0.5}


def _conv_abn(prefix: str, cin: int, cout: int, k: int, gen) -> dict:
    """ASL conv2d_ABN = Sequential(Conv2d(bias=False), InPlaceABN): `<prefix>.0`, `<prefix>.1`."""
    return {f"{prefix}.0.weight": torch.randn(cout, cin, k, k, generator=gen) * 0.05, **_abn(f"{prefix}.1", cout, gen)}


def asl_tresnet_l_state(num_classes: int = 9605, seed: int = 0) -> dict:
    """A state dict in the ASL release layout (Alibaba-MIIL/ASL src/models/tresnet/tresnet.py,
    TResnetL with the OpenImages bottleneck head), written from the architecture's description
    — not from the converter — with seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    w = TRESNET_L["width"]
    sd = _conv_abn("body.conv1", 48, w, 3, gen)
    inplanes = w
    for li, (n, kind) in enumerate(zip(TRESNET_L["layers"], TRESNET_L["blocks"]), start=1):
        planes = w * 2 ** (li - 1)
        exp = 1 if kind == "basic" else 4
        stride = 1 if li == 1 else 2
        for b in range(n):
            p = f"body.layer{li}.{b}"
            s = stride if b == 0 else 1
            if b == 0 and (s != 1 or inplanes != planes * exp):  # AvgPool (stride 2) then conv2d_ABN
                sd.update(_conv_abn(f"{p}.downsample.{1 if s == 2 else 0}", inplanes, planes * exp, 1, gen))
            strided = lambda name, cin, cout, k: _conv_abn(f"{p}.{name}.0" if s == 2 else f"{p}.{name}", cin, cout, k, gen)  # noqa: E731
            if kind == "basic":
                sd.update(strided("conv1", inplanes, planes, 3))
                sd.update(_conv_abn(f"{p}.conv2", planes, planes, 3, gen))
                se_c, se_r = planes, max(planes // 4, 64)
            else:
                sd.update(_conv_abn(f"{p}.conv1", inplanes, planes, 1, gen))
                sd.update(strided("conv2", planes, planes, 3))
                sd.update(_conv_abn(f"{p}.conv3", planes, planes * 4, 1, gen))
                se_c, se_r = planes, max(planes * 4 // 8, 64)
            if li < 4:  # layer4 has no SE
                sd.update({f"{p}.se.fc1.weight": torch.randn(se_r, se_c, 1, 1, generator=gen) * 0.05,
                           f"{p}.se.fc1.bias": torch.zeros(se_r),
                           f"{p}.se.fc2.weight": torch.randn(se_c, se_r, 1, 1, generator=gen) * 0.05,
                           f"{p}.se.fc2.bias": torch.zeros(se_c)})
            inplanes = planes * exp
    feats = inplanes
    sd.update({"head.fc.embedding_generator.0.weight": torch.randn(512, feats, generator=gen) * 0.01,
               "head.fc.embedding_generator.0.bias": torch.zeros(512),
               "head.fc.FC.weight": torch.randn(num_classes, 512, generator=gen) * 0.01,
               "head.fc.FC.bias": torch.zeros(num_classes)})
    return sd


@pytest.fixture(scope="module")
def asl_release():
    return {"model": asl_tresnet_l_state(), "num_classes": 9605, "idx_to_class": {0: "a"}}


@pytest.fixture(scope="module")
def timm_body_keys():
    return {k for k in _tresnet_l(0).state_dict() if k.startswith("body.")}


def test_asl_converter_uses_every_key_and_converts_abn(asl_release, timm_body_keys):
    out = convert_asl_tresnet(asl_release, timm_body_keys)
    assert set(out) == timm_body_keys
    src = asl_release["model"]
    body_src = [k for k in src if k not in ASL_HEAD_KEYS]
    # every body key of the file became exactly one timm key
    assert len(body_src) == len([k for k in out if not k.endswith("num_batches_tracked")])
    # a strided BasicBlock's conv sits inside the anti-alias wrapper in ASL (conv1.0.0 / conv1.0.1)
    assert torch.equal(out["body.layer2.0.conv1.conv.weight"], src["body.layer2.0.conv1.0.0.weight"])
    assert torch.equal(out["body.layer3.0.conv2.conv.weight"], src["body.layer3.0.conv2.0.0.weight"])
    assert torch.equal(out["body.layer3.0.downsample.1.conv.weight"], src["body.layer3.0.downsample.1.0.weight"])
    assert torch.equal(out["body.conv1.bn.running_var"], src["body.conv1.1.running_var"])
    # InPlaceABN's effective scale |γ| + ε (ASL's InplacABN_to_ABN)
    g = src["body.layer1.0.conv2.1.weight"]
    assert (g < 0).any()
    assert torch.allclose(out["body.layer1.0.conv2.bn.weight"], g.abs() + 1e-5)


def test_asl_converter_is_strict(asl_release, timm_body_keys):
    extra = copy.copy(asl_release)
    extra["model"] = {**asl_release["model"], "body.layer9.0.conv1.0.weight": torch.zeros(1)}
    with pytest.raises(InpaintBenchError, match="1 unexpected keys"):
        convert_asl_tresnet(extra, timm_body_keys)
    missing = {"model": {k: v for k, v in asl_release["model"].items() if k != "body.layer2.3.se.fc2.bias"}}
    with pytest.raises(InpaintBenchError, match="1 missing keys"):
        convert_asl_tresnet(missing, timm_body_keys)
    no_head = {"model": {k: v for k, v in asl_release["model"].items() if k != "head.fc.FC.weight"}}
    with pytest.raises(InpaintBenchError, match="missing head keys"):
        convert_asl_tresnet(no_head, timm_body_keys)
    with pytest.raises(InpaintBenchError, match="not an ASL release"):
        convert_asl_tresnet(asl_release["model"], timm_body_keys)


def test_asl_teacher_from_the_hub_cache_is_frozen(tmp_path, monkeypatch, asl_release):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InpaintBenchError) as err:
        build_teacher("asl-tresnet-l")
    msg = str(err.value)
    assert ASL_TRESNET_L_FILE in msg and ASL_TRESNET_L_URL in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / ASL_TRESNET_L_FILE
    ckpt.parent.mkdir(parents=True)
    torch.save(asl_release, ckpt)
    teacher = teacher_for(BuildContext(teacher={"kind": "asl-tresnet-l"}))
    assert teacher.kind == "asl-tresnet-l" and teacher.channels == [76, 76, 152]
    src = asl_release["model"]
    assert torch.equal(teacher.net.layer2[1].conv1.conv.weight, src["body.layer2.1.conv1.0.weight"])
    x = torch.rand(2, 3, 64, 64)  # I'_full of a 32x32 image
    feats = teacher(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(76, 32, 32), (76, 16, 16), (152, 8, 8)]
    # the first tap is the stride-4 stem map, nearest-upsampled x2 (SPN's F.interpolate)
    stem = teacher.net.stem(teacher.net.s2d(x))
    assert torch.equal(feats[0][..., ::2, ::2], stem)
    # frozen: no grads, eval mode even after .train(), BN statistics unchanged by forward passes
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    # a corrupt file: clear error naming the file
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(InpaintBenchError, match=ASL_TRESNET_L_FILE):
        build_teacher("asl-tresnet-l")


def test_imagenet_resnet50_teacher_from_the_hub_cache(tmp_path, monkeypatch):
    from torchvision.models import resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InpaintBenchError) as err:
        build_teacher("imagenet-resnet50")
    assert RESNET50_FILE in str(err.value) and RESNET50_URL in str(err.value)
    torch.manual_seed(0)
    net = resnet50(weights=None)
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / RESNET50_FILE
    ckpt.parent.mkdir(parents=True)
    torch.save(net.state_dict(), ckpt)
    teacher = build_teacher("resnet50")  # the old name still works
    assert teacher.kind == "imagenet-resnet50" and teacher.channels == [64, 256, 512]
    assert torch.equal(teacher.net.layer2[0].conv1.weight, net.layer2[0].conv1.weight)


def test_choice_comes_from_the_experiment_unless_the_model_overrides(tmp_path):
    assert teacher_choice(BuildContext()) == {"kind": "trained", "allow_download": False}
    ctx = BuildContext(teacher={"kind": "asl-tresnet-l", "allow_download": True, "widths": [1, 2, 3, 4]})
    assert teacher_choice(ctx) == {"kind": "asl-tresnet-l", "allow_download": True}
    assert teacher_choice(ctx, "resnet50")["kind"] == "imagenet-resnet50"
    with pytest.raises(InpaintBenchError, match="unknown teacher kind"):
        teacher_choice(BuildContext(teacher={"kind": "vgg"}))
    path = tmp_path / "t.pt"
    save_teacher(path, TeacherCNN(2, [4, 4, 4, 4]), ["a", "b"], {"widths": [4, 4, 4, 4]})
    t = teacher_for(BuildContext(artifacts={"teacher": str(path)}))
    assert t.kind == "trained" and t.labels == ["a", "b"]


def _params(kind: str, source: str = "paris-streetview") -> dict:
    return {
        "datasets": {"paris": {"source": source, "size": 64}},
        "masks": {"g": {"source": "generated"}},
        "models": {"sahn": {"arch": "sahn", "requires": ["teacher"]}, "pconv": {"arch": "pconv_unet"}},
        "teacher": {"kind": "trained", "epochs": 2},
        "experiments": {"e": {"size": 64, "runs": [{"train": "paris", "eval": ["paris"]}], "models": ["sahn", "pconv"],
                              "masks": "g", "buckets": ["(0.1, 0.5]"], "teacher": {"kind": kind}}},
    }


def test_trained_teacher_needs_labels_and_only_then_is_a_requirement():
    with pytest.raises(InpaintBenchError) as err:
        Params(_params("trained"))
    msg = str(err.value)
    assert "asl-tresnet-l" in msg and "imagenet-resnet50" in msg and "labels" in msg
    p = Params(_params("asl-tresnet-l"))
    assert p.teacher("e") == {"kind": "asl-tresnet-l", "epochs": 2}
    assert p.requirements("sahn", "e") == []  # no `teacher` rule job for a released teacher
    p = Params(_params("trained", source="builtin"))
    assert p.requirements("sahn", "e") == ["teacher"] and p.requirements("pconv", "e") == []
    with pytest.raises(InpaintBenchError, match="teacher.kind"):
        Params(_params("vgg16", source="builtin"))


def test_no_labels_error_names_the_alternatives(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "manifest.csv").write_text("id,path,split,source,sha256,labels\n0,images/0.png,train,paris,,\n")
    (root / "labels.txt").write_text("")
    with pytest.raises(InpaintBenchError) as err:
        train_teacher(root / "manifest.csv", tmp_path / "t.pt", {"kind": "trained", "epochs": 1}, 0, "cpu")
    assert "asl-tresnet-l" in str(err.value) and "imagenet-resnet50" in str(err.value)


# ---------------------------------------------------------------- fast loading

def _features_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_meta_assign_loading_equals_the_plain_path(tmp_path, monkeypatch, asl_release):
    """build_teacher builds the skeleton on the meta device and assigns the memory-mapped file's
    tensors: the same features, bit for bit, as building a randomly initialised network and
    copying the same seeded weights in; and no global random numbers are drawn."""
    from torchvision.models import resnet50

    from inpaintbench.train.teacher import ResNet50Taps, TResNetTaps, load_teacher

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))

    torch.manual_seed(0)
    plain_r50 = resnet50(weights=None)
    for m in plain_r50.modules():  # non-trivial BN statistics, so the buffers matter too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(plain_r50.state_dict(), hub / RESNET50_FILE)
    torch.save(asl_release, hub / ASL_TRESNET_L_FILE)
    small = TeacherCNN(3, [4, 8, 8, 8])
    save_teacher(tmp_path / "t.pt", small, ["a", "b", "c"], {"widths": [4, 8, 8, 8]})

    plain_tres = _tresnet_l(0)
    keys = {k for k in plain_tres.state_dict() if k.startswith("body.")}
    plain_tres.load_state_dict(convert_asl_tresnet(asl_release, keys), strict=True)
    plain = {"imagenet-resnet50": ResNet50Taps(plain_r50.eval()), "asl-tresnet-l": TResNetTaps(plain_tres.eval()),
             "trained": small.eval()}

    rng = torch.get_rng_state()
    fast = {kind: build_teacher(kind, path=str(tmp_path / "t.pt")) for kind in plain}
    assert torch.equal(rng, torch.get_rng_state())  # nothing randomly initialised
    for kind, ref in plain.items():
        with torch.no_grad():
            assert _features_equal(fast[kind](x), ref.features(x)), kind
        assert not any(t.is_meta for t in [*fast[kind].parameters(), *fast[kind].buffers()])
        ref_state = (ref if kind != "trained" else small).state_dict()
        got = fast[kind].net.state_dict()
        assert set(got) == set(ref_state) and all(torch.equal(got[k], ref_state[k]) for k in got), kind
    # the anti-alias filters (non-persistent buffers, in no state dict) were computed, not left empty
    blur = [m.filt for m in fast["asl-tresnet-l"].modules() if hasattr(m, "filt")]
    ref_blur = [m.filt for m in plain["asl-tresnet-l"].modules() if hasattr(m, "filt")]
    assert blur and len(blur) == len(ref_blur) and all(torch.equal(a, b) for a, b in zip(blur, ref_blur))
    # load_teacher gives the trained teacher's classifier head too
    model, _ = load_teacher(tmp_path / "t.pt")
    with torch.no_grad():
        assert torch.equal(model.eval()(x), small(x))


def test_legacy_format_weight_files_still_load(tmp_path):
    """Files written without torch's zip format cannot be memory-mapped: read whole instead."""
    from inpaintbench.train.teacher import load_teacher

    net = TeacherCNN(2, [4, 4, 4, 4])
    path = tmp_path / "legacy.pt"
    state = {"format": "inpaintbench-teacher/1", "arch": "teacher_cnn", "args": {"num_labels": 2, "widths": [4, 4, 4, 4]},
             "labels": ["a", "b"], "state_dict": net.state_dict(), "metrics": {}}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    model, _ = load_teacher(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("kind", ["imagenet-resnet50", "asl-tresnet-l"])
def test_corrupt_teacher_file_is_a_clear_error_naming_it(kind, tmp_path, monkeypatch):
    from inpaintbench.errors import InpaintBenchError
    from inpaintbench.train import teacher as t

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    name, url = ((t.RESNET50_FILE, t.RESNET50_URL) if kind == "imagenet-resnet50"
                 else (t.ASL_TRESNET_L_FILE, t.ASL_TRESNET_L_URL))
    f = tmp_path / "hub" / "checkpoints" / name
    f.parent.mkdir(parents=True)
    f.write_bytes(b"PK\x03\x04 truncated download")
    with pytest.raises(InpaintBenchError) as err:
        t.build_teacher(kind)
    assert str(f) in str(err.value) and url in str(err.value) and "fresh copy" in str(err.value)
