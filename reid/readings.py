"""The readings of the paper, in one place: which config keys choose one, and the readings ablation.

The paper leaves open, or states in a form that does not train, several parts of its model
(docs/model.md, "Choices the paper leaves open"). ``READING_KEYS`` lists the config keys that
choose a reading; ``presets/paper.yaml`` pins every one of them.

The readings ablation (``snakemake --cores 8 results/tables/readings.md``, the project's own Table 4)
trains each of ``READINGS`` on one dataset, with the config's ``model:`` section and the reading's
``model_overrides`` over it, and evaluates each trained model with every test embedding in
``Reading.embeddings`` (extraction only: the weights are the same). Its files:

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

    ``variant`` is the model variant; ``model_overrides`` replace keys of config ``model:``;
    ``embeddings`` are the test embeddings it is evaluated with, the one it was trained for first.
    """

    name: str
    variant: str
    label: str
    model_overrides: dict = field(default_factory=dict)
    embeddings: tuple[str, ...] = ("single",)

    def model_config(self, model_cfg: dict) -> dict:
        """The config ``model:`` section this reading trains with (a new dict)."""
        unknown = sorted(set(self.model_overrides) - set(model_cfg))
        if unknown:
            raise ValueError(f"reading {self.name!r}: overrides unknown model key(s) {', '.join(unknown)}")
        return {**model_cfg, **self.model_overrides}

    @property
    def trained_embedding(self) -> str:
        return self.embeddings[0]


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
)
BASELINE = "baseline"
READING_DIR = "results/{dataset}/readings/{reading}/seed{seed}"


def reading(name: str) -> Reading:
    """The reading called ``name``; ValueError naming the known ones otherwise."""
    for r in READINGS:
        if r.name == name:
            return r
    raise ValueError(f"reading {name!r} is unknown; choose one of {', '.join(r.name for r in READINGS)}")


def run_dir(dataset: str, name: str, seed: int) -> str:
    return READING_DIR.format(dataset=dataset, reading=name, seed=seed)


def entries() -> list[tuple[Reading, str]]:
    """Every (reading, test embedding) row of the ablation, in table order."""
    return [(r, e) for r in READINGS for e in r.embeddings]


def training_files(dataset: str, seeds, name: str) -> list[str]:
    """``name`` (model.pt, history.csv, ...) of every reading and seed."""
    return [f"{run_dir(dataset, r.name, s)}/{name}" for r in READINGS for s in seeds]


def evaluation_files(dataset: str, seeds, name: str) -> list[str]:
    """``name`` (metrics.json, per_query.csv, ...) of every reading, test embedding and seed."""
    return [f"{run_dir(dataset, r.name, s)}/{e}/{name}" for r, e in entries() for s in seeds]
