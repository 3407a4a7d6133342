# Helpers shared by the rule files (kept apart from the rules, as `snakemake --lint` asks).
import json
import os
import re
import shlex
import subprocess

from reid.config import effective_synthetic, result_keys
from reid import readings as READINGS_DEF
from reid.typed_config import from_validated

# The typed configuration of the config the Snakefile validated (reid.typed_config), what unset
# report keys mean resolved. Built here, not in the Snakefile, so that every rule file that
# includes this one has it.
CFG = from_validated(config, "config")

SYNTHETIC = [n for n, d in config["dataset"].items() if d["source"] == "synthetic"]
ARCHIVES = [n for n, d in config["dataset"].items() if d["source"] == "archive"]
FOLDERS = [n for n, d in config["dataset"].items() if d["source"] == "folder"]


def dataset_source(name):
    """What data/{name}/ is laid out from: the archive under resources/, or the user's folder."""
    spec = config["dataset"][name]
    return spec["path"] if spec["source"] == "folder" else f"resources/{spec['archive']}"


def section(*keys):
    """A config section's result keys as compact JSON, passed to the package on the command line.

    Rules pass these as `params:`, so that changing a result key reruns the rule. Runtime keys
    (reid.config.RUNTIME_KEYS: workers, device, batch size, MLflow, download URLs) are left out: they
    reach the jobs as `resources:` or environment variables, which Snakemake does not compare, so
    changing them reruns nothing (docs/reruns.md).
    """
    value = config
    for key in keys:
        value = value[key]
    return json.dumps(result_keys(value, ".".join(keys)), sort_keys=True, separators=(",", ":"))


def extract_options(flip, feature_norm):
    """`reid extract`'s result options as one param of the rules: "--flip" for the flip test, and
    "--feature-norm none" only when not the default l2, so that the param of every existing job is
    what it was before evaluate.feature_norm existed (no rerun)."""
    return " ".join((["--flip"] if flip else []) + ([f"--feature-norm {feature_norm}"] if feature_norm != "l2" else []))


def synthetic_section(name):
    """The synthetic settings of dataset `name` as compact JSON: the top-level `synthetic:` section with
    the dataset's own `synthetic:` keys merged over it (reid.config.effective_synthetic). As a rule's
    params, a change reruns only the datasets it reaches; a dataset without keys of its own gets exactly
    section("synthetic")."""
    return json.dumps(result_keys(effective_synthetic(config, name), "synthetic"), sort_keys=True,
                      separators=(",", ":"))


def custom_model_option(model):
    """` --custom-model JSON` for a model of config `custom_models:` (its entry, a result key: changing
    it retrains that model only), nothing for the others (reid.plugins, docs/extending.md). Like every
    option that only some jobs of a rule pass, it carries its own leading space."""
    spec = (config.get("custom_models") or {}).get(model)
    if spec is None:
        return ""
    entry = json.dumps({"entry": spec["entry"]}, separators=(",", ":"))
    return f" --custom-model {shlex.quote(entry)}"


def recipe_option(model):
    """` --recipe-params JSON` for a model whose training recipe has a config section of its own (the
    strong baseline's `bot:`, reid.recipes): its result keys, so that changing one retrains the models
    of that recipe only; nothing for the others (the paper's recipe reads `train:`)."""
    from reid import recipes, variants

    name = recipes.get(variants.get_variant(model).recipe).section
    if name is None:
        return ""
    value = json.dumps(result_keys(getattr(CFG, name).as_dict(), name), sort_keys=True, separators=(",", ":"))
    return f" --recipe-params {shlex.quote(value)}"


def recipe_notes_option():
    """` --recipe-notes JSON` for Tables 2 and 3: each configured model whose recipe has its own section
    (bot:), with what that section changes of the published settings (reid.config.departures); "" when
    there is none, so that the paper's tables keep their command."""
    from reid import recipes, variants
    from reid.config import departures

    notes = {}
    for model in config["models"]:
        name = recipes.get(variants.get_variant(model).recipe).section
        if name is not None:
            notes[model] = ", ".join(departures(name, getattr(CFG, name).as_dict()))
    if not notes:
        return ""
    return f" --recipe-notes {shlex.quote(json.dumps(notes, separators=(',', ':')))}"


# What each dataset-making step declares as its output, see data.smk; the folder data/{dataset}/
# itself is installed by the package and never declared, so Snakemake cannot delete it.
DATASET = "data/{dataset}.manifest.json"


# the pretrained backbone weights a training reads (config model.pretrained; none when it is null)
PRETRAINED_WEIGHTS = [p for p in [lookup(dpath="model/pretrained", within=config)] if p]


def dataset_folder(wildcards, input):
    """The dataset folder data/{name}/ beside the manifest data/{name}.manifest.json that a rule takes
    as its `data` input (DATASET): the images a job reads."""
    return input.data.removesuffix(".manifest.json")


def _missing(paths):
    """The files among ``paths`` (None allowed) that do not exist yet: the only ones fetching may make."""
    return [p for p in paths if p and not os.path.exists(p)]


def alternatives(names):
    """A wildcard regex matching exactly these names (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def _local_gpus():
    """GPUs this machine shows to jobs: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L` (0 without)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() not in ("", "-1")])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


# A training or extraction job asks for one unit of the `gpu` resource when it will run on a GPU:
# profiles/default caps the units (`resources: gpu: 1`) so that one GPU never gets several jobs at
# once; on a machine without a GPU (device auto) the jobs ask for none and run side by side on the
# CPU cores. profiles/slurm sets gpu: 1 for them whatever the submit host has.
LOCAL_GPUS = _local_gpus()


def _gpus_for(device):
    return 0 if device == "cpu" or (device == "auto" and not LOCAL_GPUS) else 1


GPU_PER_JOB = _gpus_for(config["train"]["device"])
# extraction runs where evaluate.device says, as training by default
EXTRACT_DEVICE = config["evaluate"]["device"] or config["train"]["device"]
EXTRACT_GPUS = _gpus_for(EXTRACT_DEVICE)


def evaluate_mem_mb(wildcards, input):
    """The evaluate job's peak memory: the interpreter with torch (~1 GiB), the loaded features and
    one more copy of them (normalised gallery, pooled queries), and the working-memory budget
    within which the queries are streamed (`evaluate.memory_gb`)."""
    return int(1024 + 2 * input.size_mb + 1024 * config["evaluate"]["memory_gb"])


def evaluate_runtime(wildcards, input):
    """Minutes, with a wide margin: the work grows with the square of the features' size (the
    gallery-to-gallery neighbour search); Market-1501 (~70 MB of features) takes well under a
    minute on 2 cores, MSMT17 (~190 MB) about two."""
    return max(10, int(input.size_mb**2 / 2000))


# Cross-domain evaluation (cross_domain.smk): config `cross_domain: [{train: A, test: B}, ...]`.
CROSS_DOMAIN = config["cross_domain"]
CROSS_TRAIN = list(dict.fromkeys(e["train"] for e in CROSS_DOMAIN))
# the table's columns: every dataset of a pair, in the order the pairs name them
CROSS_COLUMNS = list(dict.fromkeys(d for e in CROSS_DOMAIN for d in (e["train"], e["test"])))
CROSS_DIR = "results/cross_domain/{train}_to_{test}/{model}/seed{seed}"
TRAIN_RUN = "results/{train}/{model}/seed{seed}"


def cross_domain_files(name):
    """Every cross-domain run's `name` (metrics.json, ...); the table is refused by name without pairs."""
    if not CROSS_DOMAIN:
        raise ValueError("results/tables/cross_domain.md is not built: config `cross_domain` is empty "
                         "(add pairs such as [{train: synthetic, test: synthetic_b}])")
    return [f
            for e in CROSS_DOMAIN
            for f in expand(f"{CROSS_DIR}/{name}", train=e["train"], test=e["test"], model=MODELS, seed=SEEDS)]


# The readings ablation (readings.smk): which model a reading evaluates and its feature norm.
def reading_model(name):
    """model.pt or run.json of the model a reading evaluates (its own, or its model_of's)."""
    return lambda wc: f"{READINGS_DEF.model_dir(wc.dataset, wc.reading, wc.seed)}/{name}"


def reading_train_section(wc):
    """The `train` section a reading trains with, as `section("train")` gives it: the config's section
    with the reading's own train keys applied first, so that a key they make meaningful is passed with
    its configured value (train.lr_decay_epochs, left out of result_keys while lr_decay is step,
    reaches baseline_gradual_lr as configured, not as the schema's default). Its model keys need no
    such care (no model key depends on another) and are applied by `reid train --reading` alone, so
    the commands of readings without train keys are what they were."""
    train = READINGS_DEF.reading(wc.reading).train_config(config["train"])
    return json.dumps(result_keys(train, "train"), sort_keys=True, separators=(",", ":"))


def reading_recipe_option(wc):
    """` --recipe-params JSON` for a reading of a model with its own recipe section (the bot ablation)."""
    return recipe_option(READINGS_DEF.reading(wc.reading).variant)


def reading_feature_norm(wc):
    return READINGS_DEF.reading(wc.reading).extract_config(CFG.evaluate.as_dict())["feature_norm"]
