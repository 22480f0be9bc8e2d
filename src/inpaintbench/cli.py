"""`inpaintbench <verb> ...`: every workflow step as a command. Thin: parse, call, print user
errors without a traceback (exit status 2). The names a command takes (experiments, datasets,
models, mask sets) come from the params file, and `--help` lists them."""
from __future__ import annotations

import argparse
import os
import sys

from . import paths
from .errors import InpaintBenchError


def _params(args):
    from .config import load_params

    return load_params(args.params)


def cmd_validate(args) -> None:
    p = _params(args)
    print(f"{args.params}: OK ({len(p.raw['experiments'])} experiments, {len(p.raw['models'])} models, "
          f"{len(p.train_jobs())} training jobs in suite {p.raw.get('suite')!r})")


def cmd_fetch(args) -> None:
    from .data.fetch import fetch_source

    p = _params(args)
    accept = args.accept_terms or p.raw.get("downloads", {}).get("accept_terms", [])
    # Places365: extract only the categories the datasets use, named or drawn by count (an
    # integer k: the k categories prepare draws with the same seed); None = all, when a dataset
    # of this source sets no categories
    chosen = [ds.get("categories") for ds in p.raw["datasets"].values() if ds["source"] == args.source]
    categories = None
    if chosen and all(c is not None for c in chosen):
        categories = [c for cats in chosen for c in (cats if isinstance(cats, list) else [cats])]
    if args.categories:
        categories = [int(c) if c.isdigit() else c for c in args.categories.split(",") if c]
    overrides = p.raw.get("downloads", {}).get("urls", {}).get(args.source)
    fetch_source(args.source, paths.DATA / "raw", accept_terms=accept, categories=categories,
                 urls_override=overrides, seed=p.seed, progress=sys.stderr.isatty())


def cmd_prepare(args) -> None:
    p = _params(args)
    spec = p.dataset(args.dataset)
    out = paths.prepared_dir(args.dataset)
    if spec["source"] == "builtin":
        from .data.builtin import build_builtin

        build_builtin(args.dataset, spec, out, p.seed)
    else:
        from .data.prepare import prepare_real

        prepare_real(args.dataset, spec, paths.DATA / "raw", out, seed=p.seed, workers=args.workers)


def cmd_masks(args) -> None:
    p = _params(args)
    spec = p.maskset(args.maskset)
    out = paths.maskset_dir(args.maskset, args.size)
    if spec["source"] == "generated":
        from .masks.generate import generate_maskset

        generate_maskset(args.maskset, spec, out, args.size, p.seed)
    else:
        from .masks.nvidia import import_maskset

        import_maskset(args.maskset, spec, paths.DATA / "raw", out, size=args.size)


def cmd_pairs(args) -> None:
    from .masks.buckets import make_pairs

    p = _params(args)
    exp = p.experiment(args.experiment)
    split = args.split
    manifest = paths.prepared_manifest(args.dataset)
    if split == "val":
        from .io import read_csv

        if not any(r["split"] == "val" for r in read_csv(manifest)):
            raise InpaintBenchError(
                f"{args.dataset} has no 'val' images, and validation pairs never come from a test split: "
                f"set datasets.{args.dataset}.val_from_train (training images moved to val by prepare).")
    per_bucket = exp.get("pairs_per_bucket", 32)
    if args.split == "val":
        n_val = int(p.experiment_training(args.experiment).get("val_pairs", 16))  # the experiment's own value
        per_bucket = max(1, -(-n_val // len(exp["buckets"])))
    out = make_pairs(image_manifest=manifest, mask_manifest=paths.maskset_manifest(exp["masks"], exp["size"]),
                     buckets=p.buckets(args.experiment), split=split, per_bucket=per_bucket,
                     seed_parts=(args.experiment, args.dataset), out_csv=paths.pairs_csv(args.experiment, args.dataset, args.split),
                     seed=p.seed)
    print(f"pairs -> {out}")


def cmd_train(args) -> None:
    from .train.trainer import train_job

    train_job(_params(args), args.experiment, args.train, args.model, stop_after=args.stop_after,
              track=not args.no_mlflow, restart=args.restart)


def cmd_teacher(args) -> None:
    from .config import derive_seed
    from .io import write_json
    from .train.devices import resolve_device
    from .train.teacher import train_teacher

    p = _params(args)
    out = paths.artifact(args.experiment, args.train, "teacher")
    metrics = train_teacher(paths.prepared_manifest(args.train), out, p.teacher(args.experiment),
                            derive_seed(p.seed, "teacher", args.experiment, args.train), resolve_device(p.device))
    write_json(out.parent / "metrics.json", metrics)
    print(f"teacher -> {out} (train loss {metrics.get('train_loss')}, accuracy {metrics.get('train_accuracy')})")


def cmd_evaluate(args) -> None:
    from .evaluate import evaluate_job
    from .train.devices import resolve_device

    p = _params(args)
    evaluate_job(p, args.experiment, args.train, args.model, device=resolve_device(p.device))
    if not args.no_mlflow:
        _log_evaluations(p, args.experiment, [(args.train, args.model)])


def _test_metrics(experiment: str, train: str, model: str):
    """(MLflow run id of the model's training run, its per-bucket test means and "all"), or None
    for a model without a training run (classical, released) or not yet evaluated."""
    import json

    import pandas as pd

    from .io import read_frame
    from .tracking import metric_key

    info = paths.run_dir(experiment, train, model) / "run.json"
    run_id = json.loads(info.read_text()).get("mlflow_run_id") if info.exists() else None
    csv = paths.metrics_csv(experiment, train, model)
    if not run_id or not csv.exists():
        return None
    per_image = read_frame(csv, dtype={"pair_id": str, "mask_id": str})
    skip = {"experiment", "train", "dataset", "model", "pair_id", "bucket", "image_id", "mask_id", "hole_ratio"}
    cols = [c for c in per_image.columns if c not in skip and pd.api.types.is_numeric_dtype(per_image[c])]
    metrics = {}
    for ds, sub in per_image.groupby("dataset", sort=False):
        for bucket, part in [*sub.groupby("bucket", sort=False), ("all", sub)]:
            metrics.update({metric_key("test", ds, bucket, c): float(part[c].mean()) for c in cols})
    return run_id, metrics


def _log_evaluations(p, experiment: str, jobs: list[tuple[str, str]]) -> None:
    """Per-bucket test means (and "all") onto each model's MLflow training run, when it has one,
    through one MLflow client (`aggregate` logs a whole experiment at once)."""
    from .tracking import log_test_metrics_many

    found = {}
    for train, model in jobs:
        got = _test_metrics(experiment, train, model)
        if got:
            found[(train, model)] = got
    if not found:
        return
    logged = log_test_metrics_many({run_id: m for run_id, m in found.values()}, p.raw.get("mlflow"))
    for (train, model), (run_id, metrics) in found.items():
        if logged[run_id]:
            print(f"test metrics of {model} ({train}) -> MLflow run {run_id} ({len(metrics)} values)")
        else:
            print(f"test metrics of {model} ({train}) not logged: MLflow run {run_id} (from run.json) is not "
                  f"in this tracking store")


def cmd_inpaint(args) -> None:
    from .inpaint import run_inpaint
    from .train.devices import resolve_device

    p = _params(args)
    run_inpaint(p, args.model, args.image, args.mask, args.output, experiment=args.experiment, train=args.train,
                device=resolve_device(args.device or p.device), threshold=args.threshold,
                invert_mask=args.invert_mask, pad_to=args.pad_to, progress=sys.stderr.isatty())


def cmd_efficiency(args) -> None:
    import torch

    from .io import write_csv
    from .report.efficiency import EFFICIENCY_FIELDS, experiment_efficiency
    from .train.devices import resolve_device

    p = _params(args)
    torch.set_num_threads(args.threads)
    rows = experiment_efficiency(p, args.experiment, resolve_device(p.device))
    out = paths.RESULTS / args.experiment / "efficiency.csv"
    write_csv(out, rows, EFFICIENCY_FIELDS + [k for k in rows[0] if k not in EFFICIENCY_FIELDS] if rows else EFFICIENCY_FIELDS)
    print(f"efficiency -> {out}")


def cmd_aggregate(args) -> None:
    from .report.aggregate import aggregate_experiment

    p = _params(args)
    print(f"summary -> {aggregate_experiment(p, args.experiment)}")
    if not args.no_mlflow:
        # the workflow's evaluate jobs run with --no-mlflow: the test metrics of every trained model
        # of the experiment reach its MLflow run here, in one process (MLflow's import and store
        # set-up once per experiment instead of once per evaluate job)
        exp = p.experiment(args.experiment)
        _log_evaluations(p, args.experiment, [(r["train"], m) for r in exp["runs"] for m in exp["models"]])


def cmd_report(args) -> None:
    from .report.build import build_experiment

    build_experiment(_params(args), args.experiment)
    print(f"report -> {paths.report_dir(args.experiment)}")


def cmd_index(args) -> None:
    from .report.build import build_index

    p = _params(args)
    for name in args.experiments:
        p.experiment(name)  # an unknown name is a clear error naming the known ones
    print(f"index -> {build_index(p, args.experiments or p.active_experiments())}")


DESCRIPTION = """Every step of the inpaintbench workflow as a command: fetch, prepare, masks, pairs, teacher,
train, evaluate, efficiency, aggregate, report, index. The workflow (`uv run snakemake --cores all`
or `dvc repro`) runs them in order; run one by hand to redo or debug a step. Names of experiments,
datasets, models and mask sets come from the params file: `inpaintbench <command> --help` lists them."""


def _params_names(argv: list[str] | None) -> dict[str, list[str]]:
    """Experiment, dataset, model and mask-set names of the params file the command line names
    (--params, else $INPAINTBENCH_PARAMS, else params.yaml), read without validating it; empty
    lists when it cannot be read (then no choices are enforced, and the step reports the file)."""
    import yaml

    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--params", default=os.environ.get("INPAINTBENCH_PARAMS") or "params.yaml")
    known, _ = pre.parse_known_args(argv)
    try:
        with open(known.params, encoding="utf-8") as fh:
            raw = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: faster
    except Exception:
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    keys = lambda section: [str(k) for k in raw.get(section) or {}] if isinstance(raw.get(section) or {}, dict) else []
    models = raw.get("models") if isinstance(raw.get("models"), dict) else {}
    learned = [m for m, spec in models.items()
               if isinstance(spec, dict) and "weights" not in spec and _learned(spec.get("arch"))]
    return {"experiment": keys("experiments"), "dataset": keys("datasets"), "model": keys("models"),
            "learned": learned, "maskset": keys("masks"), "params": [known.params]}


def _learned(arch) -> bool:
    from .models import registry

    try:
        return registry.is_learned(str(arch))
    except InpaintBenchError:
        return True  # an unknown architecture: the step itself reports it


def _positional(s, dest: str, kind: str, names: dict, what: str, **kw) -> None:
    """A positional argument whose valid values (from the params file) are listed in its help and
    checked by argparse (not for nargs="*", where argparse would check the empty default too; the
    step checks those names)."""
    values = names.get(kind) or []
    shown = ", ".join(values) if values else f"see {names['params'][0]}"
    choices = values if values and kw.get("nargs") != "*" else None
    s.add_argument(dest, metavar=dest.upper(), choices=choices, help=f"{what}; one of: {shown}", **kw)


def _count(minimum: int):
    """argparse type: an integer >= minimum (e.g. --stop-after -5 is refused, not a no-op)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    names = _params_names(argv)
    ap = argparse.ArgumentParser(prog="inpaintbench", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=os.environ.get("INPAINTBENCH_PARAMS") or "params.yaml",
                    help="the params file (default: $INPAINTBENCH_PARAMS, which the Snakefile sets to the "
                         "config it merged from params.yaml and its --configfile/--config overlays; else params.yaml)")
    sub = ap.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("validate", help="check the params file against its schema")
    s.set_defaults(fn=cmd_validate)
    s = sub.add_parser("fetch", help="download, verify and extract a data source")
    from .data.sources import SOURCES

    s.add_argument("source", metavar="SOURCE", choices=sorted(SOURCES),
                   help=f"a registered data source; one of: {', '.join(sorted(SOURCES))}")
    s.add_argument("--accept-terms", action="append", default=[], metavar="SOURCE",
                   help="accept the terms of use of SOURCE (repeatable)")
    s.add_argument("--categories", default=None, metavar="NAMES",
                   help="Places365: extract only these categories (comma-separated names, or an integer k: "
                        "the k categories drawn with params' seed); default: what params.yaml's datasets use")
    s.set_defaults(fn=cmd_fetch)
    s = sub.add_parser("prepare", help="build a prepared dataset (images + manifest)")
    _positional(s, "dataset", "dataset", names, "a dataset of params `datasets`")
    s.add_argument("--workers", type=_count(1), default=min(4, os.cpu_count() or 1))
    s.set_defaults(fn=cmd_prepare)
    s = sub.add_parser("masks", help="generate or import a mask set at a size")
    _positional(s, "maskset", "maskset", names, "a mask set of params `masks`")
    s.add_argument("--size", type=_count(11), required=True, help="mask size in pixels (an experiment's `size`)")
    s.set_defaults(fn=cmd_masks)
    s = sub.add_parser("pairs", help="fix the image↔mask pairs of a dataset for an experiment")
    _positional(s, "experiment", "experiment", names, "an experiment of params `experiments`")
    _positional(s, "dataset", "dataset", names, "a dataset the experiment trains or evaluates on")
    s.add_argument("--split", choices=["test", "val"], default="test")
    s.set_defaults(fn=cmd_pairs)
    s = sub.add_parser("train", help="train one model")
    _positional(s, "experiment", "experiment", names, "an experiment of params `experiments`")
    _positional(s, "train", "dataset", names, "the training dataset (a `train` of the experiment's runs)")
    _positional(s, "model", "learned", names, "a learned model of the experiment")
    s.add_argument("--stop-after", type=_count(1), default=None, help="stop (resumably) after this many steps")
    s.add_argument("--restart", action="store_true",
                   help="start from step 0, discarding a last.pt left by an earlier run (needed when the "
                        "training settings changed since)")
    s.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    s.set_defaults(fn=cmd_train)
    s = sub.add_parser("teacher", help="train the multi-label teacher SAHN's prior mapper learns from")
    _positional(s, "experiment", "experiment", names, "an experiment of params `experiments`")
    _positional(s, "train", "dataset", names, "the training dataset (with labels)")
    s.set_defaults(fn=cmd_teacher)
    s = sub.add_parser("evaluate", help="evaluate one model on the experiment's pairs")
    _positional(s, "experiment", "experiment", names, "an experiment of params `experiments`")
    _positional(s, "train", "dataset", names, "the training dataset of the run")
    _positional(s, "model", "model", names, "a model of the experiment")
    s.add_argument("--no-mlflow", action="store_true", help="do not add the test metrics to the model's MLflow run")
    s.set_defaults(fn=cmd_evaluate)
    s = sub.add_parser("inpaint", help="inpaint your own image(s) with a trained, released or classical model")
    models = names.get("model") or []
    s.add_argument("--model", required=True, metavar="MODEL", choices=models or None,
                   help=f"a params `models` entry; one of: {', '.join(models) or 'see ' + names['params'][0]}")
    s.add_argument("--image", required=True, help="an image file, or a folder of images")
    s.add_argument("--mask", required=True, help="its mask (white = hole, same size), or a folder of masks "
                                                 "named <stem>.png or <stem>_mask.png")
    s.add_argument("-o", "--output", required=True, help="output PNG, or a folder in folder mode")
    s.add_argument("--experiment", default=None, help="trained models: the experiment whose checkpoint to use")
    s.add_argument("--train", default=None, help="trained models: the training dataset of that run")
    s.add_argument("--threshold", type=float, default=None,
                   help="binarise a non-binary mask: pixels above this grey value (0..1) are hole")
    s.add_argument("--invert-mask", action="store_true", help="the mask is white where the image is kept")
    s.add_argument("--pad-to", type=_count(1), default=8, help="pad sides to a multiple of this for the network")
    s.add_argument("--device", default=None, help="cpu, cuda, … (default: params `device`)")
    s.set_defaults(fn=cmd_inpaint)
    s = sub.add_parser("efficiency", help="parameters and inference time of an experiment's models")
    _positional(s, "experiment", "experiment", names, "an experiment of params `experiments`")
    s.add_argument("--threads", type=_count(1), default=1, help="CPU threads for the timing (default 1)")
    s.set_defaults(fn=cmd_efficiency)
    s = sub.add_parser("aggregate", help="per-bucket summary of an experiment")
    _positional(s, "experiment", "experiment", names, "an experiment of params `experiments`")
    s.add_argument("--no-mlflow", action="store_true",
                   help="do not add the test metrics to the trained models' MLflow runs")
    s.set_defaults(fn=cmd_aggregate)
    s = sub.add_parser("report", help="tables and figures of an experiment")
    _positional(s, "experiment", "experiment", names, "an experiment of params `experiments`")
    s.set_defaults(fn=cmd_report)
    s = sub.add_parser("index", help="reports/index.html over experiments")
    _positional(s, "experiments", "experiment", names, "experiments to show (default: the active suite's)", nargs="*")
    s.set_defaults(fn=cmd_index)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    try:
        args.fn(args)
    except InpaintBenchError as exc:
        print(f"inpaintbench {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # an input a step reads before checking it: still no traceback
        print(f"inpaintbench {args.verb}: error: {exc.filename or exc} does not exist; run the step that "
              f"produces it first (`uv run snakemake` runs every step in order).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
