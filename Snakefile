# inpaintbench: params.yaml says what to run; Snakemake decides what must run and runs it.
# Main job:  uv run snakemake --cores all          (built-in offline suite)
# Papers:    uv run snakemake --cores all --config suite=papers
configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


onstart:
    preflight()  # common.smk: stop before any job when needed pretrained weights are missing


rule all:
    input:
        "reports/index.html",
        expand("reports/experiments/{experiment}/report.json", experiment=EXPERIMENTS),
        # every checkpoint, pair file and metrics file the reports show: deleted or damaged ones
        # are rebuilt (common.smk checked_targets), never reported from stale copies
        checked_targets(EXPERIMENTS),
    default_target: True
