# Training: one job per (experiment, training dataset, learned model). GPU jobs are limited by
# the `gpu` resource (see common.smk) and each claims its own GPU slot (train/devices.py).



rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint="runs/{experiment}/{train}/{model}/model.pt",
        history="runs/{experiment}/{train}/{model}/history.csv",
        epochs="runs/{experiment}/{train}/{model}/epochs.csv",
        info="runs/{experiment}/{train}/{model}/run.json",
    params:
        spec=lambda w: PARAMS.section_hash("seed", "device", extra=[PARAMS.model_training_spec(w.model), PARAMS.training(w.model, w.experiment), PARAMS.experiment(w.experiment)["size"], PARAMS.teacher(w.experiment), PARAMS.perceptual(w.experiment)]),
        integrity=lambda w: damaged(paths.checkpoint(w.experiment, w.train, w.model)),  # a damaged output reruns its job (common.smk)
    log:
        "logs/train/{experiment}/{train}/{model}.log",
    conda:
        "../envs/inpaintbench.yaml"
    threads: lambda w: int(PARAMS.training(w.model, w.experiment).get("threads", 1))
    resources:
        gpu=1,
        runtime=slurm_resource("train", "runtime"),
        mem_mb=train_mem_mb,
    shell:
        "INPAINTBENCH_THREADS={threads} inpaintbench train {wildcards.experiment} {wildcards.train} {wildcards.model} > {log} 2>&1"


rule train_all:
    input:
        train_targets(EXPERIMENTS),


rule teacher:
    input:
        images=lambda w: str(paths.prepared_manifest(w.train)),
    output:
        "runs/{experiment}/{train}/_teacher/teacher.pt",
    params:
        spec=lambda w: PARAMS.section_hash("seed", "device", extra=PARAMS.teacher(w.experiment)),
    log:
        "logs/teacher/{experiment}/{train}.log",
    conda:
        "../envs/inpaintbench.yaml"
    threads: 1
    resources:
        gpu=1,
        runtime=slurm_resource("teacher", "runtime"),
        mem_mb=slurm_resource("teacher", "mem_mb"),
    shell:
        "inpaintbench teacher {wildcards.experiment} {wildcards.train} > {log} 2>&1"
