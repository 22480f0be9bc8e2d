"""params.yaml: load, validate (one place, clear errors), expand experiments into jobs.

The file is plain YAML; `load_params` returns a `Params` object holding the raw dict plus the
derived views every step uses. Validation errors are `InpaintBenchError`s that name the key path
and say what was expected, e.g. ``params.yaml: experiments.builtin.models[2]: unknown model
'pconvv'; known: biharmonic, pconv``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InpaintBenchError

SCHEMA_FILE = "workflow/schemas/params.schema.yaml"   # every key, type and range of params.yaml
DATASET_SOURCES_BUILTIN = "builtin"
LABELLESS_SOURCES = {"paris-streetview"}  # prepare writes an empty labels.txt: no `trained` teacher
_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_INTERVAL = re.compile(rf"^\s*([\(\[])\s*({_NUM})\s*,\s*({_NUM})\s*([\)\]])\s*$")


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


#: libyaml's parser where PyYAML has it (~10x faster than the pure-Python one: every workflow job
#: parses params.yaml, its schema and the merged config), else the pure-Python one; same results
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SAFE_LOADER):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently, so a second `epochs:` would win unnoticed)."""


def _strict_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark)
        seen.add(key)
    return _SAFE_LOADER.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def load_yaml(text: str):
    """Parse YAML safely, refusing duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)


def schema_path() -> Path:
    """The params JSON Schema: in the source checkout beside the package, else in the working folder."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / SCHEMA_FILE).exists():
            return base / SCHEMA_FILE
    raise InpaintBenchError(f"the params schema {SCHEMA_FILE} is missing; run from the project root")


@functools.lru_cache(maxsize=4)
def _validator(path: str):
    import jsonschema

    try:
        schema = load_yaml(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InpaintBenchError(f"the params schema {path} is not valid YAML: {exc}") from None
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "object": "a mapping",
               "array": "a list", "boolean": "true/false", "null": "null (empty)"}


def _key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_problem(err) -> tuple[str, str]:
    """(key path, what is wrong and what is allowed) of one jsonschema error."""
    where, v, s, value = _key_path(err.absolute_path), err.validator, err.schema, err.instance
    note = f" ({s['description']})" if isinstance(s, dict) and s.get("description") else ""
    if v == "additionalProperties":
        allowed = sorted(s.get("properties", {}))
        extra = sorted(k for k in value if k not in allowed)
        key = f"{where}.{extra[0]}" if where else str(extra[0])
        more = f" (and {', '.join(map(repr, extra[1:]))})" if len(extra) > 1 else ""
        return key, f"unknown key {extra[0]!r}{more}; allowed: {', '.join(allowed)}"
    if v == "required":
        missing = [k for k in err.validator_value if k not in value]
        return where or "(top level)", f"missing key {', '.join(map(repr, missing))}"
    if v == "type":
        types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        return where, f"expected {' or '.join(_TYPE_NAMES.get(t, t) for t in types)}, got {_show(value)}"
    if v == "const":
        return where, f"expected {err.validator_value!r}, got {_show(value)}"
    if v == "enum":
        return where, f"expected one of {', '.join(str(x).lower() if isinstance(x, bool) else str(x) for x in err.validator_value)}, got {_show(value)}"
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if v in bounds:
        return where, f"must be {bounds[v]} {err.validator_value}{note}, got {_show(value)}"
    if v in ("minItems", "maxItems"):
        n = err.validator_value
        lo_hi = "at least" if v == "minItems" else "at most"
        return where, f"needs {lo_hi} {n} item{'s' if n != 1 else ''}, got {_show(value)}"
    if v in ("minLength", "minProperties"):
        return where, f"must not be empty{note}"
    if v == "pattern":
        return where, f"{_show(value)} is not {s.get('description') or 'matching the pattern ' + s['pattern']}"
    if v in ("oneOf", "anyOf"):
        options = sorted({_schema_problem(c)[1] for c in err.context if not c.relative_path})
        return where, f"{_show(value)} is not allowed: " + "; or ".join(options)
    return where, err.message


def check_schema(raw: Any, source: str = "params.yaml") -> None:
    """Validate `raw` against the params JSON Schema; one error line per problem, naming the key path."""
    errors = sorted(_validator(str(schema_path())).iter_errors(raw), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    lines = []
    for err in errors:
        where, what = _schema_problem(err)
        line = f"{source}: {where or '(top level)'}: {what}"
        if line not in lines:
            lines.append(line)
    shown = lines[:8] + ([f"... and {len(lines) - 8} more problems"] if len(lines) > 8 else [])
    raise InpaintBenchError("\n".join(shown))


class Params:
    def __init__(self, raw: dict, path: Path | None = None):
        self.raw = raw
        self.path = path
        self.source = str(path) if path is not None else "params.yaml"   # named in every error
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
        """The schema (every key, type and range), then the cross-checks a schema cannot express."""
        raw, src = self.raw, self.source
        if not isinstance(raw, dict):
            raise InpaintBenchError(f"{src}: the file must be a YAML mapping of sections")
        check_schema(raw, src)
        from .data.sources import SOURCES

        for name, ds in raw["datasets"].items():
            if ds["source"] != DATASET_SOURCES_BUILTIN and ds["source"] not in SOURCES:
                raise InpaintBenchError(
                    f"{src}: datasets.{name}.source: unknown source {ds['source']!r}; known: "
                    f"{', '.join([DATASET_SOURCES_BUILTIN, *sorted(SOURCES)])}")
        ranges = [("training.mask_ratio", raw.get("training", {}).get("mask_ratio"))]
        ranges += [(f"masks.{n}.ratio_range", m.get("ratio_range")) for n, m in raw.get("masks", {}).items()]
        for where, rr in ranges:
            if rr is not None and rr[0] > rr[1]:
                raise InpaintBenchError(f"{src}: {where}: needs low <= high, got {rr}")
        blocks = [("training", raw.get("training", {}))]
        blocks += [(f"experiments.{n}.training", e.get("training", {})) for n, e in raw["experiments"].items()]
        blocks += [(f"models.{n}.training", m.get("training", {})) for n, m in raw["models"].items()]
        for where, block in blocks:
            ms = block.get("masks", "generated")
            if ms != "generated" and ms not in raw.get("masks", {}):
                raise InpaintBenchError(f"{src}: {where}.masks: unknown mask set {ms!r}; use generated or one of "
                                        f"{', '.join(raw.get('masks', {}))}")
        self._validate_models()
        self._validate_experiments()
        self._validate_finetune()
        suites = raw.get("suites", {})
        for sname, exps in suites.items():
            for e in exps:
                if e not in raw["experiments"]:
                    raise InpaintBenchError(
                        f"{src}: suites.{sname}: unknown experiment {e!r}; known: {', '.join(raw['experiments'])}")
        suite = raw.get("suite")
        if suite is not None and suite not in suites and suite not in raw["experiments"]:
            raise InpaintBenchError(
                f"{src}: suite: {suite!r} is neither a suite ({', '.join(suites)}) nor an experiment")

    def _validate_models(self) -> None:
        from .models import registry

        known_arch = set(registry.architectures())
        for name, spec in self.raw["models"].items():
            if spec["arch"] not in known_arch:
                raise InpaintBenchError(
                    f"{self.source}: models.{name}.arch: unknown architecture {spec['arch']!r}; "
                    f"known: {', '.join(sorted(known_arch))}")

    def _validate_experiments(self) -> None:
        raw, src = self.raw, self.source
        for name, exp in raw["experiments"].items():
            where = f"experiments.{name}"
            for i, m in enumerate(exp["models"]):
                if m not in raw["models"]:
                    raise InpaintBenchError(
                        f"{src}: {where}.models[{i}]: unknown model {m!r}; known: {', '.join(raw['models'])}")
            self._validate_released(exp.get("released", []), f"{where}.released")
            if exp["masks"] not in raw.get("masks", {}):
                raise InpaintBenchError(
                    f"{src}: {where}.masks: unknown mask set {exp['masks']!r}; known: {', '.join(raw.get('masks', {}))}")
            seen: dict[tuple, int] = {}
            for i, b in enumerate(exp["buckets"]):
                parsed = Bucket.parse(b, f"{src}: {where}.buckets[{i}]")
                key = (parsed.lo, parsed.hi, parsed.lo_closed, parsed.hi_closed)
                if key in seen:
                    raise InpaintBenchError(
                        f"{src}: {where}.buckets[{i}]: {b!r} repeats buckets[{seen[key]}]; each bucket once")
                seen[key] = i
            for i, spec in enumerate(exp.get("tables", [])):
                self._validate_table(spec, exp, f"{where}.tables[{i}]")
            if "reference_method" in exp and exp["reference_method"] not in exp["models"]:
                raise InpaintBenchError(f"{src}: {where}.reference_method: {exp['reference_method']!r} is not a model of "
                                        f"this experiment; choose one of {', '.join(exp['models'])}")
            self._validate_teacher_choice(name, exp, where)
            for i, run in enumerate(exp["runs"]):
                rw = f"{where}.runs[{i}]"
                self._validate_released(run.get("released", []), f"{rw}.released")
                for ds in [run["train"], *run["eval"]]:
                    if ds not in raw["datasets"]:
                        raise InpaintBenchError(
                            f"{src}: {rw}: unknown dataset {ds!r}; known: {', '.join(raw['datasets'])}")
                    if raw["datasets"][ds]["size"] != exp["size"]:
                        raise InpaintBenchError(
                            f"{src}: {rw}: dataset {ds!r} is prepared at {raw['datasets'][ds]['size']} px "
                            f"but the experiment runs at {exp['size']} px; make them equal")

    def _validate_released(self, names: list, where: str) -> None:
        """An experiment's or a run's `released` list: models with released weights (models/released.py)."""
        models = self.raw["models"]
        for i, m in enumerate(names):
            if "weights" not in models.get(m, {}):
                known = [k for k, v in models.items() if "weights" in v]
                raise InpaintBenchError(f"{self.source}: {where}[{i}]: {m!r} is not a model with released weights; "
                                        f"known: {', '.join(known) or 'none'}")

    def _validate_finetune(self) -> None:
        """`training.finetune` (train/phases.py) of every trained model in every experiment: one of
        steps/fraction, and a boundary inside that run (the trainer checks it again with its defaults)."""
        from .train.phases import plan

        raw = self.raw
        for e, exp in raw["experiments"].items():
            for m in exp["models"]:
                spec = raw["models"][m]
                if "weights" in spec or not self.is_learned(m):
                    continue
                cfg = {**raw.get("training", {}), **exp.get("training", {}), **spec.get("training", {})}
                if cfg.get("finetune") and "epochs" in cfg and "steps_per_epoch" in cfg:
                    plan(cfg["finetune"], int(cfg["epochs"]) * int(cfg["steps_per_epoch"]),
                         f"{self.source}: training.finetune of {m} in experiment {e}")

    def _validate_teacher_choice(self, name: str, exp: dict, where: str) -> None:
        """The `trained` teacher (train/teacher.py) only where the training set has labels."""
        if self.teacher(name).get("kind", "trained") != "trained":
            return
        uses = [m for m in exp["models"] if "teacher" in self.raw["models"][m].get("requires", [])]
        for run in exp["runs"] if uses else []:
            source = self.raw["datasets"].get(run["train"], {}).get("source")
            if source in LABELLESS_SOURCES:
                raise InpaintBenchError(
                    f"{self.source}: {where}: models {', '.join(uses)} need a teacher, and the `trained` teacher "
                    f"needs labels, which {run['train']!r} ({source}) does not have. Set {where}.teacher.kind: "
                    f"asl-tresnet-l (the papers' teacher: Open_ImagesV6_TRresNet_L_448.pth in "
                    f"$TORCH_HOME/hub/checkpoints) or imagenet-resnet50 (offline substitute).")

    def _validate_table(self, spec, exp: dict, where: str) -> None:
        from .report.table_spec import parse_spec

        rest = {k: v for k, v in spec.items() if k != "name"}
        try:
            parsed = parse_spec(rest, spec["name"])
        except InpaintBenchError as exc:
            raise InpaintBenchError(f"{self.source}: {where}: {exc}") from None
        for model in parsed.methods:
            if model not in exp["models"]:
                raise InpaintBenchError(f"{self.source}: {where}.methods: {model!r} is not a model of this experiment")

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
        exp = self._lookup("experiments", name, "experiment")
        released = exp.get("released")
        if released:
            # released checkpoints (models/released.py) are scored when their files are present
            from .models.released import present

            extra = [m for m in released if m not in exp["models"] and present(self.model(m))]
            if extra:
                exp = {**exp, "models": [*exp["models"], *extra]}
        return exp

    def run_released(self, experiment: str, train: str) -> list[str]:
        """The released checkpoints of one run (`runs[i].released`) whose files are present
        (models/released.py `present`), not already among the experiment's models: scored on
        that run's eval datasets only, never trained."""
        exp = self.experiment(experiment)
        run = next((r for r in exp["runs"] if r["train"] == train), None)
        if run is None or not run.get("released"):
            return []
        from .models.released import present

        return [m for m in dict.fromkeys(run["released"]) if m not in exp["models"] and present(self.model(m))]

    def run_models(self, experiment: str, train: str) -> list[str]:
        """What is evaluated on one run: the experiment's models (with its present `released`),
        then the run's own present released checkpoints (run_released)."""
        return [*self.experiment(experiment)["models"], *self.run_released(experiment, train)]

    def dataset(self, name: str) -> dict:
        return self._lookup("datasets", name, "dataset")

    def maskset(self, name: str) -> dict:
        return self._lookup("masks", name, "mask set")

    def model(self, name: str) -> dict:
        return self._lookup("models", name, "model")

    def teacher(self, experiment: str) -> dict:
        """The global `teacher` block overlaid with the experiment's own (e.g. paper-scale widths)."""
        return {**self.raw.get("teacher", {}), **self.experiment(experiment).get("teacher", {})}

    def experiment_training(self, experiment: str) -> dict:
        """The global training block overlaid with the experiment's (what steps shared by the
        experiment's models use, e.g. `val_pairs` for the pairs step)."""
        return {**self.raw.get("training", {}), **self.experiment(experiment).get("training", {})}

    def perceptual(self, experiment: str | None = None) -> dict:
        """The perceptual/style-loss backbone of an experiment: the global `perceptual` block
        overlaid with the experiment's own (the papers' experiments ask for ImageNet VGG16)."""
        base = dict(self.raw.get("perceptual") or {"backbone": "random-vgg16"})
        own = self.experiment(experiment).get("perceptual", {}) if experiment else {}
        return {**base, **own}

    def requirements(self, model: str, experiment: str) -> list[str]:
        """Artifacts other rules must produce for `model` in `experiment` (its `requires`). The
        `teacher` artifact is only trained when the experiment's teacher kind is `trained`; the
        other kinds load released weights (train/teacher.py)."""
        reqs = list(self.model(model).get("requires", []))
        trained = self.teacher(experiment).get("kind", "trained") == "trained"
        return [r for r in reqs if r != "teacher" or trained]

    def model_training_spec(self, model: str) -> dict:
        """The parts of a model's params that change its training (not `label`, `paper_args`)."""
        return {k: v for k, v in self.model(model).items() if k not in ("label", "paper_args")}

    def is_learned(self, model: str) -> bool:
        from .models import registry

        spec = self.model(model)
        if "weights" in spec:  # released weights (models/released.py): evaluated, never trained
            return False
        return registry.is_learned(spec["arch"])

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
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InpaintBenchError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise InpaintBenchError(f"{path}: the file must be a YAML mapping of sections (got {type(raw).__name__})")
    if overrides:
        raw = {**raw, **overrides}
    return Params(raw, path)


def derive_seed(base: int, *parts: Any) -> int:
    """One seed in params.yaml derives every random choice: hash the base with a purpose tag."""
    h = hashlib.sha256(json.dumps([base, *[str(p) for p in parts]]).encode()).digest()
    return int.from_bytes(h[:4], "little")


def share_merged_params(cfg: dict) -> str:
    """Every `inpaintbench` step reads the params itself. Hand it the config this Snakemake run
    merged (params.yaml + --configfile overlays + --config), not params.yaml alone: write it to a
    content-addressed file (concurrent runs with other configs never clash) and name it in
    INPAINTBENCH_PARAMS, which the CLI reads when --params is not given. The rule commands stay
    the same text, so a changed config reruns only the jobs whose `params:` hashes change."""
    import os

    text = yaml.safe_dump(cfg, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = os.path.abspath(os.path.join(".snakemake", "inpaintbench", f"params-{digest}.yaml"))
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("# written by the Snakefile (workflow/rules/common.smk): the merged config of a run\n" + text)
        os.replace(tmp, path)
    os.environ["INPAINTBENCH_PARAMS"] = path
    return path


def let_jobs_cache_bytecode() -> None:
    """Some machines set PYTHONDONTWRITEBYTECODE=1; then every workflow job compiles torch and
    friends again at import (seconds per job, dozens of jobs) unless the environment was installed
    with `uv sync --compile-bytecode`. Let the jobs this Snakemake run starts write the .pyc caches
    (CPython writes each atomically), so only the first job pays."""
    import os

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
