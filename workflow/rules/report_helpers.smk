# Functions used by report.smk (kept apart from the rules, as `snakemake --lint` asks).
import json

from reid import variants
from reid.config import result_keys


def _report_dataset(key):
    """report.table2_dataset / table3_dataset; the first configured dataset when unset; None when
    set to null (the table is not built). Resolved once in reid.typed_config.ReportConfig."""
    return getattr(CFG.report, key)


def _table1_datasets():
    """report.table1_datasets; every configured dataset when unset; [] when null (not built)."""
    return list(CFG.report.table1_datasets)


def _table_datasets(n):
    """The datasets Table n is built from; [] when the configuration skips it."""
    if n == 1:
        return _table1_datasets()
    return [d for d in [_report_dataset(f"table{n}_dataset")] if d is not None]


def _table_key(n):
    return "table1_datasets" if n == 1 else f"table{n}_dataset"


def _table_metrics(n, models=None):
    """The metrics files Table n is built from (asked for when the DAG is built). A table whose dataset
    is set to null is refused by name rather than built from another dataset's runs."""
    if not _table_datasets(n):
        raise ValueError(f"results/tables/table{n}.md is not built: report.{_table_key(n)} is null "
                         f"in the configuration (set it to a configured dataset to build it)")
    return _run_files("metrics.json", _table_datasets(n), models)


def _table_comparisons(n):
    """The comparisons.json of each dataset of Table n (its interval cells and paired section)."""
    return expand("results/{dataset}/comparisons.json", dataset=_table_datasets(n))


def _run_files(name, datasets, models=None):
    return expand("results/{dataset}/{model}/seed{seed}/{name}", dataset=datasets,
                  model=models or config["models"], seed=config["seeds"], name=name)


def _dataset_specs(datasets):
    # only the sections the table uses, result keys only: another dataset's edits (or a new
    # download URL) must not rerun it
    return json.dumps({d: result_keys(config["dataset"][d], f"dataset.{d}") for d in datasets}, sort_keys=True)


def _bootstrap_params():
    """config evaluate.bootstrap as compact JSON (the schema fills its defaults)."""
    return json.dumps(config["evaluate"]["bootstrap"], sort_keys=True, separators=(",", ":"))


def _custom_labels():
    """The labels of the configured custom models (config custom_models), as a param of the report
    rules: their jobs read labels from the registry (REID_PLUGINS), so a changed label reruns them through this."""
    custom = config.get("custom_models") or {}
    return json.dumps({m: custom[m].get("label", m) for m in config["models"] if m in custom}, sort_keys=True)


def _pair(models):
    """The models a figure compares: those of ``models`` (the paper's baseline and proposed model) that
    are configured."""
    return [m for m in models if m in config["models"]]


def _figure_runs(name):
    """One file per compared model (FIGURE_MODELS), for the first seed: the same runs in every figure."""
    return expand("results/{{dataset}}/{model}/seed{seed}/{name}", model=FIGURE_MODELS, seed=FIGURE_SEED, name=name)


def _report_files_of(dataset):
    """The tables that use this dataset, and its figures."""
    tables = [f"results/tables/table{n}.{ext}" for n in (1, 2, 3) for ext in ("md", "html")
              if dataset in _table_datasets(n)]
    figures = [f"results/figures/{kind}_{dataset}.png" for kind in FIGURE_KINDS] if dataset in config["datasets"] else []
    comparisons = [f"results/{dataset}/comparisons.json"] if tables else []
    return tables + comparisons + figures


# ---------------------------------------------------------------- shared with report.smk, readings.smk and
# the Snakefile (defined here, in a helper file, so that the rule files can be included in any order)

# report() captions; paths in a rule file are relative to it (all rule files are in workflow/rules/)
CAPTIONS = "../../reid/report/captions"
# A table whose report key is null is skipped (not in REPORT_TARGETS; asked for by name, it is refused).
REPORT_DATASETS = sorted({*config["datasets"], *_table_datasets(1), *_table_datasets(2), *_table_datasets(3)})
REPORT_TABLES = [n for n in (1, 2, 3) if _table_datasets(n)]
FIGURE_KINDS = ("losses", "cmc", "ranked", "attention")

# The benchmark file of every train, extract and evaluate job of the configured runs (train.smk,
# evaluate.smk): results/tables/benchmarks.md gathers them.
BENCHMARK_FILES = expand("results/benchmarks/{stage}/{dataset}/{model}-seed{seed}.tsv",
                         stage=("train", "extract", "evaluate"), dataset=config["datasets"],
                         model=config["models"], seed=config["seeds"])

# What the default target asks for: every table, every figure, the job costs, and (with mlflow.enabled)
# their upload to MLflow.
REPORT_TARGETS = (
    [f"results/tables/table{n}.{ext}" for n in REPORT_TABLES for ext in ("md", "html")]
    + ["results/tables/benchmarks.md", "results/tables/benchmarks.html"]
    + [f"results/figures/{kind}_{d}.png" for kind in FIGURE_KINDS for d in config["datasets"]]
    + ([f"results/report/mlflow_{d}.json" for d in REPORT_DATASETS] if config["mlflow"]["enabled"] else [])
)
