"""Where every step reads and writes (relative to the project root). The files are the interface
between steps (DESIGN.md), so both the CLI and the Snakemake rules take their paths from here."""
from __future__ import annotations

from pathlib import Path

DATA = Path("data")
RUNS = Path("runs")
RESULTS = Path("results")
REPORTS = Path("reports")


def raw_dir(source: str) -> Path:
    return DATA / "raw" / source


def prepared_dir(dataset: str) -> Path:
    return DATA / "prepared" / dataset


def prepared_manifest(dataset: str) -> Path:
    return prepared_dir(dataset) / "manifest.csv"


def maskset_dir(maskset: str, size: int) -> Path:
    return DATA / "masks" / f"{maskset}-{size}"


def maskset_manifest(maskset: str, size: int) -> Path:
    return maskset_dir(maskset, size) / "manifest.csv"


def pairs_csv(experiment: str, dataset: str, split: str) -> Path:
    return DATA / "pairs" / experiment / dataset / f"{split}.csv"


def run_dir(experiment: str, train: str, model: str) -> Path:
    return RUNS / experiment / train / model


def checkpoint(experiment: str, train: str, model: str) -> Path:
    return run_dir(experiment, train, model) / "model.pt"


def artifact(experiment: str, train: str, name: str) -> Path:
    """Files a model `requires` (e.g. the SAHN teacher), shared by the models of one run."""
    return RUNS / experiment / train / f"_{name}" / f"{name}.pt"


def result_dir(experiment: str, train: str, model: str) -> Path:
    return RESULTS / experiment / train / model


def metrics_csv(experiment: str, train: str, model: str) -> Path:
    return result_dir(experiment, train, model) / "metrics.csv"


def summary_csv(experiment: str) -> Path:
    return RESULTS / experiment / "summary.csv"


def report_dir(experiment: str) -> Path:
    return REPORTS / "experiments" / experiment
