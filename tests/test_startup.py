"""Per-job start-up: every workflow job validates params.yaml, so validation must not import the
heavy libraries (torch ~1.2-3 s CPU, pandas ~1.6 s): the papers' suite runs ~110 jobs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, python_env

_PROBE = """
import json, sys
from inpaintbench.config import load_params
p = load_params(sys.argv[1])
for e in p.raw["experiments"]:
    p.experiment(e)          # asks models.released.present for every released entry
print(json.dumps(sorted(m for m in ("torch", "pandas", "mlflow", "torchvision") if m in sys.modules)))
"""


def test_params_validation_imports_neither_torch_nor_pandas(tmp_path):
    out = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT / "params.yaml")], capture_output=True, text=True,
                         env=python_env({**os.environ, "TORCH_HOME": str(tmp_path / "torch")}), cwd=tmp_path, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_hub_dir_without_torch_follows_torch_hub(monkeypatch, tmp_path):
    import torch

    from inpaintbench.models import released

    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        expected = Path(torch.hub.get_dir()) / "checkpoints"
        assert released.hub_dir() == expected
        with monkeypatch.context() as m:
            m.delitem(sys.modules, "torch")  # the branch the data steps take
            assert released.hub_dir() == expected


def test_table_labels_equal_the_published_frame():
    from inpaintbench.report.reference import published, table_labels, tables

    for paper in ("ccsa", "sahn"):
        for table in tables(paper):
            pub = published(paper, table)
            labels = table_labels(paper, table)
            for axis in ("dataset", "bucket", "method"):
                assert labels[axis] == list(dict.fromkeys(pub[axis])), (paper, table, axis)


def test_libyaml_parse_equals_the_pure_python_one():
    import yaml

    from inpaintbench.config import load_yaml

    for f in (ROOT / "params.yaml", ROOT / "workflow" / "schemas" / "params.schema.yaml", ROOT / "tests" / "papers-smoke.yaml"):
        text = f.read_text()
        assert load_yaml(text) == yaml.load(text, Loader=yaml.SafeLoader), f
