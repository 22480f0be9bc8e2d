"""What a step promises about the files it writes, checked where the next step reads them.

Every CSV written by `io.write_csv` and every checkpoint written by `train.checkpoints.save` gets
a hidden record beside it, ``.<name>.integrity.json`` = ``{"size", "sha256", "rows"}``.
`verify` compares a file with its record (size first, then the sha256, hashed once per process
per file version), so a metrics or pairs CSV cut short, or a checkpoint truncated or replaced
after it was written, is a clear error instead of a silently wrong number. A zero-byte file is
an error whether or not it has a record. Files without a record (written by other tools, or
before records existed) are read as they are.

`stale(paths)` is the cheap check the workflow runs before it plans (workflow/rules/common.smk):
a target whose size (or, for small files, hash) no longer matches its record is reported, so
Snakemake rebuilds it instead of answering "Nothing to be done".

Prepared images are checked against their manifest's ``sha256`` column by `verify_sha256`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import InpaintBenchError

SUFFIX = ".integrity.json"
SMALL_FILE = 16 << 20   # stale(): files up to this size are hashed, larger ones compared by size
_HASHED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def record_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{SUFFIX}")


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per process for each (path, size, mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


def record(path: str | os.PathLike, rows: int | None = None, source: str | os.PathLike | None = None) -> None:
    """Write the record of `path`. `source`: the complete temporary file about to be renamed onto
    `path` (the record is written first, so a file in place never has an older record)."""
    from .io import write_text

    path = Path(path)
    content = Path(source) if source is not None else path
    info = {"size": content.stat().st_size, "sha256": sha256_file(content)}
    if rows is not None:
        info["rows"] = int(rows)
    write_text(record_path(path), json.dumps(info, sort_keys=True) + "\n")


def read_record(path: str | os.PathLike) -> dict | None:
    rec = record_path(path)
    if not rec.exists():
        return None
    try:
        return json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a torn record says nothing; the file is read as it is


def _problem(path: Path, rec: dict | None, *, hash_check: bool) -> str | None:
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    if rec is None:
        return None
    if size != rec.get("size"):
        return f"is {size} bytes but was written with {rec.get('size')} (truncated or changed since)"
    if hash_check and rec.get("sha256") and sha256_file(path) != rec["sha256"]:
        return "does not match the sha256 it was written with (changed since)"
    return None


def verify(path: str | os.PathLike, what: str = "file", *, rows: int | None = None) -> dict | None:
    """Check `path` against its record (and `rows` against the recorded row count); returns the
    record (None when there is none). Raises an InpaintBenchError that says what to do."""
    path = Path(path)
    if not path.exists():
        raise InpaintBenchError(f"{what} {path} does not exist; run the step that produces it first.")
    rec = read_record(path)
    problem = _problem(path, rec, hash_check=True)
    if problem is None and rec is not None and rows is not None and "rows" in rec and rows != rec["rows"]:
        problem = f"has {rows} rows but was written with {rec['rows']} (cut short or changed since)"
    if problem:
        raise InpaintBenchError(f"{what} {path} {problem}; delete it and re-run the step that produces it "
                                f"(`uv run snakemake` rebuilds it).")
    return rec


def stale(files) -> list[tuple[str, str]]:
    """(file, problem) for each existing file that no longer matches its record (or is empty)."""
    out = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            continue
        try:
            problem = _problem(p, read_record(p), hash_check=p.stat().st_size <= SMALL_FILE)
        except OSError as exc:
            problem = f"cannot be read ({exc})"
        if problem:
            out.append((str(f), problem))
    return out


def verify_sha256(path: str | os.PathLike, expected: str, where: str) -> None:
    """A prepared file against the sha256 its manifest promises (hashed once per process)."""
    if expected and sha256_file(path) != expected:
        raise InpaintBenchError(
            f"{path} does not match the sha256 in {where} (the file changed after it was prepared); "
            f"re-run the prepare step for it (delete the prepared folder, then `uv run snakemake`).")
