"""The command line as a user meets it: help that lists the valid names, errors naming the file."""
import pytest
import yaml

from inpaintbench.cli import build_parser, main
from conftest import tiny_params, write_params


def _help(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_help_does_not_cite_files_outside_the_repository(project, capsys):
    text = _help(capsys, ["--help"])
    assert "DESIGN.md" not in text
    for verb in ("fetch", "prepare", "train", "evaluate", "report", "index"):
        assert verb in text
        assert "DESIGN.md" not in _help(capsys, [verb, "--help"])


def test_positional_help_lists_the_names_of_the_params_file(project, capsys):
    text = " ".join(_help(capsys, ["train", "--help"]).split())  # undo argparse's line wrapping
    assert "one of: tiny" in text                       # experiments
    assert "one of: photos, textures" in text           # datasets
    assert "one of: pconv" in text and "copy-input" not in text  # learned models only
    text = " ".join(_help(capsys, ["evaluate", "--help"]).split())
    assert "one of: copy-input, biharmonic, pconv" in text
    text = " ".join(_help(capsys, ["masks", "--help"]).split())
    assert "one of: generated" in text
    assert "celeba" in " ".join(_help(capsys, ["fetch", "--help"]).split())


def test_names_come_from_the_file_given_with_params(project, capsys):
    other = tiny_params()
    other["experiments"]["second"] = other["experiments"]["tiny"]
    (project / "other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    text = " ".join(_help(capsys, ["--params", "other.yaml", "report", "--help"]).split())
    assert "one of: tiny, second" in text


def test_an_unknown_name_is_refused_with_the_valid_ones(project, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "nosuch", "photos", "pconv"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nosuch'" in err and "'tiny'" in err


def test_index_without_names_parses(project):
    assert build_parser(["index"]).parse_args(["index"]).experiments == []


def test_errors_name_the_params_file_passed(project, capsys):
    bad = tiny_params()
    bad["training"]["batch_size"] = 0
    write_params(project, tiny_params())
    (project / "other.yaml").write_text(yaml.safe_dump(bad))
    assert main(["--params", "other.yaml", "validate"]) == 2
    err = capsys.readouterr().err
    assert "other.yaml" in err and "batch_size" in err and "params.yaml" not in err


def test_help_works_without_a_params_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = " ".join(_help(capsys, ["train", "--help"]).split())
    assert "see params.yaml" in text


def test_uv_run_does_not_recompile_the_environment():
    # `compile-bytecode = true` in [tool.uv] makes every `uv run` recompile all of site-packages
    # ("Bytecode compiled 21091 files", astral-sh/uv#12202); compile once at sync instead
    import tomllib

    from conftest import ROOT

    uv = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"].get("uv", {})
    assert not uv.get("compile-bytecode", False)
    assert "--compile-bytecode" in (ROOT / ".ci" / "run").read_text()
