# Data: download + verify + extract (fetch), then resize/crop/split into a manifest (prepare).


rule fetch:
    output:
        "data/raw/{source}/.complete",
    params:
        spec=lambda w: fetch_spec(w.source),
    log:
        "logs/fetch/{source}.log",
    conda:
        "../envs/inpaintbench.yaml"
    shell:
        "inpaintbench fetch {wildcards.source} > {log} 2>&1"


rule prepare:
    input:
        dataset_inputs,
    output:
        manifest="data/prepared/{dataset}/manifest.csv",
        labels="data/prepared/{dataset}/labels.txt",
    params:
        spec=lambda w: PARAMS.section_hash("seed", extra=PARAMS.dataset(w.dataset)),
        integrity=lambda w: damaged(paths.prepared_manifest(w.dataset)),  # a damaged output reruns its job (common.smk)
    log:
        "logs/prepare/{dataset}.log",
    conda:
        "../envs/inpaintbench.yaml"
    threads: 2
    shell:
        "inpaintbench prepare {wildcards.dataset} --workers {threads} > {log} 2>&1"


rule data_all:
    input:
        lambda w: [str(paths.prepared_manifest(d)) for e in EXPERIMENTS for d in experiment_datasets(e)],
        lambda w: [str(paths.pairs_csv(e, d, "test")) for e in EXPERIMENTS for d in experiment_datasets(e)],
        lambda w: [str(paths.pairs_csv(j.experiment, j.train, "val")) for j in PARAMS.train_jobs(EXPERIMENTS)],
