# The whole chain: dataset -> train -> extract -> evaluate -> tables and figures.
# Rules live in workflow/rules/; every rule is a thin shell call of `python -m reid <verb>`.
import json
import os
import sys

from snakemake.utils import min_version, update_config

min_version("9.0")

configfile: os.path.join(workflow.basedir, "config.yaml")

sys.path.insert(0, workflow.basedir)
from reid import plugins, tracking, variants  # noqa: E402
from reid.config import ConfigError, typed_overrides  # noqa: E402
from reid.config_checks import validate as validate_config  # noqa: E402

# `--config key=value` values reach here as Snakemake parses them (in lists and mappings every item
# is a string: seeds=[0,1] gives ['0', '1']); read them as YAML, as the config file is, first.
update_config(config, typed_overrides(workflow.config_settings.config))
# Validated once per parse (reid.config_checks.validate): the schema (a float is no integer), its defaults
# filled in place, then the cross-key rules, which import config `plugins:` and register
# `custom_models:` first (reid.plugins). A fault is one message naming the key, no traceback.
try:
    validate_config(config, "config")
except ConfigError as e:
    sys.exit(f"error: {e}")

# Every job sees what this Snakemake sees, through the environment it inherits (on SLURM through
# sbatch, and the job re-reads this file on its node): this interpreter first on PATH (a rule's
# conda environment, under --sdm conda, is put before it when the job starts), the MLflow store and
# experiment prefix, and one id per workflow invocation. See reid.tracking.job_environment.
os.environ.update(tracking.job_environment(config["mlflow"], sys.executable, os.environ))
# ... and the same plug-ins and custom models as this Snakemake (REID_PLUGINS, read by reid.cli.main)
os.environ.update(plugins.environment(config))

DATASETS = config["datasets"]
MODELS = config["models"]
SEEDS = config["seeds"]
RUN_DIR = "results/{dataset}/{model}/seed{seed}"


# One CPU-bound training job per model runs at once on a laptop: split the machine between them.
# A cluster profile overrides this with set-threads.
JOB_THREADS = max(1, min(8, (os.cpu_count() or 1) // max(1, len(MODELS) * len(SEEDS))))


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    model=variants.wildcard_pattern(),  # every registered variant: built-in, plug-in, custom_models
    seed=r"\d+",


# helper files first (globals and functions), then the rule files (rules only; any order)
include: "workflow/rules/common.smk"
include: "workflow/rules/report_helpers.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/readings.smk"
include: "workflow/rules/cross_domain.smk"


# Helper files (common.smk, report_helpers.smk) define what several files use; rule files define
# rules only. Cheap or network-bound rules (downloads, tables, figures, the MLflow upload) say
# `localrule: True` themselves: under a cluster profile they run on the submit host (compute nodes
# often have no internet).
rule all:
    """Everything: the paper's tables, the figures, and their upload to MLflow (when mlflow.enabled)."""
    default_target: True
    localrule: True
    input:
        REPORT_TARGETS,


# The MLflow store and experiments are created once, here, before any job: several jobs that open a
# SQLite store which does not exist yet race on its schema migration and can leave it unusable
# (docs/architecture.md, "Tracking"). `onstart:` runs in the main process only, and not on -n. With
# mlflow.enabled false nothing is tracked and no store is created.
onstart:
    if config["mlflow"]["enabled"]:
        shell(
            f"{sys.executable} -m reid init-tracking --prefix {config['mlflow']['experiment_prefix']} "
            f"--datasets {' '.join(dict.fromkeys([*DATASETS, *CROSS_TRAIN]))} --uri {tracking.tracking_uri()}"
        )
