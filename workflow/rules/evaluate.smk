# Feature extraction (a GPU job on a cluster) and evaluation (CPU): the one rule of each. The
# readings ablation (readings.smk) and cross-domain evaluation (cross_domain.smk) reuse them with
# `use rule ... with:`, changing only their files and the options that only they pass (each such
# param holds its option with a leading space, or ""). Each job writes a benchmark file: its wall
# time and peak memory (results/tables/benchmarks.md collects them).


rule extract:
    input:
        model=f"{RUN_DIR}/model.pt",
        data=DATASET,
        mean_image="results/{dataset}/mean_image.pt",
    output:
        f"{RUN_DIR}/features.pt",
    log:
        "results/logs/extract/{dataset}/{model}-seed{seed}.log",
    benchmark:
        "results/benchmarks/extract/{dataset}/{model}-seed{seed}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=EXTRACT_GPUS,
        mem_mb=8000,
        runtime=60,
        # how extraction runs, not what it computes: resources, not params (docs/reruns.md)
        batch_size=lookup(dpath="evaluate/batch_size", within=config),
        device=EXTRACT_DEVICE,
    conda:
        "../../envs/reid.yaml"
    params:
        data=dataset_folder,  # the images embedded: the folder of the `data` manifest
        test_embedding="",  # a reading's test embedding (readings.smk); the model's own otherwise
        # the extraction's result options: flip test, and evaluate.feature_norm when not the default
        flip=extract_options(CFG.evaluate.flip, CFG.evaluate.feature_norm),
    shell:
        "python -m reid extract --model-file {input.model} --data {params.data} "
        "--mean-image {input.mean_image}{params.test_embedding} "
        "--batch-size {resources.batch_size} --device {resources.device} --threads {threads} {params.flip} "
        "--out {output} > {log} 2>&1"


rule evaluate:
    input:
        features=f"{RUN_DIR}/features.pt",
        run_info=f"{RUN_DIR}/run.json",
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        per_query=f"{RUN_DIR}/per_query.csv",
    log:
        "results/logs/evaluate/{dataset}/{model}-seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{model}-seed{seed}.tsv"
    threads: JOB_THREADS
    resources:
        mem_mb=evaluate_mem_mb,
        runtime=evaluate_runtime,
        # the budget travels as a resource, not a param: it changes no number, so it must not
        # make Snakemake rerun the job
        evaluate_memory_gb=lambda wildcards: str(lookup(dpath="evaluate/memory_gb", within=config)),
        # each evaluation holds mem_mb (features and evaluate.memory_gb): profiles/default lets
        # only so many run at once (`resources: heavy_memory:`)
        heavy_memory=1,
    conda:
        "../../envs/reid.yaml"
    params:
        test_dataset="",  # cross-domain (cross_domain.smk): the dataset the features come from
        max_rank=lookup(dpath="evaluate/max_rank", within=config),
        rerank=section("evaluate", "rerank"),
        bootstrap=section("evaluate", "bootstrap"),
    shell:
        "python -m reid evaluate --features {input.features} --run-info {input.run_info}{params.test_dataset} "
        "--max-rank {params.max_rank} --rerank {params.rerank:q} --bootstrap {params.bootstrap:q} "
        "--memory-gb {resources.evaluate_memory_gb} "
        "--threads {threads} --out {output.metrics} --per-query-out {output.per_query} > {log} 2>&1"
