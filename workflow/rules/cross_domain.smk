# Cross-domain evaluation (config `cross_domain: [{train: A, test: B}, ...]`): the models trained on A
# (rule train, results/A/{model}/seed{seed}/) embed B's query, gallery and gt_bbox images, normalised
# with A's training mean image, through the same `reid extract` and `reid evaluate` as in-domain runs;
# `--test-dataset B` makes metrics.json name B as its dataset and A as its train_dataset, and the MLflow
# evaluation run an `evaluate_cross_domain` run of A's model. results/tables/cross_domain.md puts them
# beside the in-domain results (the diagonal). Not part of the quick start (results/tables/table2.md).
# CROSS_DOMAIN, CROSS_TRAIN, CROSS_COLUMNS, CROSS_DIR and cross_domain_files() are in common.smk.

wildcard_constraints:
    train=alternatives(CROSS_TRAIN),
    test=alternatives([e["test"] for e in CROSS_DOMAIN]),


rule extract_cross_domain:
    input:
        model=f"{TRAIN_RUN}/model.pt",
        # B is laid out and verified; A's mean image normalises B's images as the model was trained
        data="data/{test}.manifest.json",
        report="results/{test}/dataset.json",
        mean_image="results/{train}/mean_image.pt",
    output:
        f"{CROSS_DIR}/features.pt",
    log:
        "results/logs/extract_cross_domain/{train}_to_{test}/{model}-seed{seed}.log",
    threads: JOB_THREADS
    resources:
        gpu=EXTRACT_GPUS,
        mem_mb=8000,
        runtime=60,
        batch_size=config["evaluate"]["batch_size"],
        device=EXTRACT_DEVICE,
    conda:
        "../../envs/reid.yaml"
    params:
        # the extraction's result options: flip test, and evaluate.feature_norm when not the default
        flip=extract_options(CFG.evaluate.flip, CFG.evaluate.feature_norm),
    shell:
        "python -m reid extract --model-file {input.model} --data data/{wildcards.test} "
        "--mean-image {input.mean_image} "
        "--batch-size {resources.batch_size} --device {resources.device} --threads {threads} {params.flip} "
        "--out {output} > {log} 2>&1"


rule evaluate_cross_domain:
    input:
        features=f"{CROSS_DIR}/features.pt",
        run_info=f"{TRAIN_RUN}/run.json",
    output:
        metrics=f"{CROSS_DIR}/metrics.json",
        per_query=f"{CROSS_DIR}/per_query.csv",
    log:
        "results/logs/evaluate_cross_domain/{train}_to_{test}/{model}-seed{seed}.log",
    threads: JOB_THREADS
    resources:
        mem_mb=evaluate_mem_mb,
        runtime=evaluate_runtime,
        evaluate_memory_gb=lambda wildcards: str(config["evaluate"]["memory_gb"]),
        heavy_memory=1,
    conda:
        "../../envs/reid.yaml"
    params:
        max_rank=config["evaluate"]["max_rank"],
        rerank=section("evaluate", "rerank"),
        bootstrap=section("evaluate", "bootstrap"),
    shell:
        "python -m reid evaluate --features {input.features} --run-info {input.run_info} "
        "--test-dataset {wildcards.test} "
        "--max-rank {params.max_rank} --rerank {params.rerank:q} --bootstrap {params.bootstrap:q} "
        "--memory-gb {resources.evaluate_memory_gb} "
        "--threads {threads} --out {output.metrics} --per-query-out {output.per_query} > {log} 2>&1"


rule table_cross_domain:
    """Rows: model and training set; columns: test sets; the diagonal: in-domain (results/A/...)."""
    localrule: True
    input:
        cross=lambda wc: cross_domain_files("metrics.json"),
        # the diagonal: each training set's in-domain runs (a test-only dataset has no row, so none)
        in_domain=lambda wc: _run_files("metrics.json", CROSS_TRAIN) if CROSS_DOMAIN else [],
    output:
        md="results/tables/cross_domain.md",
        html=report("results/tables/cross_domain.html", caption=f"{CAPTIONS}/table.rst", category="Tables",
                    labels={"table": "cross-domain"}),
    log:
        "results/logs/report/cross_domain.log",
    conda:
        "../../envs/reid.yaml"
    params:
        pairs=" ".join(f"{e['train']}:{e['test']}" for e in CROSS_DOMAIN),
        specs=_dataset_specs(CROSS_COLUMNS),
        backbone=config["model"]["backbone"],
    shell:
        "python -m reid table-cross-domain --cross-domain {input.cross} --in-domain {input.in_domain} "
        "--pairs {params.pairs} --dataset-specs {params.specs:q} --backbone {params.backbone} "
        "--out {output.md} --html-out {output.html} > {log} 2>&1"
