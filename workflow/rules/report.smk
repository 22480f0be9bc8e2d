# Report: tables (md/tex/csv), figures (png) per experiment, and reports/index.html over all.
# The outputs wrapped in report() also make up `snakemake --report report.html`.


rule report:
    input:
        unpack(report_inputs),
    output:
        json="reports/experiments/{experiment}/report.json",
        md="reports/experiments/{experiment}/table.md",
        tex="reports/experiments/{experiment}/table.tex",
        csv=report(
            "reports/experiments/{experiment}/table.csv",
            caption="../report/table.rst",
            category="{experiment}",
            subcategory="tables",
            labels={"experiment": "{experiment}", "table": "comparison (tidy)"},
        ),
        figures=report(
            directory("reports/experiments/{experiment}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="{experiment}",
            subcategory="figures",
            labels={"experiment": "{experiment}", "figure": "{name}"},
        ),
        paper_tables=report(
            directory("reports/experiments/{experiment}/paper_tables"),
            patterns=["{name}.csv"],
            caption="../report/paper_tables.rst",
            category="{experiment}",
            subcategory="papers' tables",
            labels={"experiment": "{experiment}", "table": "{name}"},
        ),
    params:
        spec=lambda w: PARAMS.section_hash("perceptual", "teacher", "fid", "lpips", "evaluation", extra=[PARAMS.experiment(w.experiment), {m: PARAMS.model(m).get("label") for r in PARAMS.experiment(w.experiment)["runs"] for m in PARAMS.run_models(w.experiment, r["train"])}]),
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
        html="reports/index.html",
        metrics="reports/metrics.json",
        plots=directory("reports/plots"),
        plots_template="reports/dvc_plots_offline.html",
    params:
        experiments=EXPERIMENTS,
    log:
        "logs/report/index.log",
    conda:
        "../envs/inpaintbench.yaml"
    shell:
        "inpaintbench index {params.experiments} > {log} 2>&1"
