# The paper's outputs: Tables 1-3 (markdown + HTML), Figures 4-6 and CMC curves (PNG), and their
# upload to MLflow. Every rule is a thin call of `python -m reid <verb>`; the logic is in reid/report/.
# Tables read metrics.json files only. The dataset behind each table is config `report:`; the
# dataset's `dataset.<name>` section travels as JSON so the caption can say what the data really is.
# What other files use (CAPTIONS, REPORT_TARGETS, ...) is in report_helpers.smk.

# The figures compare the paper's baseline with its proposed model (reid.variants names them) when
# both are configured, else the first two configured models; Table 1 is the proposed model's.
FIGURE_MODELS = _pair([variants.PAPER_BASELINE, variants.PAPER_PROPOSED]) or config["models"][:2]
FIGURE_SEED = config["seeds"][0]


rule comparisons:
    """Intervals over seeds and query identities, and the paired difference of every pair of models."""
    localrule: True
    input:
        metrics=lambda w: _run_files("metrics.json", [w.dataset]),
        per_query=lambda w: _run_files("per_query.csv", [w.dataset]),
    output:
        "results/{dataset}/comparisons.json",
    log:
        "results/logs/report/comparisons_{dataset}.log",
    conda:
        "../../envs/reid.yaml"
    params:
        bootstrap=_bootstrap_params(),
    shell:
        "python -m reid compare --dataset {wildcards.dataset} --metrics {input.metrics} "
        "--per-query {input.per_query} --bootstrap {params.bootstrap:q} --out {output} > {log} 2>&1"


rule table1:
    localrule: True
    input:
        metrics=lambda wc: _table_metrics(1, [variants.PAPER_PROPOSED]),
        comparisons=lambda wc: _table_comparisons(1),
    output:
        md="results/tables/table1.md",
        html=report("results/tables/table1.html", caption=f"{CAPTIONS}/table.rst", category="Tables",
                    labels={"table": "1"}),
    log:
        "results/logs/report/table1.log",
    conda:
        "../../envs/reid.yaml"
    params:
        datasets=_table1_datasets(),
        specs=_dataset_specs(_table_datasets(1)),
    shell:
        "python -m reid table1 --metrics {input.metrics} --comparisons {input.comparisons} --datasets {params.datasets} "
        "--dataset-specs {params.specs:q} --out {output.md} --html-out {output.html} > {log} 2>&1"


rule table2:
    localrule: True
    input:
        metrics=lambda wc: _table_metrics(2),
        comparisons=lambda wc: _table_comparisons(2),
    output:
        md="results/tables/table2.md",
        html=report("results/tables/table2.html", caption=f"{CAPTIONS}/table.rst", category="Tables",
                    labels={"table": "2"}),
    log:
        "results/logs/report/table2.log",
    conda:
        "../../envs/reid.yaml"
    params:
        dataset=_report_dataset("table2_dataset"),
        specs=_dataset_specs(_table_datasets(2)),
        labels=_custom_labels(),  # not on the command line: a new label reruns the table
        backbone=lookup(dpath="model/backbone", within=config),
        recipe_notes=recipe_notes_option(),  # "" unless a model has its own recipe settings (bot)
    shell:
        "python -m reid table2 --metrics {input.metrics} --comparisons {input.comparisons} "
        "--dataset {params.dataset} "
        "--dataset-specs {params.specs:q} --backbone {params.backbone}{params.recipe_notes} "
        "--out {output.md} --html-out {output.html} > {log} 2>&1"


rule table3:
    localrule: True
    input:
        metrics=lambda wc: _table_metrics(3),
        comparisons=lambda wc: _table_comparisons(3),
    output:
        md="results/tables/table3.md",
        html=report("results/tables/table3.html", caption=f"{CAPTIONS}/table.rst", category="Tables",
                    labels={"table": "3"}),
    log:
        "results/logs/report/table3.log",
    conda:
        "../../envs/reid.yaml"
    params:
        dataset=_report_dataset("table3_dataset"),
        specs=_dataset_specs(_table_datasets(3)),
        labels=_custom_labels(),  # not on the command line: a new label reruns the table
        backbone=lookup(dpath="model/backbone", within=config),
        recipe_notes=recipe_notes_option(),  # "" unless a model has its own recipe settings (bot)
    shell:
        "python -m reid table3 --metrics {input.metrics} --comparisons {input.comparisons} "
        "--dataset {params.dataset} "
        "--dataset-specs {params.specs:q} --backbone {params.backbone}{params.recipe_notes} "
        "--out {output.md} --html-out {output.html} > {log} 2>&1"


# ---------------------------------------------------------------- figures (one set per dataset)


rule figure_losses:
    localrule: True
    input:
        _figure_runs("history.csv"),
    output:
        report("results/figures/losses_{dataset}.png", caption=f"{CAPTIONS}/losses.rst",
               category="Figures", subcategory="{dataset}",
               labels={"figure": "losses (paper Fig. 6)", "dataset": "{dataset}"}),
    log:
        "results/logs/report/losses_{dataset}.log",
    conda:
        "../../envs/reid.yaml"
    params:
        models=FIGURE_MODELS,  # labels and colours come from the variant registry (reid.variants)
        labels=_custom_labels(),
        title=f"Training losses per epoch ({{dataset}}, seed {FIGURE_SEED})",
    shell:
        "python -m reid figure-losses --history {input} --models {params.models} "
        "--title {params.title:q} --out {output} > {log} 2>&1"


rule figure_cmc:
    localrule: True
    input:
        _run_files("metrics.json", ["{dataset}"]),
    output:
        report("results/figures/cmc_{dataset}.png", caption=f"{CAPTIONS}/cmc.rst",
               category="Figures", subcategory="{dataset}",
               labels={"figure": "CMC curves", "dataset": "{dataset}"}),
    log:
        "results/logs/report/cmc_{dataset}.log",
    conda:
        "../../envs/reid.yaml"
    params:
        max_rank=lookup(dpath="evaluate/max_rank", within=config),
        labels=_custom_labels(),  # not on the command line: a new label reruns the table
    shell:
        "python -m reid figure-cmc --metrics {input} --max-rank {params.max_rank} --out {output} > {log} 2>&1"


rule figure_ranked:
    localrule: True
    input:
        features=_figure_runs("features.pt"),
        data=DATASET,
    output:
        report("results/figures/ranked_{dataset}.png", caption=f"{CAPTIONS}/ranked.rst",
               category="Figures", subcategory="{dataset}",
               labels={"figure": "ranked lists (paper Fig. 5)", "dataset": "{dataset}"}),
    log:
        "results/logs/report/ranked_{dataset}.log",
    conda:
        "../../envs/reid.yaml"
    params:
        models=FIGURE_MODELS,  # labels and colours come from the variant registry (reid.variants)
        labels=_custom_labels(),
        title=f"Top-10 gallery images per query ({{dataset}}, seed {FIGURE_SEED})",
    shell:
        "python -m reid figure-ranked --features {input.features} --models {params.models} --root . "
        "--queries 4 --top-k 10 --title {params.title:q} --out {output} > {log} 2>&1"


rule figure_attention:
    localrule: True
    input:
        models=_figure_runs("model.pt"),
        features=_figure_runs("features.pt")[0],
        mean_image="results/{dataset}/mean_image.pt",
        data=DATASET,
    output:
        report("results/figures/attention_{dataset}.png", caption=f"{CAPTIONS}/attention.rst",
               category="Figures", subcategory="{dataset}",
               labels={"figure": "activation maps (paper Fig. 4)", "dataset": "{dataset}"}),
    log:
        "results/logs/report/attention_{dataset}.log",
    conda:
        "../../envs/reid.yaml"
    params:
        models=FIGURE_MODELS,  # labels and colours come from the variant registry (reid.variants)
        labels=_custom_labels(),
        title=f"Activation maps ({{dataset}}, seed {FIGURE_SEED}); red = strongest",
    shell:
        "python -m reid figure-attention --model {input.models} --models {params.models} "
        "--features {input.features} --mean-image {input.mean_image} --root . --images 6 "
        "--title {params.title:q} --out {output} > {log} 2>&1"


# ---------------------------------------------------------------- job costs


rule table_benchmarks:
    """Wall time and peak memory of every train, extract and evaluate job of the configured runs, from
    their benchmark files (train.smk, evaluate.smk), as a table of the Snakemake report. Its inputs are
    the runs' metrics.json, not the benchmark files: a benchmark file is a product of its job, and
    asking for a missing one would rerun a finished training (runs made before benchmarks existed)."""
    localrule: True
    input:
        _run_files("metrics.json", config["datasets"]),
    output:
        md="results/tables/benchmarks.md",
        html=report("results/tables/benchmarks.html", caption=f"{CAPTIONS}/benchmarks.rst", category="Tables",
                    labels={"table": "job costs"}),
    log:
        "results/logs/report/benchmarks.log",
    conda:
        "../../envs/reid.yaml"
    params:
        benchmarks=BENCHMARK_FILES,
    shell:
        "python -m reid table-benchmarks --benchmarks {params.benchmarks} --root results/benchmarks "
        "--out {output.md} --html-out {output.html} > {log} 2>&1"


# ---------------------------------------------------------------- MLflow artifacts

rule report_mlflow:
    """Attach the tables and figures of one dataset to each of its MLflow runs (artifact folder report/)."""
    localrule: True
    input:
        files=lambda w: _report_files_of(w.dataset),
        run_info=lambda w: _run_files("run.json", [w.dataset]),
    output:
        "results/report/mlflow_{dataset}.json",
    log:
        "results/logs/report/mlflow_{dataset}.log",
    conda:
        "../../envs/reid.yaml"
    shell:
        "python -m reid report-mlflow --run-info {input.run_info} --files {input.files} "
        "--done {output} > {log} 2>&1"
