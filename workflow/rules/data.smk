# Datasets: the synthetic default is generated; real archives are fetched (or placed by the user),
# checksum-verified and safely extracted; an already-extracted folder is linked or copied, never
# modified. Whatever the kind's native layout, data/{dataset}/ is Market-1501 layout.
#
# Output contract of every rule that makes a dataset (a new source adds a rule of this shape):
# - its one declared output is the manifest DATASET ("data/{dataset}.manifest.json"); rules that
#   read the dataset take DATASET as input and pass the folder data/{dataset} on the command line;
# - the folder data/{dataset}/ is NOT a declared output: the package builds the new dataset beside
#   it and swaps it in by renames (reid.data.install.replace_dir), then writes the manifest. Snakemake
#   deletes a job's outputs before running it, so a failing re-run (a damaged re-placed archive)
#   costs the manifest only, never the last good dataset.
# Files under resources/ that are present (placed by hand, or downloaded by an earlier run) are
# source files: the fetch rules below only exist for missing ones, so that no rerun trigger (a
# changed md5, a code change, --forceall) can make Snakemake delete an archive before re-fetching it.


rule synthesize:
    output:
        DATASET,
    log:
        "results/logs/synthesize/{dataset}.log",
    wildcard_constraints:
        dataset=alternatives(SYNTHETIC),
    conda:
        "../../envs/reid.yaml"
    params:
        # this dataset's settings: the top-level `synthetic:` with its own `synthetic:` keys merged over
        synthetic=lambda wc: synthetic_section(wc.dataset),
    shell:
        "python -m reid synthesize --params {params.synthetic:q} --out data/{wildcards.dataset} "
        "--manifest {output} > {log} 2>&1"


rule fetch_dataset:
    localrule: True
    output:
        "resources/{archive}",
    log:
        "results/logs/fetch/{archive}.log",
    wildcard_constraints:
        archive=alternatives([config["dataset"][n]["archive"] for n in ARCHIVES
                              if _missing([f"resources/{config['dataset'][n]['archive']}"])]),
    conda:
        "../../envs/reid.yaml"
    params:
        spec=lambda wc: json.dumps(
            next(d for d in config["dataset"].values() if d.get("archive") == wc.archive)
        ),
    shell:
        "python -m reid fetch --spec {params.spec:q} --resources resources > {log} 2>&1"


rule prepare_dataset:
    """An archive (source: archive) or an already-extracted folder (source: folder, read only) of any
    kind in reid.data.kinds, laid out as Market-1501 and verified."""
    input:
        lambda wc: dataset_source(wc.dataset),
    output:
        DATASET,
    log:
        "results/logs/prepare/{dataset}.log",
    wildcard_constraints:
        dataset=alternatives(ARCHIVES + FOLDERS),
    conda:
        "../../envs/reid.yaml"
    params:
        spec=lambda wc: section("dataset", wc.dataset),
    shell:
        "python -m reid prepare --spec {params.spec:q} --source {input:q} --out data/{wildcards.dataset} "
        "--manifest {output} --failed-report results/{wildcards.dataset}/dataset.failed.json > {log} 2>&1"


rule verify_dataset:
    input:
        DATASET,
    output:
        report="results/{dataset}/dataset.json",
        mean_image="results/{dataset}/mean_image.pt",
    log:
        "results/logs/verify/{dataset}.log",
    conda:
        "../../envs/reid.yaml"
    params:
        spec=lambda wc: section("dataset", wc.dataset),
    shell:
        "python -m reid verify --dataset {wildcards.dataset} --spec {params.spec:q} "
        "--data data/{wildcards.dataset} --manifest {input} "
        "--report {output.report} --mean-image {output.mean_image} > {log} 2>&1"


rule fetch_weights:
    localrule: True
    output:
        (_missing([config["model"]["pretrained"]]) or ["resources/no-pretrained-weights-to-fetch"])[0],
    log:
        "results/logs/fetch/weights.log",
    conda:
        "../../envs/reid.yaml"
    params:
        spec=lambda wc: json.dumps(
            {
                "archive": os.path.basename(config["model"]["pretrained"] or ""),
                "url": config["model"]["pretrained_url"],
                "sha256": config["model"]["pretrained_sha256"],
            }
        ),
        resources=lambda wc: os.path.dirname(config["model"]["pretrained"] or "resources") or ".",
    shell:
        "python -m reid fetch --spec {params.spec:q} --resources {params.resources} > {log} 2>&1"
