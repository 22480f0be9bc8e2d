# Evaluation: each model on every evaluation dataset of its run, on the fixed pairs.



rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        metrics="results/{experiment}/{train}/{model}/metrics.csv",
        samples=directory("results/{experiment}/{train}/{model}/samples"),
    params:
        spec=lambda w: PARAMS.section_hash("fid", "lpips", "evaluation", extra=[PARAMS.model(w.model), PARAMS.experiment(w.experiment).get("samples_per_bucket")]),
        integrity=lambda w: damaged(paths.metrics_csv(w.experiment, w.train, w.model)),  # a damaged output reruns its job (common.smk)
    log:
        "logs/evaluate/{experiment}/{train}/{model}.log",
    conda:
        "../envs/inpaintbench.yaml"
    threads: 1
    shell:
        # --no-mlflow: the aggregate job adds every model's test metrics to its MLflow run at once
        "inpaintbench evaluate {wildcards.experiment} {wildcards.train} {wildcards.model} --no-mlflow > {log} 2>&1"


rule aggregate:
    input:
        lambda w: eval_targets([w.experiment]),
    output:
        "results/{experiment}/summary.csv",
        "results/{experiment}/paired.csv",
    params:
        spec=lambda w: PARAMS.section_hash("evaluation", extra=PARAMS.experiment(w.experiment)["buckets"]),
        integrity=lambda w: damaged(paths.summary_csv(w.experiment)),  # a damaged output reruns its job (common.smk)
    log:
        "logs/aggregate/{experiment}.log",
    conda:
        "../envs/inpaintbench.yaml"
    shell:
        "inpaintbench aggregate {wildcards.experiment} > {log} 2>&1"


rule evaluate_all:
    input:
        expand("results/{experiment}/summary.csv", experiment=EXPERIMENTS),
        expand("results/{experiment}/efficiency.csv", experiment=EXPERIMENTS),


rule efficiency:
    input:
        # nothing a model needs for timing: a trained teacher is stood in for by a frozen one of its
        # shape with random weights (report/efficiency.py), so a teacher failure cannot block it;
        # only ordering: never ahead of the data steps, it would hold a core while fetch/prepare wait
        lambda w: [str(paths.pairs_csv(w.experiment, d, "test")) for d in experiment_datasets(w.experiment)],
    output:
        "results/{experiment}/efficiency.csv",
    params:
        spec=lambda w: PARAMS.section_hash("device", "efficiency", extra=[{m: PARAMS.model(m) for m in PARAMS.experiment(w.experiment)["models"]}, PARAMS.teacher(w.experiment)]),
    log:
        "logs/efficiency/{experiment}.log",
    conda:
        "../envs/inpaintbench.yaml"
    threads: 1
    resources:
        gpu=1,
    shell:
        "inpaintbench efficiency {wildcards.experiment} --threads {threads} > {log} 2>&1"
