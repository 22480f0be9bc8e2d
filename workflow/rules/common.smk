# Helpers shared by the rules: the validated params, the active experiments, and input functions.
import os
import sys

from snakemake.resources import Resource
from snakemake.utils import validate

from inpaintbench import paths
from inpaintbench.config import Params, let_jobs_cache_bytecode, load_yaml, share_merged_params
from inpaintbench.errors import InpaintBenchError
from inpaintbench.train.memory import available_mb

# Validation: first inpaintbench's own (the JSON Schema workflow/schemas/params.schema.yaml with
# messages naming the file and key path, then the cross-checks), then the Snakemake convention
# (snakemake.utils.validate against the same schema), which then passes by construction.
_CONFIG_NAME = " + ".join(
    os.path.relpath(f) if not os.path.relpath(f).startswith("..") else os.path.abspath(f)
    for f in map(str, getattr(workflow, "configfiles", []))) or "params.yaml"
try:
    for _f in getattr(workflow, "configfiles", []):  # a key given twice is lost once merged: check the files
        try:
            load_yaml(open(str(_f), encoding="utf-8").read())
        except Exception as _exc:
            raise InpaintBenchError(f"{_f}: {_exc}") from None
    PARAMS = Params(dict(config), _CONFIG_NAME)
except InpaintBenchError as exc:
    sys.exit(f"inpaintbench: {exc}")
validate(config, "../schemas/params.schema.yaml", set_default=False)

EXPERIMENTS = PARAMS.active_experiments(config.get("suite"))


PARAMS_FILE = share_merged_params(dict(config))
let_jobs_cache_bytecode()

# Cluster resources per step (runtime in minutes, memory in MB) from params.yaml's `slurm:` block.
# Only cluster runs use them (workflow/profiles/slurm); a local run ignores runtime, and mem_mb
# unless --resources mem_mb=N is given.
SLURM_DEFAULTS = {"train": {"runtime": 720, "mem_mb": 16000}, "teacher": {"runtime": 120, "mem_mb": 8000}}


def slurm_resource(step, key):
    return int(PARAMS.raw.get("slurm", {}).get(step, {}).get(key, SLURM_DEFAULTS[step][key]))


def _gpu_count():
    from inpaintbench.train.devices import visible_gpu_ids

    return len(visible_gpu_ids())  # the same count the training jobs claim slots from


# Local runs ignore `resources:` unless a limit is given, and a root Snakefile does not read
# workflow/profiles/default by itself. So, unless the user passed --resources gpu=N, limit GPU
# jobs to the number of visible GPUs. Without a GPU the jobs run on the CPU and only --cores
# limits them. The trainer also claims a GPU slot with a file lock (train/devices.py).
if "gpu" not in workflow.global_resources:
    _gpus = _gpu_count()
    workflow.global_resources["gpu"] = Resource("gpu", _gpus if _gpus > 0 else 10**6)


# Memory: a local run also ignores `mem_mb` unless --resources mem_mb=N is given, and two big
# training jobs side by side then get killed by the kernel (exit 137). So, unless the user passed
# --resources mem_mb=N, a local run may use the memory available now (less 1 GB for the rest of
# the machine); each training job claims its estimate (train/memory.py, capped at that limit so a
# job larger than the machine still runs, alone). Cluster runs keep params.yaml `slurm:` values.
# The executor is known only once the DAG is built (workflow.executor_plugin is None while this
# file is parsed), so the memory limit is set here for every run that is not a remote job, and
# train_mem_mb asks at job time whether the run is local.
def local_run():
    plugin = workflow.executor_plugin
    return not workflow.remote_exec and (plugin is None or plugin.common_settings.local_exec)


LOCAL_MEM_MB = None
AUTO_MEM_LIMIT = not workflow.remote_exec and "mem_mb" not in workflow.global_resources and available_mb() > 0
if AUTO_MEM_LIMIT:
    LOCAL_MEM_MB = max(1024, available_mb() - 1024)
    workflow.global_resources["mem_mb"] = Resource("mem_mb", LOCAL_MEM_MB)
elif "mem_mb" in workflow.global_resources:
    LOCAL_MEM_MB = workflow.global_resources["mem_mb"].value if hasattr(workflow.global_resources["mem_mb"], "value") else None


def train_mem_mb(wildcards):
    """A training job's memory claim: its estimate on a local run, params.yaml `slurm:` on a cluster."""
    if not local_run():
        if AUTO_MEM_LIMIT:  # set while parsing for a local run; a cluster has its own memory
            workflow.global_resources["mem_mb"] = Resource("mem_mb", 10**9)
        return slurm_resource("train", "mem_mb")
    from inpaintbench.train.memory import estimate_train_mem_mb

    est = estimate_train_mem_mb(PARAMS, wildcards.experiment, wildcards.model)
    return min(est, LOCAL_MEM_MB) if LOCAL_MEM_MB else est


wildcard_constraints:
    experiment="[^/]+",
    dataset="[^/]+",
    train="[^/]+",
    model="[^/]+",
    source="[^/]+",
    maskset="[^/]+?",
    size="[0-9]+",
    split="test|val",


def raw_marker(source):
    return str(paths.raw_dir(source) / ".complete")


def needs_download(source):
    return source not in ("builtin", "generated", "paris-streetview")


def fetch_spec(source):
    """What a fetch of `source` depends on: the categories its datasets use (with the seed when
    drawn by count) and any download override (downloads.urls.<source>)."""
    cats = [d.get("categories") for d in PARAMS.raw["datasets"].values() if d["source"] == source]
    by_count = any(isinstance(c, int) or (isinstance(c, list) and any(isinstance(x, int) for x in c)) for c in cats)
    urls = PARAMS.raw.get("downloads", {}).get("urls", {}).get(source)
    return PARAMS.section_hash(*(["seed"] if by_count else []), extra=[cats, urls] if (any(c is not None for c in cats) or urls) else None)


def dataset_inputs(wildcards):
    src = PARAMS.dataset(wildcards.dataset)["source"]
    return [raw_marker(src)] if needs_download(src) else []


def maskset_inputs(wildcards):
    src = PARAMS.maskset(wildcards.maskset)["source"]
    return [raw_marker(src)] if needs_download(src) else []


def experiment_datasets(experiment):
    exp = PARAMS.experiment(experiment)
    return list(dict.fromkeys(d for run in exp["runs"] for d in [run["train"], *run["eval"]]))


def train_targets(experiments):
    return [str(paths.checkpoint(j.experiment, j.train, j.model)) for j in PARAMS.train_jobs(experiments)]


def eval_targets(experiments):
    """Every (run, model) metrics file: the experiment's models on each run, plus a run's own
    released checkpoints (runs[i].released) on that run only, when their files are present
    (Params.run_models); released entries are evaluated, never trained."""
    out = []
    for e in experiments:
        exp = PARAMS.experiment(e)
        for run in exp["runs"]:
            out += [str(paths.metrics_csv(e, run["train"], m)) for m in PARAMS.run_models(e, run["train"])]
    return out


def pairs_targets(experiments):
    out = []
    for e in experiments:
        exp = PARAMS.experiment(e)
        learned = any(PARAMS.is_learned(m) for m in exp["models"])
        for run in exp["runs"]:
            if learned:
                out.append(str(paths.pairs_csv(e, run["train"], "val")))
            out += [str(paths.pairs_csv(e, d, "test")) for d in run["eval"]]
    return list(dict.fromkeys(out))


def artifact_targets(experiments):
    return list(dict.fromkeys(str(paths.artifact(j.experiment, j.train, r)) for j in PARAMS.train_jobs(experiments)
                              for r in PARAMS.requirements(j.model, j.experiment)))


def checked_targets(experiments):
    """What the reports are built from (checkpoints, pairs, per-image metrics, summaries), for
    the default target (Snakefile `all`). A deleted one is rebuilt because it is a target, and one that no longer matches
    the integrity record its step wrote (cut short, truncated, emptied; inpaintbench/integrity.py)
    is reported here and rebuilt through its rule's `integrity` param (damaged())."""
    from inpaintbench.integrity import stale

    files = [*artifact_targets(experiments), *train_targets(experiments), *pairs_targets(experiments),
             *eval_targets(experiments), *[str(paths.summary_csv(e)) for e in experiments]]
    if getattr(workflow, "is_main_process", True):  # not again inside each cluster job
        for f, problem in stale(files):
            print(f"inpaintbench: {f} {problem}; it will be rebuilt", file=sys.stderr)
    return files


def damaged(*files):
    """A `params:` entry of the rules that write checked files: "ok", or what is wrong with an
    existing output (cut short, emptied or replaced after its step wrote it; integrity.py).
    Snakemake reruns a job whose params changed (also in a dry run), so a damaged output is
    rebuilt. The paths come from the wildcards, not from `output` (Snakemake ignores params
    derived from output in its params trigger); changing a file's modification time would not
    do either (Snakemake 9 also compares the checksums of inputs it recorded)."""
    from inpaintbench.integrity import stale

    problems = stale([str(f) for f in files])
    return "ok" if not problems else "damaged: " + "; ".join(f"{f} {p}" for f, p in problems)


def train_inputs(w):
    spec = PARAMS.model(w.model)
    return {
        "images": str(paths.prepared_manifest(w.train)),
        "val": str(paths.pairs_csv(w.experiment, w.train, "val")),
        **{r: str(paths.artifact(w.experiment, w.train, r)) for r in PARAMS.requirements(w.model, w.experiment)},
        **train_mask_inputs(w),
    }


def train_mask_inputs(w):
    """The mask set a training job draws its masks from (training.masks), at the experiment's size."""
    source = PARAMS.training(w.model, w.experiment).get("masks", "generated")
    if source == "generated":
        return {}
    return {"train_masks": str(paths.maskset_manifest(source, PARAMS.experiment(w.experiment)["size"]))}


def eval_inputs(w):
    exp = PARAMS.experiment(w.experiment)
    run = next(r for r in exp["runs"] if r["train"] == w.train)
    inputs = {f"pairs_{d}": str(paths.pairs_csv(w.experiment, d, "test")) for d in run["eval"]}
    if PARAMS.is_learned(w.model):
        inputs["checkpoint"] = str(paths.checkpoint(w.experiment, w.train, w.model))
    return inputs


def report_inputs(w):
    exp = PARAMS.experiment(w.experiment)
    runs = []
    for run in exp["runs"]:
        for m in exp["models"]:
            if PARAMS.is_learned(m):
                runs += [str(paths.run_dir(w.experiment, run["train"], m) / f) for f in ("history.csv", "epochs.csv", "run.json")]
    return {"summary": str(paths.summary_csv(w.experiment)), "runs": runs,
            "paired": str(paths.summary_csv(w.experiment).parent / "paired.csv"),
            "efficiency": str(paths.RESULTS / w.experiment / "efficiency.csv")}


# Preflight (called by the Snakefile's onstart): before any job runs (not in a dry run), the pretrained weights that the training jobs
# about to run need must be on this machine (src/inpaintbench/preflight.py); otherwise stop now,
# naming each missing file, where to put it, and the offline substitute one may choose.
def preflight():
    from inpaintbench.config import TrainJob
    from inpaintbench.preflight import missing_weights

    jobs = [TrainJob(j.wildcards["experiment"], j.wildcards["train"], j.wildcards["model"])
            for j in workflow.dag.needrun_jobs() if j.rule.name == "train"]
    missing = missing_weights(PARAMS, jobs)
    if missing:
        raise SystemExit("inpaintbench: the settings ask for pretrained weights this machine does not have "
                         "(nothing was run):\n  - " + "\n  - ".join(missing))
