"""Faults, class "cli" (issue 15): bad names and bad numbers on the command line are clear errors
(exit status 2, a message, no traceback), never a traceback or a silent no-op."""
from __future__ import annotations

import pytest

from inpaintbench.cli import main


def test_index_of_an_unknown_experiment_is_a_clear_error(project, capsys):
    assert main(["index", "nosuchexp"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'nosuchexp'; known: tiny" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["train", "tiny", "photos", "pconv", "--stop-after", "-5"], "--stop-after: must be >= 1, got -5"),
    (["train", "tiny", "photos", "pconv", "--stop-after", "0"], "--stop-after: must be >= 1, got 0"),
    (["train", "tiny", "photos", "pconv", "--stop-after", "x"], "--stop-after: expected an integer"),
    (["masks", "generated", "--size", "8"], "--size: must be >= 11, got 8"),
    (["prepare", "photos", "--workers", "0"], "--workers: must be >= 1, got 0"),
    (["efficiency", "tiny", "--threads", "-1"], "--threads: must be >= 1, got -1"),
])
def test_out_of_range_numbers_are_refused(project, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse refuses a name that is not among the choices
        return exc.code


@pytest.mark.parametrize("argv, name", [
    (["train", "tiny", "photos", "nosuchmodel"], "nosuchmodel"),
    (["evaluate", "tiny", "photos", "nosuchmodel", "--no-mlflow"], "nosuchmodel"),
    (["report", "nosuchexp"], "nosuchexp"),
    (["aggregate", "nosuchexp"], "nosuchexp"),
    (["prepare", "nosuchdata"], "nosuchdata"),
    (["pairs", "nosuchexp", "photos"], "nosuchexp"),
])
def test_unknown_names_are_clear_errors(project, capsys, argv, name):
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert repr(name) in err and "Traceback" not in err


def test_report_before_aggregate_is_a_clear_error(project, capsys):
    """A step whose input is missing names the file (was a FileNotFoundError traceback)."""
    assert _run(["report", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "does not exist; run the step that produces it first" in err and "Traceback" not in err
