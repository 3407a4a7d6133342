"""The readings of the paper, in one place: which config keys choose one, and the readings ablation.

The paper leaves open, or states in a form that does not train, several parts of its model
(docs/model.md, "Choices the paper leaves open"). ``READING_KEYS`` lists the config keys that
choose a reading; ``presets/paper.yaml`` pins every one of them.

The readings ablation (``snakemake --cores 8 results/tables/readings.md``, the project's own Table 4)
trains each of ``READINGS`` on one dataset, with the config's ``model:`` and ``train:`` sections and
the reading's ``model_overrides`` and ``train_overrides`` over them, and evaluates each trained model
with every test embedding in ``Reading.embeddings`` (extraction only: the weights are the same). A
reading that changes only how test features are made (``extract_overrides``, config ``evaluate:``
keys applied at extraction) reuses the model of the reading it names in ``model_of``.

The strong baseline's own ablation ("which trick matters", Luo et al. 2019, Table 1;
``snakemake --cores 8 results/tables/readings_bot.md``) runs through the same machinery:
``BOT_READINGS`` each remove one trick from the configured ``bot:`` section
(``recipe_overrides``) or add the paper's self-attention to it. ``ABLATIONS`` names both ablations
and the table each one writes. Their files, for both:

    results/{dataset}/readings/{reading}/seed{seed}/model.pt, history.csv, run.json
    results/{dataset}/readings/{reading}/seed{seed}/{embedding}/features.pt, metrics.json, per_query.csv

This module is imported by the Snakefile when it is parsed: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Config keys whose value is a reading of the paper, with where the reading is explained.
READING_KEYS = {
    "model.attention_norm": "docs/model.md, choice 3: eqs. 1-4 on f (none) or on f / RMS(f) (rms)",
    "model.attention_init": "docs/model.md, choice 4: the eq. 4 convolution Kaiming-initialised or zero",
    "model.verification_norm": "docs/model.md, choice 3b: a batch norm before eq. 11's linear layer or none",
    "model.test_embedding": "docs/model.md, choice 1: how the mutual model embeds a test image alone",
    "model.identification_path": "docs/model.md, choice 1: which path the identification loss trains",
    "model.attention_layers": "the paper: after the 3rd and 4th residual blocks",
    "model.dropout": "the paper: 0.75",
    "train.precision": "not in the paper: fp32 or bf16 autocast",
    "train.batch_pairs": "the paper's batch of 32, read as pairs",
    "train.width": "the paper prints 256 x 188; 128 is the field's usual width",
    "train.verification_weight": "the paper: 0.5",
    "evaluate.flip": "not in the paper: flip test or none",
    "train.lr_decay": "the paper: lr 'gradually faded by a factor of 1 x 10^-1 between the 40th and 60th epoch'",
    "train.lr_decay_epochs": "the length of the gradual decay (the paper's 40th to 60th epoch: 20)",
    "train.input_norm": "the paper: the mean image subtracted; dividing by a per-channel std too is ours",
    "train.mean_image_size": "paper silent: the mean image at 256 x 128 resized, or at the input size",
    "train.positive_pairs": "the paper: pairs 'randomly chosen'; preferring another camera is ours",
    "model.embedding_norm": "paper silent on the contents of the '512-dimensional sequential layer'",
    "model.verification_feature": "the paper: a '512-dimensional f_d' from 'the Euclidean distance'",
    "model.verification_head": "the paper: 'the 512-dimensional sequential layer followed by the soft-max layer'",
    "model.attention_channels": "paper silent: SA and MA with C channels or one",
    "evaluate.feature_norm": "the paper: 'the Euclidean distance'; unit-length features are ours",
}

# How the mutual model embeds a test image alone, and which of its paths the identification loss
# trains (docs/model.md, choice 1). Defined here, not in reid.models, so that parsing the Snakefile
# does not import torch; reid.models.siamese and reid.variants take them from here.
TEST_EMBEDDINGS = ("single", "mutual_self", "plain")
IDENTIFICATION_PATHS = ("single", "pair")


def identification_path_conflict(identification_path: str, test_embedding: str) -> str | None:
    """Why this pair of readings of the mutual model cannot train and test, or None when it can.

    identification_path 'pair' trains only the mutual-attention path, so test images must go
    through it (test_embedding 'mutual_self'); the single-image path is left untrained otherwise.
    The one statement of this rule: the configuration check and ReIDModel both ask it.
    """
    if identification_path == "pair" and test_embedding != "mutual_self":
        return (f"model.identification_path 'pair' needs model.test_embedding 'mutual_self' (got {test_embedding!r}): "
                f"it trains only the mutual-attention path, so test images must go through it")
    return None


@dataclass(frozen=True)
class Reading:
    """One trained model of the ablation.

    ``variant`` is the model variant; ``model_overrides`` and ``train_overrides`` replace keys of
    config ``model:`` and ``train:``; ``embeddings`` are the test embeddings it is evaluated with, the
    one it was trained for first. ``extract_overrides`` replace config ``evaluate:`` keys used at
    extraction (``feature_norm``); ``model_of`` names the reading whose trained model this one
    evaluates instead of training its own (it must have no model or train overrides then).
    ``recipe_overrides`` replace keys of the variant's recipe section (config ``bot:`` for the strong
    baseline, reid.recipes); a reading of a recipe without a section of its own must have none.
    ``reference`` is the reading its differences are taken against in the table.
    """

    name: str
    variant: str
    label: str
    model_overrides: dict = field(default_factory=dict)
    embeddings: tuple[str, ...] = ("single",)
    train_overrides: dict = field(default_factory=dict)
    extract_overrides: dict = field(default_factory=dict)
    model_of: str | None = None
    reference: str = "baseline"
    recipe_overrides: dict = field(default_factory=dict)

    def model_config(self, model_cfg: dict) -> dict:
        """The config ``model:`` section this reading trains with (a new dict)."""
        return _overridden(self.name, "model", model_cfg, self.model_overrides)

    def train_config(self, train_cfg: dict) -> dict:
        """The config ``train:`` section this reading trains with (a new dict)."""
        return _overridden(self.name, "train", train_cfg, self.train_overrides)

    def recipe_config(self, section: str, recipe_cfg: dict) -> dict:
        """The recipe's config section (``section``, e.g. ``bot``) this reading trains with (a new dict)."""
        return _overridden(self.name, section, recipe_cfg, self.recipe_overrides)

    def extract_config(self, evaluate_cfg: dict) -> dict:
        """The config ``evaluate:`` section its features are extracted with (a new dict)."""
        return _overridden(self.name, "evaluate", evaluate_cfg, self.extract_overrides)

    @property
    def trains(self) -> bool:
        """Whether it trains a model of its own (else it evaluates ``model_of``'s)."""
        return self.model_of is None

    @property
    def model_reading(self) -> str:
        """The reading whose folder holds the model it evaluates (its own, or ``model_of``)."""
        return self.model_of or self.name

    @property
    def trained_embedding(self) -> str:
        return self.embeddings[0]


def _overridden(name: str, section: str, cfg: dict, overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"reading {name!r}: overrides unknown {section} key(s) {', '.join(unknown)}")
    return {**cfg, **overrides}


_MUTUAL_SINGLE = {"identification_path": "single", "test_embedding": "single"}
_MUTUAL_PAIR = {"identification_path": "pair", "test_embedding": "mutual_self"}

READINGS: tuple[Reading, ...] = (
    Reading("ide", "ide", "IDE: identification loss only"),
    Reading("baseline", "baseline", "baseline: Siamese, no attention"),
    Reading("self_attention", "self_attention", "self-attention: F = f * SA + f"),
    Reading("mutual", "mutual", "mutual, identification on the single-image path", _MUTUAL_SINGLE,
            ("single", "mutual_self", "plain")),
    Reading("mutual_pair", "mutual", "mutual, identification on the pair path", _MUTUAL_PAIR,
            ("mutual_self", "single", "plain")),
    # the readings of issue 22, each one key away from the baseline (or from mutual), default -> paper's reading
    Reading("baseline_mean_only", "baseline", "baseline, input: mean image subtracted only (no std)",
            train_overrides={"input_norm": "mean"}),
    Reading("baseline_input_mean", "baseline", "baseline, mean image built at the input size",
            train_overrides={"mean_image_size": "input"}),
    Reading("baseline_gradual_lr", "baseline", "baseline, lr decayed gradually from lr_step",
            train_overrides={"lr_decay": "gradual"}),
    Reading("baseline_random_pairs", "baseline", "baseline, positive partners of any camera",
            train_overrides={"positive_pairs": "random"}),
    Reading("baseline_no_embedding_bn", "baseline", "baseline, no batch norm in the 512-d layer",
            {"embedding_norm": "none"}),
    Reading("baseline_absolute_fd", "baseline", "baseline, f_d = |e1 - e2|", {"verification_feature": "absolute"}),
    Reading("baseline_sequential_verifier", "baseline", "baseline, a 512-d sequential layer before the verifier",
            {"verification_head": "sequential"}),
    Reading("baseline_raw_features", "baseline", "baseline's model, test features not L2-normalised",
            extract_overrides={"feature_norm": "none"}, model_of="baseline"),
    Reading("mutual_shared_maps", "mutual", "mutual, SA and MA of one channel", {**_MUTUAL_SINGLE,
            "attention_channels": "shared"}, reference="mutual"),
)
BASELINE = "baseline"

# The strong baseline's ablation: each reading one trick away from `bot` (the configured bot: section, every
# trick on). Luo et al. 2019 (Table 1) add the tricks one at a time, in the order warm-up, random erasing,
# label smoothing, last stride 1, BNNeck, center loss; here each is removed alone from the full recipe
# (leave one out), so that each row is one key away from its reference. Last, the paper's
# self-attention (eqs. 1-4) on the strong baseline.
BOT_READINGS: tuple[Reading, ...] = (
    Reading("bot", "bot", "BoT: every trick of the configured bot: section", reference="bot"),
    Reading("bot_no_warmup", "bot", "BoT without the warm-up", recipe_overrides={"warmup_epochs": 0},
            reference="bot"),
    Reading("bot_no_erasing", "bot", "BoT without random erasing", recipe_overrides={"random_erasing": 0.0},
            reference="bot"),
    Reading("bot_no_label_smoothing", "bot", "BoT without label smoothing",
            recipe_overrides={"label_smoothing": 0.0}, reference="bot"),
    Reading("bot_last_stride2", "bot", "BoT with the backbone's last stride 2", recipe_overrides={"last_stride": 2},
            reference="bot"),
    Reading("bot_no_bnneck", "bot", "BoT without BNNeck (classifier and test features on f_t)",
            recipe_overrides={"neck": "none"}, reference="bot"),
    Reading("bot_no_center", "bot", "BoT without the center loss", recipe_overrides={"center_loss_weight": 0.0},
            reference="bot"),
    Reading("bot_self_attention", "bot_self_attention", "BoT + the paper's self-attention (F = f * SA + f)",
            reference="bot"),
)


@dataclass(frozen=True)
class Ablation:
    """One ablation table: its readings, the reading its cost columns are relative to, and its file
    ``results/tables/{table}.md``."""

    name: str
    table: str
    readings: tuple[Reading, ...]
    baseline: str
    title: str


ABLATIONS: dict[str, Ablation] = {a.name: a for a in (
    Ablation("paper", "readings", READINGS, BASELINE, "Readings of the paper"),
    Ablation("bot", "readings_bot", BOT_READINGS, "bot", "The strong baseline's tricks"),
)}
ALL_READINGS: tuple[Reading, ...] = tuple(r for a in ABLATIONS.values() for r in a.readings)
READING_DIR = "results/{dataset}/readings/{reading}/seed{seed}"


def ablation(name: str) -> Ablation:
    """The ablation called ``name`` (``paper`` or ``bot``); ValueError naming the known ones otherwise."""
    try:
        return ABLATIONS[name]
    except KeyError:
        raise ValueError(f"ablation {name!r} is unknown; choose one of {', '.join(ABLATIONS)}") from None


def ablation_of_table(table: str) -> Ablation:
    """The ablation whose table is ``results/tables/{table}.md``."""
    for a in ABLATIONS.values():
        if a.table == table:
            return a
    raise ValueError(f"no ablation writes results/tables/{table}.md; known: "
                     + ", ".join(f"{a.table}.md" for a in ABLATIONS.values()))


def reading(name: str) -> Reading:
    """The reading called ``name``, of either ablation; ValueError naming the known ones otherwise."""
    for r in ALL_READINGS:
        if r.name == name:
            return r
    raise ValueError(f"reading {name!r} is unknown; choose one of {', '.join(r.name for r in ALL_READINGS)}")


def run_dir(dataset: str, name: str, seed: int) -> str:
    return READING_DIR.format(dataset=dataset, reading=name, seed=seed)


def model_dir(dataset: str, name: str, seed: int) -> str:
    """The folder of the model reading ``name`` evaluates (its own, or its ``model_of``'s)."""
    return run_dir(dataset, reading(name).model_reading, seed)


def entries(name: str = "paper") -> list[tuple[Reading, str]]:
    """Every (reading, test embedding) row of ablation ``name``, in table order."""
    return [(r, e) for r in ablation(name).readings for e in r.embeddings]


def training_files(dataset: str, seeds, name: str, of: str = "paper") -> list[str]:
    """``name`` (model.pt, history.csv, ...) of every reading of ablation ``of`` that trains, and seed."""
    return [f"{run_dir(dataset, r.name, s)}/{name}" for r in ablation(of).readings if r.trains for s in seeds]


def evaluation_files(dataset: str, seeds, name: str, of: str = "paper") -> list[str]:
    """``name`` (metrics.json, per_query.csv, ...) of every reading of ablation ``of``, test embedding and seed."""
    return [f"{run_dir(dataset, r.name, s)}/{e}/{name}" for r, e in entries(of) for s in seeds]
