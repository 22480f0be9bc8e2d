"""Check (or rewrite) params.yaml in the layout DVC writes, so that `dvc exp run -S key=value` then
changes only the lines of the keys it sets.

`dvc exp run -S` (and `dvc exp run --set-param`) loads params.yaml with ruamel.yaml, applies the
override through Hydra/OmegaConf and dumps the whole file again: every list comes back as a
plain list (flow sequences such as `[a, b]` in block context become block sequences), lines
longer than 80 characters are wrapped, folded strings are re-folded and quotes normalised. On a
hand-formatted params.yaml one `-S training.epochs=1` therefore rewrites hundreds of lines.
params.yaml is kept in that layout (a fixed point: a no-op override changes nothing), so that
`dvc exp run -S` changes only the lines it sets (tests/test_dvc.py checks it). Rules for editing it:
lists directly under a block-mapping key are block lists (`key:` then `- item` lines at the key's
indent); flow mappings `{...}` only while the line stays within 80 characters (lists inside them may
stay flow); no comment or blank line right after a block list (DVC replaces the list and drops
them: put such a comment on the next key's line or inside the next mapping).

    uv run python scripts/normalize_params_for_dvc.py            # check only: exit 1 if not a fixed point
    uv run python scripts/normalize_params_for_dvc.py --write    # rewrite params.yaml into DVC's layout

--write checks that the loaded content is unchanged; review `git diff` afterwards (comments that
followed a block list are dropped by DVC's dump, long flow mappings are wrapped mid-line).
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
        return 0 if not diff else 1
    if yaml.safe_load(normal) != yaml.safe_load(text):
        print("error: the rewrite changed the loaded content; not written", file=sys.stderr)
        return 2
    path.write_text(normal, encoding="utf-8")
    again = changed_lines(normal, dvc_rewrite(path, noop_override(path)))
    print(f"written; a second no-op rewrite changes {len(again)} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
