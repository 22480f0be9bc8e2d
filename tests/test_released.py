"""Released checkpoints as methods (models/released.py): checkpoint-shaped files built from the
official-layout fixtures of tests/fixtures/official/, placed in a temporary torch.hub cache."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import copy_workflow, python_env, tiny_params, write_params
from inpaintbench.config import load_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.models import released
from test_official_equivalence import fixture, seeded_state

CALLED = []


def _side_effect(*args):
    CALLED.append(args)
    return args


class Hyperparameters:
    """Stands for the OmegaConf/Lightning objects a real LaMa checkpoint pickles."""

    def __init__(self):
        self.generator = {"kind": "ffc_resnet"}

    def __reduce__(self):
        return (_side_effect, ("code from the checkpoint ran",))


def lama_checkpoint(path: Path) -> dict:
    """A LaMa Lightning checkpoint: generator.* and discriminator.* weights, hyper-parameters and
    callback state keyed by a class, as pytorch_lightning writes them."""
    data = fixture("lama")
    state = {**data["state_dict"], "discriminator.model0.0.weight": torch.zeros(2, 3, 3, 3)}
    ckpt = {"state_dict": state, "epoch": 3, "global_step": 10, "pytorch-lightning_version": "1.2.9",
            "hyper_parameters": Hyperparameters(), "callbacks": {Hyperparameters: {"best": 1.0}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return data


def lama_spec(file="lama-test.ckpt", **weights) -> dict:
    return {"arch": "lama_fourier", "label": "LaMa (test, released)", "args": {"ngf": 4, "n_blocks": 2},
            "weights": {"format": "lama", "file": file, "sha256": None, "url": "https://example.org/lama.zip", **weights}}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    # TORCH_HOME alone moves the cache (torch.hub.set_dir would pin it for every later test)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    yield tmp_path / "torch" / "hub" / "checkpoints"


def test_safe_load_never_runs_code_named_by_the_file(tmp_path):
    path = tmp_path / "best.ckpt"
    lama_checkpoint(path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # what makes the restricted reader necessary
    CALLED.clear()
    obj = released.safe_load(path)
    assert CALLED == []
    assert torch.equal(obj["state_dict"]["generator.model.1.ffc.convl2l.weight"],
                       fixture("lama")["state_dict"]["generator.model.1.ffc.convl2l.weight"])
    assert obj["epoch"] == 3 and not isinstance(obj["hyper_parameters"], Hyperparameters)


def test_released_lama_from_the_hub_cache_equals_the_official_output(hub):
    data = lama_checkpoint(hub / "lama-test.ckpt")
    model = released.build_released("lama-test", lama_spec())
    image, mask = data["image"], data["mask"]
    with torch.no_grad():
        pred = model(image * (1 - mask), mask)
        out = model.inpaint(image, mask)
    assert float((pred - data["output"]).abs().max()) <= 1e-5
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    # the hash was recorded on first use; a changed file is refused from then on
    record = hub / "lama-test.ckpt.sha256"
    assert record.read_text().split()[0] == released.sha256_of(hub / "lama-test.ckpt")
    with open(hub / "lama-test.ckpt", "ab") as f:
        f.write(b"0")
    with pytest.raises(InpaintBenchError, match="changed"):
        released.build_released("lama-test", lama_spec())


def test_missing_weights_name_the_file_and_the_url(hub):
    with pytest.raises(InpaintBenchError) as err:
        released.build_released("lama-test", lama_spec())
    msg = str(err.value)
    assert "lama-test.ckpt" in msg and "https://example.org/lama.zip" in msg and str(hub) in msg


def test_published_checksum_and_mmlab_name_prefix_are_verified(hub, tmp_path):
    lama_checkpoint(hub / "lama-test.ckpt")
    digest = released.sha256_of(hub / "lama-test.ckpt")
    released.build_released("lama-test", lama_spec(sha256=digest))  # the published hash matches
    with pytest.raises(InpaintBenchError, match="expected"):
        released.build_released("lama-test", lama_spec(sha256="0" * 64))
    wrong = tmp_path / "deepfillv2_256x256_8x2_places_20200619-10d15793.pth"
    wrong.write_bytes(b"not the file")
    with pytest.raises(InpaintBenchError, match="10d15793"):
        released.verify(wrong, None, "x")
    # a path instead of a cache file name
    path = tmp_path / "elsewhere" / "best.ckpt"
    lama_checkpoint(path)
    assert released.build_released("lama-test", lama_spec(file=str(path))) is not None


def assert_released_output(name: str, spec: dict, data: dict) -> None:
    """The released model `name` built from `spec` gives the fixture's official output (within
    1e-5) on its masked image and mask."""
    model = released.build_released(name, spec)
    image, mask = data["image"], data["mask"]
    with torch.no_grad():
        out = model(image * (1 - mask), mask)
    assert float((out - data["output"]).abs().max()) <= 1e-5


def test_released_edgeconnect_pair_and_rfr(hub):
    ec = fixture("edgeconnect")
    (hub / "ec").mkdir(parents=True)
    torch.save(ec["edge_gen"], hub / "ec" / "EdgeModel_gen.pth")
    torch.save(ec["inpaint_gen"], hub / "ec" / "InpaintingModel_gen.pth")
    spec = {"arch": "edgeconnect", "weights": {"format": "edgeconnect", "url": "https://example.org/ec",
                                                "file": {"edge": "ec/EdgeModel_gen.pth", "inpaint": "ec/InpaintingModel_gen.pth"}}}
    model = released.build_released("ec-test", spec)
    image, mask = ec["image"], ec["mask"]
    with torch.no_grad():
        out = model.complete(image * (1 - mask), ec["gray"] * (1 - mask), ec["edges"], mask)
    assert float((out - ec["output"]).abs().max()) <= 1e-5

    rfr = fixture("rfr")
    torch.save({"n_iter": 5, "generator": seeded_state(rfr["spec"], rfr["seed"]), "optimizer_G": {}}, hub / "rfr.pth")
    assert_released_output("rfr-test", {"arch": "rfr", "weights": {"format": "rfr", "file": "rfr.pth", "url": "u"}}, rfr)
    # a file of the wrong format is a clear error
    with pytest.raises(InpaintBenchError, match="holds a rfr model"):
        released.build_released("x", {"arch": "lama_fourier", "weights": {"format": "rfr", "file": "rfr.pth", "url": "u"}})


def test_released_mmagic_pconv_with_its_name_hash(hub):
    data = fixture("pconv_mmagic")
    ckpt = {"meta": {"mmedit_version": "0.4.0", "config": "model = dict(type='PConvInpaintor')"},
            "state_dict": seeded_state(data["spec"], data["seed"])}
    tmp = hub / "tmp.pth"
    hub.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, tmp)
    name = f"pconv_test_20200619-{released.sha256_of(tmp)[:8]}.pth"  # MMLab names end in the hash
    tmp.rename(hub / name)
    spec = {"arch": "pconv_unet", "weights": {"format": "mmagic-pconv", "file": name, "url": "u"}}
    assert_released_output("pconv-test", spec, data)


def test_released_mmagic_deepfill(hub):
    data = fixture("deepfill_v2_mmagic")
    hub.mkdir(parents=True, exist_ok=True)
    state = {**seeded_state(data["spec"], data["seed"]), "disc.model.conv1.conv.weight_orig": torch.zeros(4, 4, 5, 5)}
    torch.save({"meta": {"epoch": 1}, "state_dict": state}, hub / "df.pth")
    spec = {"arch": "deepfill_v2", "weights": {"format": "mmagic-deepfill", "file": "df.pth", "url": "u"}}
    assert_released_output("df-test", spec, data)


def test_released_ctsdg_checkpoint_layout(hub):
    """CTSDG's official checkpoint is {'generator', 'discriminator', 'n_iter'}; models/ctsdg.py keeps
    the official key names, so its generator state loads as it is (checked here on the layout;
    the equivalence with the official outputs: test_official_equivalence.py::test_ctsdg_matches_official_generator)."""
    from inpaintbench.models import registry
    from inpaintbench.models.base import BuildContext

    args = {"base": 4, "depth": 4, "disc_base": 4, "edge_mid": 4}
    ours = registry.build("ctsdg", args, {}, BuildContext(perceptual={"backbone": "none"})).eval()
    hub.mkdir(parents=True, exist_ok=True)
    torch.save({"n_iter": 1, "generator": {f"module.{k}": v for k, v in ours.generator.state_dict().items()},
                "discriminator": {}}, hub / "ctsdg.pt")
    model = released.build_released("c", {"arch": "ctsdg", "args": args, "weights": {"format": "ctsdg", "file": "ctsdg.pt", "url": "u"}})
    image, mask = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    mask[..., 8:20, 8:20] = 1
    with torch.no_grad():
        assert torch.equal(model(image, mask), ours(image, mask))


def test_params_score_released_entries_only_when_present(hub, tmp_path):
    params = tiny_params()
    params["models"]["lama-test"] = lama_spec()
    params["experiments"]["tiny"]["released"] = ["lama-test"]
    write_params(tmp_path, params)
    p = load_params(tmp_path / "params.yaml")
    assert not p.is_learned("lama-test")
    assert "lama-test" not in p.experiment("tiny")["models"]      # file absent: not scored
    lama_checkpoint(hub / "lama-test.ckpt")
    assert p.experiment("tiny")["models"][-1] == "lama-test"    # present: scored beside the others
    assert all(j.model != "lama-test" for j in p.train_jobs())
    params["experiments"]["tiny"]["released"] = ["pconv"]
    write_params(tmp_path, params)
    with pytest.raises(InpaintBenchError, match="released weights"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.slow
def test_snakemake_scores_a_released_checkpoint_beside_trained_models(tmp_path):
    hub_dir = tmp_path / "torch" / "hub" / "checkpoints"
    data = lama_checkpoint(hub_dir / "lama-test.ckpt")
    assert data["meta"]["repo"] == "advimman/lama"
    folder = tmp_path / "wf"
    folder.mkdir()
    copy_workflow(folder)
    params = tiny_params()
    params["models"]["lama-test"] = lama_spec()
    params["experiments"]["tiny"]["released"] = ["lama-test"]
    write_params(folder, params)
    bindir = Path(sys.executable).parent
    env = python_env({**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "TORCH_HOME": str(tmp_path / "torch"),
                      "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"})
    run = subprocess.run([str(bindir / "snakemake"), "--cores", "2"], cwd=folder, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = pd.read_csv(folder / "results" / "tiny" / "summary.csv")
    assert {"lama-test", "pconv", "biharmonic"} <= set(summary["model"])
    assert not (folder / "runs" / "tiny" / "photos" / "lama-test").exists()  # evaluated, never trained
