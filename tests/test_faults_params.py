"""Faults, class "params" (issue 15): every typo and out-of-range value in params.yaml, at any
depth, is refused by the JSON Schema (workflow/schemas/params.schema.yaml) with a message that
names the file, the key path and what is allowed; the cross-checks a schema cannot express stay
in config.py. Each case was silently accepted or gave a traceback before the schema."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from inpaintbench.cli import main
from inpaintbench.config import Params, load_params, schema_path
from inpaintbench.errors import InpaintBenchError

from conftest import ROOT, copy_workflow, python_env, tiny_params, write_params


def _refused(mutate, *patterns):
    p = tiny_params()
    p["teacher"] = {"widths": [4, 8], "epochs": 1}
    p["fid"] = {"enabled": "auto"}
    Params(p)  # the unmodified params are valid
    mutate(p)
    with pytest.raises(InpaintBenchError) as info:
        Params(p)
    for pat in patterns:
        assert re.search(pat, str(info.value)), f"{pat!r} not in {info.value}"
    return str(info.value)


# ---- nested typos (were ignored) ---------------------------------------------------------------
@pytest.mark.parametrize("mutate, path, key", [
    (lambda p: p["datasets"]["photos"].update(n_trian=3), r"datasets\.photos\.n_trian", "n_train"),
    (lambda p: p["masks"]["generated"].update(cuont=3), r"masks\.generated\.cuont", "count"),
    (lambda p: p["teacher"].update(epochz=3), r"teacher\.epochz", "epochs"),
    (lambda p: p["fid"].update(enabeld=False), r"fid\.enabeld", "enabled"),
    (lambda p: p["training"]["optimizer"].update(lrr=0.1), r"training\.optimizer\.lrr", "lr"),
    (lambda p: p["experiments"]["tiny"].update(pairs_per_bukcet=3), r"experiments\.tiny\.pairs_per_bukcet", "pairs_per_bucket"),
    (lambda p: p["experiments"]["tiny"]["runs"][0].update(evaluate=["photos"]), r"experiments\.tiny\.runs\[0\]\.evaluate", "eval"),
    (lambda p: p["models"]["pconv"].update(optimiser={"lr": 1e-3}), r"models\.pconv\.optimiser", "optimizer"),
    (lambda p: p["experiments"]["tiny"]["tables"][0].update(capton="x"), r"experiments\.tiny\.tables\[0\]\.capton", "caption"),
])
def test_nested_typo_names_the_key_path_and_the_allowed_keys(mutate, path, key):
    msg = _refused(mutate, r"^params\.yaml: " + path + r": unknown key", r"allowed: .*\b" + key + r"\b")
    assert "\n" not in msg


# ---- ranges (trained 0 steps or gave tracebacks) ----------------------------------------------
@pytest.mark.parametrize("mutate, pattern", [
    (lambda p: p["training"].update(epochs=0), r"training\.epochs: must be >= 1, got 0"),
    (lambda p: p["training"].update(epochs=-3), r"training\.epochs: must be >= 1, got -3"),
    (lambda p: p["training"]["optimizer"].update(lr=-1), r"training\.optimizer\.lr: must be > 0, got -1"),
    (lambda p: p["training"].update(batch_size=0), r"training\.batch_size: must be >= 1, got 0"),
    (lambda p: p["training"].update(checkpoint_every=0), r"training\.checkpoint_every: must be >= 1, got 0"),
    (lambda p: p["models"]["pconv"].update(training={"steps_per_epoch": 0}), r"models\.pconv\.training\.steps_per_epoch: must be >= 1"),
    (lambda p: p["experiments"]["tiny"].update(size=8), r"experiments\.tiny\.size: must be >= 11 .*SSIM window"),
    (lambda p: p["datasets"]["photos"].update(size=8), r"datasets\.photos\.size: must be >= 11"),
    (lambda p: p["training"].update(mask_ratio=[0.1, 1.5]), r"training\.mask_ratio\[1\]: must be <= 1"),
    (lambda p: p["training"].update(mask_ratio=[0.5, 0.1]), r"training\.mask_ratio: needs low <= high"),
    (lambda p: p["training"]["optimizer"].update(betas=[0.9]), r"training\.optimizer\.betas: needs at least 2 items"),
    (lambda p: p["training"].update(epochs="4"), r"training\.epochs: expected an integer, got '4'"),
    (lambda p: p["training"].update(epochs=True), r"training\.epochs: expected an integer, got True"),
    (lambda p: p.update(device="gpu"), r"device: expected one of auto, cpu, cuda, got 'gpu'"),
    (lambda p: p["datasets"]["photos"].update(images="faces"), r"datasets\.photos\.images: expected one of photos, textures"),
    (lambda p: p["experiments"]["tiny"].update(pairs_per_bucket=0), r"experiments\.tiny\.pairs_per_bucket: must be >= 1"),
])
def test_out_of_range_value_names_the_key_and_the_range(mutate, pattern):
    _refused(mutate, r"^params\.yaml: " + pattern)


# ---- buckets ------------------------------------------------------------------------------------
def test_malformed_bucket_is_refused():
    _refused(lambda p: p["experiments"]["tiny"]["buckets"].__setitem__(0, "(0.1.2, 0.3]"),
             r"experiments\.tiny\.buckets\[0\]: '\(0\.1\.2, 0\.3\]' is not an interval")


def test_duplicate_bucket_is_refused():
    _refused(lambda p: p["experiments"]["tiny"]["buckets"].append("(0.1,0.3]"),
             r"experiments\.tiny\.buckets\[2\]: .* repeats buckets\[0\]")


def test_bucket_bounds_are_checked():
    _refused(lambda p: p["experiments"]["tiny"]["buckets"].__setitem__(0, "(0.3, 0.1]"), r"0 <= low < high <= 1")


# ---- names that must exist (cross-checks kept in config.py) -----------------------------------
def test_unknown_names_are_still_cross_checked():
    _refused(lambda p: p["experiments"]["tiny"]["models"].append("pconvv"), r"models\[3\]: unknown model 'pconvv'")
    _refused(lambda p: p["datasets"]["photos"].update(source="imagenet"), r"datasets\.photos\.source: unknown source 'imagenet'")
    _refused(lambda p: p["training"].update(masks="nosuch"), r"training\.masks: unknown mask set 'nosuch'")


def test_several_problems_are_all_listed():
    msg = _refused(lambda p: (p["training"].update(epochs=0), p["fid"].update(enabeld=1)),
                   r"training\.epochs", r"fid\.enabeld")
    assert len(msg.splitlines()) == 2


# ---- the file is named: --params and the CLI ----------------------------------------------------
def test_error_names_the_params_file_given(tmp_path, capsys):
    p = tiny_params()
    p["datasets"]["photos"]["n_trian"] = 3
    path = tmp_path / "my-params.yaml"
    path.write_text(yaml.safe_dump(p))
    with pytest.raises(InpaintBenchError, match=re.escape(f"{path}: datasets.photos.n_trian: unknown key")):
        load_params(path)
    assert main(["--params", str(path), "validate"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: datasets.photos.n_trian" in err and "Traceback" not in err


def test_empty_params_file_is_a_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text("")
    with pytest.raises(InpaintBenchError, match="must be a YAML mapping"):
        load_params(tmp_path / "params.yaml")


def test_project_params_and_schema_are_valid():
    import jsonschema

    schema = yaml.safe_load(schema_path().read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema_path() == ROOT / "workflow" / "schemas" / "params.schema.yaml"
    load_params(ROOT / "params.yaml")


@pytest.mark.slow
def test_snakemake_refuses_a_nested_typo(tmp_path):
    """The workflow validates too (Snakemake convention + inpaintbench's messages)."""
    p = tiny_params()
    p["teacher"] = {"epochz": 2}
    write_params(tmp_path, p)
    copy_workflow(tmp_path)
    env = python_env({**__import__("os").environ})
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "params.yaml: teacher.epochz: unknown key 'epochz'" in r.stdout + r.stderr


def test_a_key_given_twice_is_refused(tmp_path):
    """PyYAML keeps the last of two equal keys silently: the second `epochs:` would win unseen."""
    text = (ROOT / "params.yaml").read_text().replace("  epochs: 4\n", "  epochs: 4\n  epochs: 40\n", 1)
    assert text.count("epochs: 40") == 1
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(InpaintBenchError, match=r"'epochs' is given twice"):
        load_params(tmp_path / "params.yaml")


def test_schema_has_no_key_twice():
    """Several people add keys to the schema: a repeated key would silently drop the first."""
    from inpaintbench.config import load_yaml

    load_yaml(schema_path().read_text())
