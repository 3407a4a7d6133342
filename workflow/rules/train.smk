# Training (a GPU job on a cluster). The one rule that trains: the readings ablation (readings.smk)
# reuses it with `use rule train as train_reading with:`, changing only its files and what it trains.
# The checkpoint folder is not a declared output, so Snakemake keeps it when the job fails and a
# re-run resumes from the last epoch (reid/checkpoint.py). params hold the result keys only:
# changing one reruns the job. Workers and device change how it runs, not its numbers: they are
# resources (which Snakemake does not compare), and the MLflow settings (mlflow.enabled included)
# reach every job through the environment the Snakefile sets (docs/reruns.md). run.json, written
# last, is the run's provenance: what later rules read instead of asking the tracker
# (reid.files.load_run_info). The benchmark file holds the job's wall time and peak memory
# (Snakemake's `benchmark:`; results/tables/benchmarks.md collects them).


rule train:
    input:
        data=DATASET,
        report="results/{dataset}/dataset.json",
        mean_image="results/{dataset}/mean_image.pt",
        weights=PRETRAINED_WEIGHTS,
    output:
        model=f"{RUN_DIR}/model.pt",
        history=f"{RUN_DIR}/history.csv",
        run_info=f"{RUN_DIR}/run.json",
    log:
        "results/logs/train/{dataset}/{model}-seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{model}-seed{seed}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=GPU_PER_JOB,
        mem_mb=16000,
        runtime=24 * 60,
        workers=lookup(dpath="train/workers", within=config),
        device=lookup(dpath="train/device", within=config),
    conda:
        "../../envs/reid.yaml"
    params:
        model=section("model"),
        train=section("train"),
        # what is trained: a model variant (and its custom_models: entry), or a reading (readings.smk)
        trains="--model {model}",
        # the custom model's entry and the recipe's own section (bot:), if any: "" for the paper's variants
        custom_model=lambda w: custom_model_option(w.model) + recipe_option(w.model),
        out_dir=RUN_DIR,
        checkpoints="results/checkpoints/{dataset}/{model}/seed{seed}",
    shell:
        "python -m reid train --dataset {wildcards.dataset} {params.trains} "
        "--seed {wildcards.seed} --data data/{wildcards.dataset} --mean-image {input.mean_image} "
        "--model-params {params.model:q} --train-params {params.train:q} "
        "--workers {resources.workers} --device {resources.device} --out-dir {params.out_dir} "
        "--checkpoint-dir {params.checkpoints} --threads {threads}{params.custom_model} > {log} 2>&1"
