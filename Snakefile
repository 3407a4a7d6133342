# The whole chain: dataset -> train -> extract -> evaluate -> tables and figures.
# Rules live in workflow/rules/; every rule is a thin shell call of `python -m reid <verb>`.
import json
import os
import sys
import uuid

from snakemake.utils import min_version, validate

min_version("9.0")

configfile: os.path.join(workflow.basedir, "config.yaml")

validate(config, schema="workflow/schemas/config.schema.yaml")

sys.path.insert(0, workflow.basedir)
from reid.config import check_references  # noqa: E402

check_references(config, "config")

# Groups every MLflow run of one workflow invocation (jobs inherit it; on SLURM through sbatch).
os.environ.setdefault("REID_INVOCATION_ID", uuid.uuid4().hex)

DATASETS = config["datasets"]
MODELS = config["models"]
SEEDS = config["seeds"]
RUN_DIR = "results/{dataset}/{model}/seed{seed}"


# One CPU-bound training job per model runs at once on a laptop: split the machine between them.
# A cluster profile overrides this with set-threads.
JOB_THREADS = max(1, min(8, (os.cpu_count() or 1) // max(1, len(MODELS) * len(SEEDS))))

# Cheap or network-bound rules run on the submit host under a cluster profile (compute nodes
# often have no internet; tables and figures take seconds).
localrules:
    all,
    fetch_dataset,
    fetch_weights,
    comparisons,
    table1,
    table2,
    table3,
    figure_losses,
    figure_cmc,
    figure_ranked,
    figure_attention,
    report_mlflow,
    table_readings,


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    model=r"ide|baseline|self_attention|mutual",
    seed=r"\d+",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report_helpers.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/readings.smk"


rule all:
    """Everything: the paper's tables, the figures, and their upload to MLflow."""
    default_target: True
    input:
        REPORT_TARGETS,


onstart:
    shell(
        f"{sys.executable} -m reid init-tracking --prefix {config['mlflow']['experiment_prefix']} "
        f"--datasets {' '.join(DATASETS)}"
        + (f" --uri {config['mlflow']['tracking_uri']}" if config["mlflow"]["tracking_uri"] else "")
    )
