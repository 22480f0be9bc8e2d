# Training: one job per (experiment, training dataset, learned model). GPU jobs are limited by
# the `gpu` resource (see common.smk) and each claims its own GPU slot (train/devices.py).


def train_inputs(w):
    spec = PARAMS.model(w.model)
    return {
        "images": str(paths.prepared_manifest(w.train)),
        "val": str(paths.pairs_csv(w.experiment, w.train, "val")),
        **{r: str(paths.artifact(w.experiment, w.train, r)) for r in spec.get("requires", [])},
    }


rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint="runs/{experiment}/{train}/{model}/model.pt",
        history="runs/{experiment}/{train}/{model}/history.csv",
        epochs="runs/{experiment}/{train}/{model}/epochs.csv",
        info="runs/{experiment}/{train}/{model}/run.json",
    params:
        spec=lambda w: PARAMS.section_hash("seed", "device", "perceptual", extra=[PARAMS.model(w.model), PARAMS.training(w.model), PARAMS.experiment(w.experiment)["size"]]),
    log:
        "logs/train/{experiment}/{train}/{model}.log",
    threads: 1
    resources:
        gpu=1,
    shell:
        "inpaintbench train {wildcards.experiment} {wildcards.train} {wildcards.model} > {log} 2>&1"


rule train_all:
    input:
        train_targets(EXPERIMENTS),
