# The readings ablation, the project's own Table 4: `snakemake --cores 8 results/tables/readings.md`, and
# the strong baseline's own ablation (which trick matters): `results/tables/readings_bot.md`.
# Which readings, their model and recipe keys and their test embeddings are defined in reid/readings.py
# alone; these rules only route files. Not part of `all` or of the quick start.

READINGS_DATASET = CFG.report.readings_dataset  # unset or null: the first dataset (reid.typed_config)


wildcard_constraints:
    reading=alternatives([r.name for r in READINGS_DEF.ALL_READINGS]),
    embedding=alternatives(READINGS_DEF.TEST_EMBEDDINGS),


READING_DIR = READINGS_DEF.READING_DIR
# all readings of the paper train at once on a laptop: split the machine between them
READING_THREADS = max(1, min(8, (os.cpu_count() or 1) // max(1, len(READINGS_DEF.READINGS) * len(SEEDS))))


# The stage rules (train.smk, evaluate.smk) with the readings' files: a reading is trained with
# `--reading` (reid.readings holds its model and recipe keys) and extracted once per test embedding; a reading
# that changes only extraction or evaluation evaluates another reading's model (READINGS_DEF.model_dir).
use rule train as train_reading with:
    wildcard_constraints:
        reading=alternatives([r.name for r in READINGS_DEF.ALL_READINGS if r.trains]),
    output:
        model=f"{READING_DIR}/model.pt",
        history=f"{READING_DIR}/history.csv",
        run_info=f"{READING_DIR}/run.json",
    log:
        "results/logs/readings/train/{dataset}/{reading}-seed{seed}.log",
    benchmark:
        "results/benchmarks/readings/train/{dataset}/{reading}-seed{seed}.tsv"
    threads: READING_THREADS
    params:
        # the config's train section with the reading's own train keys over it (reid.readings)
        train=reading_train_section,
        trains="--reading {reading}",
        # the recipe's own section (bot:) for a reading of the strong baseline, "" for the paper's
        custom_model=reading_recipe_option,
        out_dir=READING_DIR,
        checkpoints="results/checkpoints/{dataset}/readings/{reading}/seed{seed}",


use rule extract as extract_reading with:
    input:
        model=reading_model("model.pt"),
        data=DATASET,
        mean_image="results/{dataset}/mean_image.pt",
    output:
        f"{READING_DIR}/{{embedding}}/features.pt",
    log:
        "results/logs/readings/extract/{dataset}/{reading}-seed{seed}-{embedding}.log",
    benchmark:
        "results/benchmarks/readings/extract/{dataset}/{reading}-seed{seed}-{embedding}.tsv"
    threads: READING_THREADS
    params:
        test_embedding=" --test-embedding {embedding}",
        # the extraction's result options: flip test, and the reading's evaluate.feature_norm
        flip=lambda wc: extract_options(CFG.evaluate.flip, reading_feature_norm(wc)),


use rule evaluate as evaluate_reading with:
    input:
        features=f"{READING_DIR}/{{embedding}}/features.pt",
        run_info=reading_model("run.json"),
    output:
        metrics=f"{READING_DIR}/{{embedding}}/metrics.json",
        per_query=f"{READING_DIR}/{{embedding}}/per_query.csv",
    log:
        "results/logs/readings/evaluate/{dataset}/{reading}-seed{seed}-{embedding}.log",
    benchmark:
        "results/benchmarks/readings/evaluate/{dataset}/{reading}-seed{seed}-{embedding}.tsv"
    threads: READING_THREADS


rule table_readings:
    """The readings ablation table: every reading and test embedding against the baseline."""
    localrule: True
    input:
        metrics=READINGS_DEF.evaluation_files(READINGS_DATASET, SEEDS, "metrics.json"),
        per_query=READINGS_DEF.evaluation_files(READINGS_DATASET, SEEDS, "per_query.csv"),
        models=READINGS_DEF.training_files(READINGS_DATASET, SEEDS, "model.pt"),
        histories=READINGS_DEF.training_files(READINGS_DATASET, SEEDS, "history.csv"),
    output:
        md="results/tables/readings.md",
        html=report("results/tables/readings.html", caption=f"{CAPTIONS}/table.rst", category="Tables",
                    labels={"table": "readings"}),
    log:
        "results/logs/report/readings.log",
    conda:
        "../../envs/reid.yaml"
    params:
        dataset=READINGS_DATASET,
        seeds=SEEDS,
        specs=_dataset_specs([READINGS_DATASET]),
        bootstrap=section("evaluate", "bootstrap"),
        ablation="",
    shell:
        "python -m reid table-readings --results results --dataset {params.dataset} --seeds {params.seeds} "
        "--dataset-specs {params.specs:q} --bootstrap {params.bootstrap:q}{params.ablation} "
        "--out {output.md} --html-out {output.html} > {log} 2>&1"


use rule table_readings as table_readings_bot with:
    input:
        metrics=READINGS_DEF.evaluation_files(READINGS_DATASET, SEEDS, "metrics.json", of="bot"),
        per_query=READINGS_DEF.evaluation_files(READINGS_DATASET, SEEDS, "per_query.csv", of="bot"),
        models=READINGS_DEF.training_files(READINGS_DATASET, SEEDS, "model.pt", of="bot"),
        histories=READINGS_DEF.training_files(READINGS_DATASET, SEEDS, "history.csv", of="bot"),
    output:
        md="results/tables/readings_bot.md",
        html=report("results/tables/readings_bot.html", caption=f"{CAPTIONS}/table.rst", category="Tables",
                    labels={"table": "readings_bot"}),
    log:
        "results/logs/report/readings_bot.log",
    params:
        dataset=READINGS_DATASET,
        seeds=SEEDS,
        specs=_dataset_specs([READINGS_DATASET]),
        bootstrap=section("evaluate", "bootstrap"),
        ablation=" --ablation bot",
