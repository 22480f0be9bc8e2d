# Report: tables (md/tex/csv), figures (png) per experiment, and reports/index.html over all.



rule report:
    input:
        unpack(report_inputs),
    output:
        json="reports/experiments/{experiment}/report.json",
        md="reports/experiments/{experiment}/table.md",
        tex="reports/experiments/{experiment}/table.tex",
        csv="reports/experiments/{experiment}/table.csv",
    params:
        spec=lambda w: PARAMS.section_hash("perceptual", extra=[PARAMS.experiment(w.experiment), {m: PARAMS.model(m).get("label") for m in PARAMS.experiment(w.experiment)["models"]}]),
    log:
        "logs/report/{experiment}.log",
    conda:
        "../envs/inpaintbench.yaml"
    shell:
        "inpaintbench report {wildcards.experiment} > {log} 2>&1"


rule index:
    input:
        expand("reports/experiments/{experiment}/report.json", experiment=EXPERIMENTS),
    output:
        "reports/index.html",
    params:
        experiments=EXPERIMENTS,
    log:
        "logs/report/index.log",
    conda:
        "../envs/inpaintbench.yaml"
    shell:
        "inpaintbench index {params.experiments} > {log} 2>&1"
