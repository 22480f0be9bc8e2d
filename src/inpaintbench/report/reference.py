"""The two papers' published numbers, as data (``reference_data/<paper>.csv``).

Tidy columns: ``paper, table, dataset, bucket, method, metric, value, unit, scale, note``.

* ``value`` is the number as printed; ``value * scale`` is in our units (SAHN prints MAE
  in units of 1e-1, so its ``l1`` rows have ``unit = x1e-1`` and ``scale = 0.1``).
* ``metric`` uses our names: ``psnr``, ``ssim``, ``l1`` (the papers' "L1 error" / "MAE": mean
  absolute error over the full image, values in [0, 1]), ``fid``; efficiency tables use
  ``params_m``, ``inference_ms``, ``storage``; the CCSA ablation's printed "improvement
  compared with baseline" rows use ``psnr_gain_pct``, ``ssim_gain_pct``, ``l1_reduction_pct``.
* ``dataset``/``bucket``/``method`` are the papers' own labels (CCSA buckets "0.3", "0.4",
  "0.5"; SAHN buckets "(0.2, 0.4]", "(0.4, 0.6]", "All"); the table spec maps ours onto them.
* A cell that is garbled, or whose digits cannot be separated unambiguously, in the source
  text is NaN with the reason in ``note`` - never a guess.

Transcribed from ``/work/shared/papers``:
  CCSA (cross-scale semantic attention): Table 2 (comparison, 3 datasets x 3 mask ratios x
  PSNR/SSIM/L1 x 6 methods), Table 3 (parameters, inference time), Table 4 (ablation, with the
  printed improvement rows).
  SAHN (semantic prior hierarchical network): Tables 1-3 (Paris StreetView, CelebA, Places2 x
  3 buckets x PSNR/SSIM/MAE/FID x 7 methods), Table 4 (ablation), and the efficiency figures of
  Sec. 4.5 (table ``efficiency``).

SAHN's extracted text prints each table row with the numbers run together
("27.6528.08..."). A row is read as the split into 7 numbers in which every number has at most
the table's printed decimals (PSNR, FID: 2; SSIM, MAE: 3) with trailing zeros dropped (as the
paper prints "27.5", "0.8"), PSNR lies in [10, 50] dB, SSIM and MAE(x1e-1) in (0, 1], FID in
(0, 30]. A cell on which all such splits agree is kept (the note says when the value range
decided it); a cell on which they disagree, or a row with no such split, is NaN.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InpaintBenchError

if TYPE_CHECKING:
    import pandas as pd

DATA_DIR = Path(__file__).with_name("reference_data")
COLUMNS = ["paper", "table", "dataset", "bucket", "method", "metric", "value", "unit", "scale", "note"]
PAPERS = {
    "ccsa": "Cross-scale semantic feature attention image inpainting (CCSA)",
    "sahn": "Semantic prior aware hierarchical network and multi-scale fusion generator (SAHN), Technologies 2025, 13, 521",
}
# higher is better for these; lower for l1 / fid / time / size
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "l1": False, "l1_hole": False, "fid": False,
                    "params_m": False, "inference_ms": False, "storage": False,
                    "psnr_gain_pct": True, "ssim_gain_pct": True, "l1_reduction_pct": True}


def _path(paper: str) -> Path:
    path = DATA_DIR / f"{paper}.csv"
    if not path.exists():
        raise InpaintBenchError(f"no published numbers for paper {paper!r}; known: {', '.join(sorted(PAPERS))}")
    return path


@lru_cache(maxsize=None)
def _load(paper: str) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    path = _path(paper)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(COLUMNS) - set(frame.columns)
    if missing:
        raise InpaintBenchError(f"{path} lacks columns {sorted(missing)}")
    frame["value"] = pd.to_numeric(frame["value"].replace("", np.nan))
    frame["scale"] = pd.to_numeric(frame["scale"].replace("", "1.0"))
    return frame[COLUMNS]


@lru_cache(maxsize=None)
def table_labels(paper: str, table: str | int) -> dict[str, list[str]]:
    """The paper's own dataset / bucket / method labels of one table, in the paper's order,
    read without pandas: params validation (config.py -> table_spec.parse_spec) runs in every
    workflow job, and importing pandas costs ~1.6 s CPU there."""
    paper, table = paper.lower(), str(table)
    with open(_path(paper), newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh)]
    known = list(dict.fromkeys(r["table"] for r in rows))
    rows = [r for r in rows if r["table"] == table]
    if not rows:
        raise InpaintBenchError(f"paper {paper!r} has no transcribed table {table!r}; known: {', '.join(known)}")
    return {axis: list(dict.fromkeys(r[axis] for r in rows)) for axis in ("dataset", "bucket", "method")}


def papers() -> list[str]:
    return sorted(PAPERS)


def tables(paper: str) -> list[str]:
    """The table ids transcribed for a paper, in the paper's order."""
    return list(dict.fromkeys(_load(paper.lower())["table"]))


def published(paper: str, table: str | int | None = None) -> pd.DataFrame:
    """The published numbers of one table (or all tables of the paper when ``table`` is None),
    tidy, in the paper's row order. Adds ``value_ours_units = value * scale``."""
    frame = _load(paper.lower())
    if table is not None:
        table = str(table)
        if table not in set(frame["table"]):
            raise InpaintBenchError(
                f"paper {paper!r} has no transcribed table {table!r}; known: {', '.join(tables(paper))}"
            )
        frame = frame[frame["table"] == table]
    out = frame.reset_index(drop=True).copy()
    out["value_ours_units"] = out["value"] * out["scale"]
    return out


def published_value(paper: str, table: str | int, *, dataset: str, bucket: str, method: str, metric: str) -> float:
    """One published cell as printed (NaN when the source cell is missing or garbled)."""
    frame = published(paper, table)
    hit = frame[(frame["dataset"] == dataset) & (frame["bucket"] == bucket) & (frame["method"] == method) & (frame["metric"] == metric)]
    if len(hit) != 1:
        raise InpaintBenchError(
            f"{paper} table {table} has {len(hit)} cells for dataset={dataset!r} bucket={bucket!r} "
            f"method={method!r} metric={metric!r}"
        )
    return float(hit["value"].iloc[0])
