# Masks: generate (or import) a mask set at a size, then fix image↔mask pairs per bucket.


rule masks:
    input:
        maskset_inputs,
    output:
        "data/masks/{maskset}-{size}/manifest.csv",
    params:
        spec=lambda w: PARAMS.section_hash("seed", extra=PARAMS.maskset(w.maskset)),
        integrity=lambda w: damaged(paths.maskset_manifest(w.maskset, int(w.size))),  # a damaged output reruns its job (common.smk)
    log:
        "logs/masks/{maskset}-{size}.log",
    conda:
        "../envs/inpaintbench.yaml"
    shell:
        "inpaintbench masks {wildcards.maskset} --size {wildcards.size} > {log} 2>&1"


rule pairs:
    input:
        images=lambda w: str(paths.prepared_manifest(w.dataset)),
        masks=lambda w: str(paths.maskset_manifest(PARAMS.experiment(w.experiment)["masks"], PARAMS.experiment(w.experiment)["size"])),
    output:
        "data/pairs/{experiment}/{dataset}/{split}.csv",
    params:
        spec=lambda w: PARAMS.section_hash("seed", extra={k: PARAMS.experiment(w.experiment).get(k) for k in ("buckets", "pairs_per_bucket", "masks", "size")} | {"val_pairs": PARAMS.experiment_training(w.experiment).get("val_pairs")}),
        integrity=lambda w: damaged(paths.pairs_csv(w.experiment, w.dataset, w.split)),  # a damaged output reruns its job (common.smk)
    log:
        "logs/pairs/{experiment}/{dataset}-{split}.log",
    conda:
        "../envs/inpaintbench.yaml"
    shell:
        "inpaintbench pairs {wildcards.experiment} {wildcards.dataset} --split {wildcards.split} > {log} 2>&1"
