# Functions used by report.smk (kept apart from the rules, as `snakemake --lint` asks).


def _report_dataset(key):
    """report.table2_dataset / table3_dataset; the first configured dataset when unset."""
    return config.get("report", {}).get(key) or config["datasets"][0]


def _table1_datasets():
    return config.get("report", {}).get("table1_datasets") or config["datasets"]


def _run_files(name, datasets, models=None):
    return expand("results/{dataset}/{model}/seed{seed}/{name}", dataset=datasets,
                  model=models or config["models"], seed=config["seeds"], name=name)


def _dataset_specs(datasets):
    # only the sections the table uses: another dataset's edits must not rerun it
    return json.dumps({d: config["dataset"][d] for d in datasets}, sort_keys=True)


def _pair(models):
    """The models a baseline-vs-mutual figure compares: those of baseline and mutual that are configured."""
    return [m for m in models if m in config["models"]]


def _figure_runs(name):
    """One file per compared model (baseline and mutual), for the first seed: the same runs in every figure."""
    return expand("results/{{dataset}}/{model}/seed{seed}/{name}", model=FIGURE_MODELS, seed=FIGURE_SEED, name=name)


def _report_files_of(dataset):
    """The tables that use this dataset, and its figures."""
    tables = [f"results/tables/table1.{ext}" for ext in ("md", "html") if dataset in _table1_datasets()]
    for n, key in ((2, "table2_dataset"), (3, "table3_dataset")):
        if _report_dataset(key) == dataset:
            tables += [f"results/tables/table{n}.md", f"results/tables/table{n}.html"]
    figures = [f"results/figures/{kind}_{dataset}.png" for kind in FIGURE_KINDS] if dataset in config["datasets"] else []
    return tables + figures
