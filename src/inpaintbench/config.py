"""params.yaml: load, validate (one place, clear errors), expand experiments into jobs.

The file is plain YAML; `load_params` returns a `Params` object holding the raw dict plus the
derived views every step uses. Validation errors are `InpaintBenchError`s that name the key path
and say what was expected, e.g. ``params.yaml: experiments.builtin.models[2]: unknown model
'pconvv'; known: biharmonic, pconv``.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InpaintBenchError

TOP_LEVEL = {
    "seed": int, "device": str, "suite": str, "suites": dict, "datasets": dict, "masks": dict,
    "perceptual": dict, "training": dict, "evaluation": dict, "models": dict, "experiments": dict,
    "teacher": dict, "report": dict, "mlflow": dict, "downloads": dict, "fid": dict, "efficiency": dict,
    "slurm": dict,
}
DEVICES = ("auto", "cpu", "cuda")
TRAINING_KEYS = {
    "batch_size": int, "epochs": int, "steps_per_epoch": int, "checkpoint_every": int,
    "val_pairs": int, "num_threads": int, "amp": str, "optimizer": dict, "mask_ratio": list,
    "log_every": int, "d_optimizer": dict,
}
OPTIMIZER_KEYS = {"name": str, "lr": float, "betas": list, "weight_decay": float}
MODEL_KEYS = {"arch": str, "args": dict, "loss": dict, "optimizer": dict, "training": dict,
              "requires": list, "label": str, "paper_args": dict}
EXPERIMENT_KEYS = {"description": str, "size": int, "runs": list, "models": list, "masks": str,
                   "buckets": list, "pairs_per_bucket": int, "tables": list, "ablations": list,
                   "samples_per_bucket": int, "training": dict, "teacher": dict}
DATASET_SOURCES_BUILTIN = "builtin"
_INTERVAL = re.compile(r"^\s*([\(\[])\s*([0-9.]+)\s*,\s*([0-9.]+)\s*([\)\]])\s*$")


@dataclass(frozen=True)
class Bucket:
    """A hole-ratio interval written as in params.yaml, e.g. ``(0.2, 0.4]``."""

    label: str
    lo: float
    hi: float
    lo_closed: bool
    hi_closed: bool

    @classmethod
    def parse(cls, text: str, where: str = "bucket") -> "Bucket":
        m = _INTERVAL.match(str(text))
        if not m:
            raise InpaintBenchError(f"{where}: {text!r} is not an interval like '(0.2, 0.4]'")
        lo, hi = float(m.group(2)), float(m.group(3))
        if not 0.0 <= lo < hi <= 1.0:
            raise InpaintBenchError(f"{where}: {text!r} needs 0 <= low < high <= 1")
        label = f"{m.group(1)}{m.group(2)}, {m.group(3)}{m.group(4)}"
        return cls(label, lo, hi, m.group(1) == "[", m.group(4) == "]")

    def contains(self, ratio: float) -> bool:
        above = ratio >= self.lo if self.lo_closed else ratio > self.lo
        below = ratio <= self.hi if self.hi_closed else ratio < self.hi
        return above and below


@dataclass(frozen=True)
class TrainJob:
    experiment: str
    train: str
    model: str


def _type_name(t) -> str:
    return {int: "an integer", float: "a number", str: "a string", dict: "a mapping", list: "a list",
            bool: "true/false"}[t]


def _check_type(value: Any, expected, where: str) -> None:
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return
    if expected is int and isinstance(value, bool):
        raise InpaintBenchError(f"params.yaml: {where}: expected {_type_name(int)}, got {value!r}")
    if not isinstance(value, expected):
        raise InpaintBenchError(f"params.yaml: {where}: expected {_type_name(expected)}, got {value!r}")


def _check_keys(block: dict, allowed: dict, where: str) -> None:
    for key, value in block.items():
        if key not in allowed:
            raise InpaintBenchError(
                f"params.yaml: {where}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")
        _check_type(value, allowed[key], f"{where}.{key}" if where else key)


def _check_optimizer(opt: dict, where: str) -> None:
    _check_keys(opt, OPTIMIZER_KEYS, where)
    if opt.get("name", "adam") not in ("adam", "adamw"):
        raise InpaintBenchError(f"params.yaml: {where}.name: expected adam or adamw, got {opt['name']!r}")
    betas = opt.get("betas")
    if betas is not None and (len(betas) != 2 or not all(isinstance(b, (int, float)) for b in betas)):
        raise InpaintBenchError(f"params.yaml: {where}.betas: expected two numbers, got {betas!r}")


class Params:
    def __init__(self, raw: dict, path: Path | None = None):
        self.raw = raw
        self.path = path
        self.validate()

    # ---- raw access -------------------------------------------------------------------------
    def __getitem__(self, key):
        return self.raw[key]

    @property
    def seed(self) -> int:
        return int(self.raw.get("seed", 0))

    @property
    def device(self) -> str:
        return self.raw.get("device", "auto")

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        raw = self.raw
        if not isinstance(raw, dict):
            raise InpaintBenchError("params.yaml: the file must be a YAML mapping of sections")
        _check_keys(raw, TOP_LEVEL, "")
        for key in ("datasets", "models", "experiments"):
            if key not in raw:
                raise InpaintBenchError(f"params.yaml: missing section {key!r}")
        if self.device not in DEVICES:
            raise InpaintBenchError(f"params.yaml: device: expected one of {', '.join(DEVICES)}, got {self.device!r}")
        _check_keys(raw.get("training", {}), TRAINING_KEYS, "training")
        _check_optimizer(raw.get("training", {}).get("optimizer", {}), "training.optimizer")
        for name, ds in raw["datasets"].items():
            _check_type(ds, dict, f"datasets.{name}")
            if "source" not in ds or "size" not in ds:
                raise InpaintBenchError(f"params.yaml: datasets.{name}: needs 'source' and 'size'")
            _check_type(ds["size"], int, f"datasets.{name}.size")
        for name, ms in raw.get("masks", {}).items():
            _check_type(ms, dict, f"masks.{name}")
            if "source" not in ms:
                raise InpaintBenchError(f"params.yaml: masks.{name}: needs 'source'")
        for step, block in raw.get("slurm", {}).items():
            if step not in ("train", "teacher"):
                raise InpaintBenchError(f"params.yaml: slurm: unknown step {step!r}; allowed: teacher, train")
            _check_type(block, dict, f"slurm.{step}")
            _check_keys(block, {"runtime": int, "mem_mb": int}, f"slurm.{step}")
        self._validate_models()
        self._validate_experiments()
        suites = raw.get("suites", {})
        for sname, exps in suites.items():
            _check_type(exps, list, f"suites.{sname}")
            for e in exps:
                if e not in raw["experiments"]:
                    raise InpaintBenchError(
                        f"params.yaml: suites.{sname}: unknown experiment {e!r}; known: {', '.join(raw['experiments'])}")
        suite = raw.get("suite")
        if suite is not None and suite not in suites and suite not in raw["experiments"]:
            raise InpaintBenchError(
                f"params.yaml: suite: {suite!r} is neither a suite ({', '.join(suites)}) nor an experiment")

    def _validate_models(self) -> None:
        from .models import registry

        known_arch = set(registry.architectures())
        for name, spec in self.raw["models"].items():
            where = f"models.{name}"
            _check_type(spec, dict, where)
            _check_keys(spec, MODEL_KEYS, where)
            if "arch" not in spec:
                raise InpaintBenchError(f"params.yaml: {where}: needs 'arch' (one of {', '.join(sorted(known_arch))})")
            if spec["arch"] not in known_arch:
                raise InpaintBenchError(
                    f"params.yaml: {where}.arch: unknown architecture {spec['arch']!r}; known: {', '.join(sorted(known_arch))}")
            if "optimizer" in spec:
                _check_optimizer(spec["optimizer"], f"{where}.optimizer")
            if "training" in spec:
                _check_keys(spec["training"], TRAINING_KEYS, f"{where}.training")

    def _validate_experiments(self) -> None:
        raw = self.raw
        for name, exp in raw["experiments"].items():
            where = f"experiments.{name}"
            _check_type(exp, dict, where)
            _check_keys(exp, EXPERIMENT_KEYS, where)
            for key in ("runs", "models", "buckets", "masks", "size"):
                if key not in exp:
                    raise InpaintBenchError(f"params.yaml: {where}: missing {key!r}")
            for i, m in enumerate(exp["models"]):
                if m not in raw["models"]:
                    raise InpaintBenchError(
                        f"params.yaml: {where}.models[{i}]: unknown model {m!r}; known: {', '.join(raw['models'])}")
            if exp["masks"] not in raw.get("masks", {}):
                raise InpaintBenchError(
                    f"params.yaml: {where}.masks: unknown mask set {exp['masks']!r}; known: {', '.join(raw.get('masks', {}))}")
            if "training" in exp:
                _check_keys(exp["training"], TRAINING_KEYS, f"{where}.training")
            for i, b in enumerate(exp["buckets"]):
                Bucket.parse(b, f"params.yaml: {where}.buckets[{i}]")
            for i, spec in enumerate(exp.get("tables", [])):
                self._validate_table(spec, exp, f"{where}.tables[{i}]")
            for i, run in enumerate(exp["runs"]):
                rw = f"{where}.runs[{i}]"
                _check_type(run, dict, rw)
                if set(run) - {"train", "eval"} or "train" not in run or "eval" not in run:
                    raise InpaintBenchError(f"params.yaml: {rw}: expected keys 'train' and 'eval'")
                for ds in [run["train"], *run["eval"]]:
                    if ds not in raw["datasets"]:
                        raise InpaintBenchError(
                            f"params.yaml: {rw}: unknown dataset {ds!r}; known: {', '.join(raw['datasets'])}")
                    if raw["datasets"][ds]["size"] != exp["size"]:
                        raise InpaintBenchError(
                            f"params.yaml: {rw}: dataset {ds!r} is prepared at {raw['datasets'][ds]['size']} px "
                            f"but the experiment runs at {exp['size']} px; make them equal")

    def _validate_table(self, spec, exp: dict, where: str) -> None:
        from .report.paper_tables import parse_spec

        _check_type(spec, dict, where)
        if "name" not in spec:
            raise InpaintBenchError(f"params.yaml: {where}: needs a 'name' (the output file stem)")
        rest = {k: v for k, v in spec.items() if k != "name"}
        try:
            parsed = parse_spec(rest, spec["name"])
        except InpaintBenchError as exc:
            raise InpaintBenchError(f"params.yaml: {where}: {exc}") from None
        for model in parsed.methods:
            if model not in exp["models"]:
                raise InpaintBenchError(f"params.yaml: {where}.methods: {model!r} is not a model of this experiment")

    # ---- derived views ----------------------------------------------------------------------
    def active_experiments(self, suite: str | None = None) -> list[str]:
        suite = suite or self.raw.get("suite")
        if suite is None:
            return list(self.raw["experiments"])
        if suite in self.raw.get("suites", {}):
            return list(self.raw["suites"][suite])
        return [suite]

    def _lookup(self, section: str, name: str, what: str) -> dict:
        block = self.raw.get(section, {})
        if name not in block:
            raise InpaintBenchError(f"unknown {what} {name!r}; known: {', '.join(block)}")
        return block[name]

    def experiment(self, name: str) -> dict:
        return self._lookup("experiments", name, "experiment")

    def dataset(self, name: str) -> dict:
        return self._lookup("datasets", name, "dataset")

    def maskset(self, name: str) -> dict:
        return self._lookup("masks", name, "mask set")

    def model(self, name: str) -> dict:
        return self._lookup("models", name, "model")

    def teacher(self, experiment: str) -> dict:
        """The global `teacher` block overlaid with the experiment's own (e.g. paper-scale widths)."""
        return {**self.raw.get("teacher", {}), **self.experiment(experiment).get("teacher", {})}

    def model_training_spec(self, model: str) -> dict:
        """The parts of a model's params that change its training (not `label`, `paper_args`)."""
        return {k: v for k, v in self.model(model).items() if k not in ("label", "paper_args")}

    def is_learned(self, model: str) -> bool:
        from .models import registry

        return registry.is_learned(self.model(model)["arch"])

    def buckets(self, experiment: str) -> list[Bucket]:
        return [Bucket.parse(b) for b in self.experiment(experiment)["buckets"]]

    def training(self, model: str, experiment: str | None = None) -> dict:
        """The global training block, overlaid with the experiment's (its schedule) and then the
        model's own; optimizers merge key by key in the same order."""
        base = dict(self.raw.get("training", {}))
        exp = dict(self.experiment(experiment).get("training", {})) if experiment else {}
        spec = self.model(model)
        own = dict(spec.get("training", {}))
        opt = {**base.get("optimizer", {}), **exp.pop("optimizer", {}), **spec.get("optimizer", {}), **own.pop("optimizer", {})}
        return {**base, **exp, **own, "optimizer": opt}

    def train_jobs(self, experiments: list[str] | None = None) -> list[TrainJob]:
        jobs = []
        for e in experiments or self.active_experiments():
            exp = self.experiment(e)
            for run in exp["runs"]:
                for m in exp["models"]:
                    if self.is_learned(m):
                        jobs.append(TrainJob(e, run["train"], m))
        return jobs

    def section_hash(self, *keys: str, extra: Any = None) -> str:
        """Stable short hash of some params, used as Snakemake `params:` so edits rerun jobs."""
        blob = {k: self.raw.get(k) for k in keys}
        blob["extra"] = extra
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Params:
    path = Path(path)
    if not path.exists():
        raise InpaintBenchError(f"{path} not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InpaintBenchError(f"{path} is not valid YAML: {exc}") from exc
    if overrides:
        raw = {**raw, **overrides}
    return Params(raw, path)


def derive_seed(base: int, *parts: Any) -> int:
    """One seed in params.yaml derives every random choice: hash the base with a purpose tag."""
    h = hashlib.sha256(json.dumps([base, *[str(p) for p in parts]]).encode()).digest()
    return int.from_bytes(h[:4], "little")
