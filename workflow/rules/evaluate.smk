# Evaluation: each model on every evaluation dataset of its run, on the fixed pairs.


def eval_inputs(w):
    exp = PARAMS.experiment(w.experiment)
    run = next(r for r in exp["runs"] if r["train"] == w.train)
    inputs = {f"pairs_{d}": str(paths.pairs_csv(w.experiment, d, "test")) for d in run["eval"]}
    if PARAMS.is_learned(w.model):
        inputs["checkpoint"] = str(paths.checkpoint(w.experiment, w.train, w.model))
    return inputs


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        metrics="results/{experiment}/{train}/{model}/metrics.csv",
        samples=directory("results/{experiment}/{train}/{model}/samples"),
    params:
        spec=lambda w: PARAMS.section_hash(extra=[PARAMS.model(w.model), PARAMS.experiment(w.experiment).get("samples_per_bucket")]),
    log:
        "logs/evaluate/{experiment}/{train}/{model}.log",
    threads: 1
    shell:
        "inpaintbench evaluate {wildcards.experiment} {wildcards.train} {wildcards.model} > {log} 2>&1"


rule aggregate:
    input:
        lambda w: eval_targets([w.experiment]),
    output:
        "results/{experiment}/summary.csv",
    params:
        spec=lambda w: PARAMS.section_hash(extra=PARAMS.experiment(w.experiment)["buckets"]),
    log:
        "logs/aggregate/{experiment}.log",
    shell:
        "inpaintbench aggregate {wildcards.experiment} > {log} 2>&1"


rule evaluate_all:
    input:
        expand("results/{experiment}/summary.csv", experiment=EXPERIMENTS),
