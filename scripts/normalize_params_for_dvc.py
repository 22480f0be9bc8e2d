"""Rewrite params.yaml once into the layout DVC writes, so that `dvc exp run -S key=value` then
changes only the lines of the keys it sets.

`dvc exp run -S` (and `dvc exp run --set-param`) loads params.yaml with ruamel.yaml, applies the
override through Hydra/OmegaConf and dumps the whole file again: every list comes back as a
plain list (flow sequences such as `[a, b]` in block context become block sequences), lines
longer than 80 characters are wrapped, folded strings are re-folded and quotes normalised. On a
hand-formatted params.yaml one `-S training.epochs=1` therefore rewrites hundreds of lines. A
file already in that layout is (nearly) a fixed point: this script applies a no-op override the
way DVC does, checks that the loaded content is unchanged and that a second rewrite changes only
the overridden line, and writes the result.

    uv run python scripts/normalize_params_for_dvc.py            # check only: exit 1 if not stable
    uv run python scripts/normalize_params_for_dvc.py --write    # rewrite params.yaml

Run --write when nobody else is editing params.yaml; review `git diff --stat` (content is
checked equal) and move any comment ruamel attached to a neighbouring line.
"""
from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import tempfile
from pathlib import Path

import yaml


def dvc_rewrite(path: Path, override: str) -> str:
    """What `dvc exp run -S <override>` leaves in the file at `path` (a copy is rewritten)."""
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "params.yaml"
        shutil.copy(path, f)
        apply_overrides(str(f), [override])
        return f.read_text(encoding="utf-8")


def changed_lines(a: str, b: str) -> list[str]:
    return [l for l in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
            if l[:1] in "+-" and not l.startswith(("+++", "---"))]


def noop_override(path: Path) -> str:
    seed = yaml.safe_load(path.read_text(encoding="utf-8")).get("seed", 0)
    return f"seed={seed}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("params", nargs="?", default="params.yaml")
    ap.add_argument("--write", action="store_true", help="rewrite the file into DVC's layout")
    args = ap.parse_args(argv)
    path = Path(args.params)
    text = path.read_text(encoding="utf-8")
    normal = dvc_rewrite(path, noop_override(path))
    diff = changed_lines(text, normal)
    print(f"{path}: a no-op `dvc exp run -S {noop_override(path)}` changes {len(diff)} lines")
    if not args.write:
        return 0 if len(diff) <= 2 else 1
    if yaml.safe_load(normal) != yaml.safe_load(text):
        print("error: the rewrite changed the loaded content; not written", file=sys.stderr)
        return 2
    path.write_text(normal, encoding="utf-8")
    again = changed_lines(normal, dvc_rewrite(path, noop_override(path)))
    print(f"written; a second no-op rewrite changes {len(again)} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
