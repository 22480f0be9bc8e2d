"""DDNM's released diffusion priors (issue 12; models/ddnm_priors.py, models/ddnm.py).

Fixtures in tests/fixtures/official/ (generated once by running the official model code in a
scratch folder, never part of this repository):

* ``ddnm_adm_guided_diffusion.pt``: openai/guided-diffusion @ 22e0df81 ``guided_diffusion/unet.py``
  UNetModel at a tiny config of the released family (32 px, 32 channels, mult 1,2,2, 2 res blocks,
  attention at 16 and 8 px, 8-channel heads = 4 and 8 heads, learn_sigma, resblock_updown,
  scale-shift norm), weights filled from a seed by ``seeded_official_state`` below;
* ``ddnm_ddpm_model.pt``: wyhuai/DDNM @ 00b58eac ``guided_diffusion/models.py`` Model (ermongroup/
  ddim's DDPM network) at ch 32, ch_mult 1,2, 2 res blocks, attention at 16 px, 32 px;
* ``ddnm_official_layouts.pt``: the key names and shapes of the two *full-size* official models
  (ADM 256 uncond per DDNM configs/imagenet_256.yml, the DDPM per configs/celeba_hq.yml) and their
  parameter counts, counted with the official code.

Each holds the official key layout (names and shapes, not the values), the seed, the input x_t,
t and the official output. The converters must use every key and fill every parameter.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_params, write_params
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import ddnm_priors, registry, released
from inpaintbench.models.base import BuildContext
from inpaintbench.models.ddnm import DDNM, RELEASED_PRIORS, resolve_args

FIXTURES = Path(__file__).parent / "fixtures" / "official"
COMMITS = {
    "ddnm_adm_guided_diffusion": ("openai/guided-diffusion", "22e0df8183507e13a7813f8d38d51b072ca1e67c"),
    "ddnm_ddpm_model": ("wyhuai/DDNM", "00b58eac7843a4c99114fd8fa42da7aa2b6808af"),
}
PRIOR = {"ddnm_adm_guided_diffusion": "released-adm", "ddnm_ddpm_model": "released-celebahq"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def seeded_official_state(layout: list, seed: int) -> dict:
    """The official-layout state dict of a fixture, filled in key order from one seeded generator:
    1-D weights (GroupNorm scales) 1 + 0.1 N(0, 1), biases 0.1 N(0, 1), other tensors N(0, 1/fan_in)
    (the fixture generator used exactly this function)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout:
        if len(shape) == 1 and name.endswith("weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / int(torch.Size(shape[1:]).numel()) ** 0.5
        state[name] = t
    return state


def fixture(name: str) -> dict:
    data = torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)
    assert (data["meta"]["repo"], data["meta"]["commit"]) == COMMITS[name]
    return data


@pytest.mark.parametrize("name", sorted(COMMITS))
def test_converted_prior_equals_the_official_output(name):
    data = fixture(name)
    state = seeded_official_state(data["layout"], data["seed"])
    net = ddnm_priors.build_prior(PRIOR[name], state, data["config"]).eval()
    assert sum(p.numel() for p in net.parameters()) == sum(v.numel() for v in state.values())
    with torch.no_grad():
        out = net(data["x"], data["t"]).sample
    assert out.shape == data["output"].shape
    assert float((out - data["output"]).abs().max()) <= 1e-5


def test_adm_attention_needs_the_head_wise_qkv_split(monkeypatch):
    """QKVAttentionLegacy stores [q_h, k_h, v_h] per head: splitting the qkv conv into thirds
    (q = rows 0…C) instead gives a different network."""
    data = fixture("ddnm_adm_guided_diffusion")
    state = seeded_official_state(data["layout"], data["seed"])
    monkeypatch.setattr(ddnm_priors, "_qkv_legacy", lambda w, heads: tuple(w.chunk(3, dim=0)))
    net = ddnm_priors.build_prior("released-adm", state, data["config"]).eval()
    with torch.no_grad():
        out = net(data["x"], data["t"]).sample
    assert float((out - data["output"]).abs().max()) > 1e-2


@pytest.mark.parametrize("name", sorted(COMMITS))
def test_converters_are_strict(name):
    data = fixture(name)
    state = seeded_official_state(data["layout"], data["seed"])
    some = data["layout"][7][0]
    with pytest.raises(InpaintBenchError, match="has no|unfilled"):
        ddnm_priors.build_prior(PRIOR[name], {k: v for k, v in state.items() if k != some}, data["config"])
    with pytest.raises(InpaintBenchError, match="unused"):
        ddnm_priors.build_prior(PRIOR[name], {**state, "extra.weight": torch.zeros(1)}, data["config"])
    bad = dict(state)
    bad[some] = torch.zeros(3, *bad[some].shape)
    with pytest.raises(InpaintBenchError, match="shape"):
        ddnm_priors.build_prior(PRIOR[name], bad, data["config"])


def test_full_size_architectures_equal_the_official_ones():
    """Parameter counts (counted with the official code: ADM 256 uncond 552,814,086, CelebA-HQ DDPM
    113,673,219) and a strict conversion of the full-size official layouts (meta tensors: no memory)."""
    data = torch.load(FIXTURES / "ddnm_official_layouts.pt", map_location="cpu", weights_only=True)
    assert data["meta"]["adm"]["commit"] == COMMITS["ddnm_adm_guided_diffusion"][1]
    assert data["meta"]["ddpm"]["commit"] == COMMITS["ddnm_ddpm_model"][1]
    assert ddnm_priors.OFFICIAL_PARAMS == {"released-adm": 552_814_086, "released-celebahq": 113_673_219}
    for prior, key in (("released-adm", "adm"), ("released-celebahq", "ddpm")):
        assert data["params"][key] == ddnm_priors.OFFICIAL_PARAMS[prior]
        with torch.device("meta"):
            net = ddnm_priors.build_prior(prior)
            official = {k: torch.empty(s) for k, s in data[key]}
        assert sum(p.numel() for p in net.parameters()) == ddnm_priors.OFFICIAL_PARAMS[prior]
        assert sum(v.numel() for v in official.values()) == ddnm_priors.OFFICIAL_PARAMS[prior]
        make, convert, unwrap, cfg = ddnm_priors.PRIOR_FORMATS[prior]
        converted = convert(unwrap({f"module.{k}": v for k, v in official.items()}), cfg, ours=dict(net.state_dict()))
        assert set(converted) == set(net.state_dict())
    assert net.config.sample_size == 256 and net.config.out_channels == 3
    assert ddnm_priors.ADM_256_UNCOND["out_channels"] == 6  # learn_sigma: [ε, v]


# ---------------------------------------------------------------------------- DDNM end to end

TINY = {"released-adm": "ddnm_adm_guided_diffusion", "released-celebahq": "ddnm_ddpm_model"}


@pytest.fixture
def tiny_releases(tmp_path, monkeypatch):
    """The released priors' configs replaced by the fixtures' tiny ones, and their files (official
    layout, seeded weights) in a temporary torch.hub cache under the release file names."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    for prior, name in TINY.items():
        data = fixture(name)
        make, convert, unwrap, _ = ddnm_priors.PRIOR_FORMATS[prior]
        monkeypatch.setitem(ddnm_priors.PRIOR_FORMATS, prior, (make, convert, unwrap, data["config"]))
        torch.save(seeded_official_state(data["layout"], data["seed"]), hub / RELEASED_PRIORS[prior]["file"])
    return hub


def _batch(size=32):
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(2, 3, size, size, generator=gen)
    mask = torch.zeros(2, 1, size, size)
    mask[..., 6:22, 4:20] = 1.0
    return image, mask


@pytest.mark.parametrize("prior", sorted(TINY))
def test_ddnm_over_a_converted_released_prior_keeps_known_pixels(tiny_releases, prior):
    model = registry.build("ddnm", {"prior": prior, "sampling_steps": 3}, {}, BuildContext(image_size=32)).eval()
    data = fixture(TINY[prior])
    with torch.no_grad():  # the model is the converted official network
        assert float((model.unet(data["x"], data["t"]).sample - data["output"]).abs().max()) <= 1e-5
    image, mask = _batch()
    record = []
    x0 = model.sample(image, mask, record=record)
    y = (image * 2 - 1) * (1 - mask)
    assert torch.equal(x0 * (1 - mask), y) and torch.isfinite(x0).all()
    for r in record:  # ε is the prior's first three channels (ADM's last three, its variance, are unused)
        with torch.no_grad():
            full = model.unet(r["x_t"], torch.full((2,), r["t"])).sample
        assert r["eps"].shape[1] == 3 and torch.allclose(r["eps"], full[:, :3], atol=1e-6)
    out = model.inpaint(image, mask)
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    # the file's sha256 was recorded on first use; a changed file is refused
    file = tiny_releases / RELEASED_PRIORS[prior]["file"]
    assert (file.parent / (file.name + ".sha256")).read_text().split()[0] == released.sha256_of(file)
    with open(file, "ab") as f:
        f.write(b"0")
    with pytest.raises(InpaintBenchError, match="changed"):
        registry.build("ddnm", {"prior": prior}, {}, BuildContext(image_size=32))


def _spec(prior, file=None, **weights):
    info = RELEASED_PRIORS[prior]
    return {"arch": "ddnm", "label": f"DDNM ({prior})", "args": {"prior": prior, "sampling_steps": 2},
            "weights": {"format": info["format"], "file": file or info["file"], "sha256": None, "url": info["url"],
                        **weights}}


def test_released_entries_build_through_models_released(tiny_releases, tmp_path):
    image, mask = _batch()
    for prior in TINY:
        model = released.build_released(f"ddnm-{prior}", _spec(prior), image_size=32)
        assert isinstance(model, DDNM) and not model.training and model.args["sampling_steps"] == 2
        with torch.no_grad():
            out = model.inpaint(image, mask)
        assert torch.equal(out * (1 - mask), image * (1 - mask))
    # a user path instead of a cache name; a published sha256 is verified
    path = tmp_path / "elsewhere" / "celeba_hq.ckpt"
    path.parent.mkdir()
    path.write_bytes((tiny_releases / "celeba_hq.ckpt").read_bytes())
    digest = released.sha256_of(path)
    assert released.build_released("c", _spec("released-celebahq", str(path), sha256=digest), image_size=32)
    with pytest.raises(InpaintBenchError, match="expected"):
        released.build_released("c", _spec("released-celebahq", str(path), sha256="0" * 64), image_size=32)
    # the format decides the prior; a contradicting args.prior and a wrong arch are refused
    spec = _spec("released-adm")
    spec["args"]["prior"] = "released-celebahq"
    with pytest.raises(InpaintBenchError, match="args.prior"):
        released.build_released("x", spec, image_size=32)
    with pytest.raises(InpaintBenchError, match="holds a DDNM"):
        released.build_released("x", {**_spec("released-adm"), "arch": "lama_fourier"}, image_size=32)
    with pytest.raises(InpaintBenchError, match="divisible by 4"):
        released.build_released("x", _spec("released-adm"), image_size=30)


def test_missing_released_prior_names_file_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for prior, info in RELEASED_PRIORS.items():
        for build in (lambda: registry.build("ddnm", {"prior": prior}, {}, BuildContext(image_size=256)),
                      lambda: released.build_released("d", _spec(prior), image_size=256)):
            with pytest.raises(InpaintBenchError) as err:
                build()
            msg = str(err.value)
            assert info["file"] in msg and info["url"] in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg


def test_released_schedule_cannot_change():
    with pytest.raises(InpaintBenchError, match="schedule"):
        resolve_args({"prior": "released-adm", "beta_end": 0.03})
    assert resolve_args({"prior": "released-adm"})["train_timesteps"] == 1000


def test_params_released_ddnm_is_scored_never_trained(tiny_releases, tmp_path):
    params = tiny_params()
    params["models"]["ddnm-adm-released"] = _spec("released-adm")
    params["experiments"]["tiny"]["released"] = ["ddnm-adm-released"]
    write_params(tmp_path, params)
    p = load_params(tmp_path / "params.yaml")
    assert not p.is_learned("ddnm-adm-released")
    assert p.experiment("tiny")["models"][-1] == "ddnm-adm-released"   # file present: scored
    assert all(j.model != "ddnm-adm-released" for j in p.train_jobs())
    # a released prior without `weights` would be handed to the trainer: the schema refuses it
    params["models"]["ddnm-adm-released"] = {"arch": "ddnm", "args": {"prior": "released-adm"}}
    write_params(tmp_path, params)
    with pytest.raises(InpaintBenchError, match="ddnm-adm-released: missing key 'weights'"):
        load_params(tmp_path / "params.yaml")
