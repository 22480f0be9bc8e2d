"""The table spec of params.yaml (`experiments.<e>.tables`): parsed and validated here, without
pandas, because params validation (config.py) runs in every workflow job; building and rendering
the tables is report/paper_tables.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..errors import InpaintBenchError
from .reference import HIGHER_IS_BETTER, table_labels

LAYOUTS = ("methods-rows", "methods-columns")
KINDS = ("comparison", "ablation")
DEFAULT_DECIMALS = {
    "ccsa": {"psnr": 4, "ssim": 4, "l1": 4, "l1_hole": 4, "fid": 2},
    "sahn": {"psnr": 2, "ssim": 3, "l1": 3, "l1_hole": 3, "fid": 2},
}


# ---------------------------------------------------------------- spec
@dataclass(frozen=True)
class TableSpec:
    name: str
    paper: str
    table: str
    methods: dict[str, str]
    datasets: dict[str, str]
    buckets: dict[str, str]
    metrics: list[str]
    kind: str = "comparison"
    layout: str = "methods-rows"
    experiment: str | None = None
    train: str | dict | None = None
    baseline: str | None = None
    decimals: dict[str, int] = field(default_factory=dict)
    caption: str | None = None
    reference: str | None = None


def _single_label(labels: dict[str, list[str]], column: str, where: str) -> str:
    labels = labels[column]
    if len(labels) != 1:
        raise InpaintBenchError(
            f"{where}: `{column}` needs a mapping ({column}s: {{ours: paper label}}) because the paper table has "
            f"{len(labels)} {column} labels: {labels}"
        )
    return labels[0]


def parse_spec(raw: Mapping, name: str = "table") -> TableSpec:
    """Validate a params.yaml table spec; errors name the key path and what to write."""
    where = f"report.paper_tables.{name}"
    if not isinstance(raw, Mapping):
        raise InpaintBenchError(f"{where} must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"paper", "table", "methods", "datasets", "buckets", "dataset", "bucket", "metrics", "kind",
                          "layout", "experiment", "train", "baseline", "decimals", "caption", "reference"}
    if unknown:
        raise InpaintBenchError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("paper", "table", "methods", "metrics"):
        if key not in raw:
            raise InpaintBenchError(f"{where}.{key} is required")
    paper = str(raw["paper"]).lower()
    table = str(raw["table"])
    pub = table_labels(paper, table)  # raises a clear error for unknown paper/table
    methods = _str_map(raw["methods"], f"{where}.methods")
    metrics = [str(m) for m in raw["metrics"]]
    for m in metrics:
        if m not in HIGHER_IS_BETTER:
            raise InpaintBenchError(f"{where}.metrics: unknown metric {m!r}; use psnr, ssim, l1, l1_hole, fid")
    datasets = _axis_map(raw, pub, "dataset", where)
    buckets = _axis_map(raw, pub, "bucket", where)
    kind = str(raw.get("kind", "ablation" if (paper, table) == ("ccsa", "4") else "comparison"))
    if kind not in KINDS:
        raise InpaintBenchError(f"{where}.kind must be one of {KINDS}, got {kind!r}")
    layout = str(raw.get("layout", "methods-columns" if paper == "sahn" else "methods-rows"))
    if layout not in LAYOUTS:
        raise InpaintBenchError(f"{where}.layout must be one of {LAYOUTS}, got {layout!r}")
    baseline = raw.get("baseline")
    if kind == "ablation":
        baseline = str(baseline or _default_baseline(paper, table, where))
        if baseline not in set(pub["method"]) and baseline not in methods.values():
            raise InpaintBenchError(f"{where}.baseline {baseline!r} is neither a paper row nor one of methods")
        if len(datasets) != 1 or len(buckets) != 1:
            raise InpaintBenchError(f"{where}: an ablation table takes one dataset and one bucket")
    decimals = {**DEFAULT_DECIMALS.get(paper, {}), **{str(k): int(v) for k, v in dict(raw.get("decimals") or {}).items()}}
    train = raw.get("train")
    reference = raw.get("reference")
    if reference is not None and str(reference) not in methods:
        raise InpaintBenchError(f"{where}.reference {reference!r} is not one of the table's methods {sorted(methods)}")
    return TableSpec(name=name, paper=paper, table=table, methods=methods, datasets=datasets, buckets=buckets,
                     metrics=metrics, kind=kind, layout=layout, experiment=raw.get("experiment"),
                     train=dict(train) if isinstance(train, Mapping) else train, baseline=baseline,
                     decimals=decimals, caption=raw.get("caption"), reference=None if reference is None else str(reference))


def _default_baseline(paper: str, table: str, where: str) -> str:
    if (paper, table) == ("ccsa", "4"):
        return "RES0ATT0"
    raise InpaintBenchError(f"{where}.baseline is required for an ablation table")


def _str_map(value, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise InpaintBenchError(f"{where} must be a non-empty mapping {{ours: paper label}}")
    return {str(k): str(v) for k, v in value.items()}


def _axis_map(raw: Mapping, pub: dict[str, list[str]], axis: str, where: str) -> dict[str, str]:
    plural = axis + "s"
    if plural in raw and axis in raw:
        raise InpaintBenchError(f"{where}: give either `{axis}` or `{plural}`, not both")
    if axis in raw:
        return {str(raw[axis]): _single_label(pub, axis, where)}
    if plural not in raw:
        raise InpaintBenchError(f"{where}.{plural} is required ({{our {axis}: paper label}})")
    mapping = _str_map(raw[plural], f"{where}.{plural}")
    known = set(pub[axis])
    bad = [v for v in mapping.values() if v not in known]
    if bad:
        raise InpaintBenchError(f"{where}.{plural}: paper labels {bad} are not in the paper table; known: {sorted(known)}")
    return mapping
