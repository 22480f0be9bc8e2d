# Report: tables (md/tex/csv), figures (png) per experiment, and reports/index.html over all.


def report_inputs(w):
    exp = PARAMS.experiment(w.experiment)
    runs = []
    for run in exp["runs"]:
        for m in exp["models"]:
            if PARAMS.is_learned(m):
                runs += [str(paths.run_dir(w.experiment, run["train"], m) / f) for f in ("history.csv", "epochs.csv", "run.json")]
    return {"summary": str(paths.summary_csv(w.experiment)), "runs": runs}


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
    shell:
        "inpaintbench index {params.experiments} > {log} 2>&1"
