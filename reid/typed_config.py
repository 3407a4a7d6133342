"""The configuration as frozen, typed objects, built once from the validated config.

Who holds what (one place each):

* the keys, their types, ranges and **defaults**: ``workflow/schemas/config.schema.yaml``, nothing
  else. The classes below declare fields without defaults; ``from_dict`` validates a section with the
  schema (reid.config.validate_section), which fills the schema's defaults, then builds the object;
* the **cross-key rules** a JSON schema cannot say (a named dataset must be defined, the pair
  identification path needs the mutual_self test embedding, ...): ``reid.config_checks.check_references``,
  the layer above this one, which ``reid.config_checks.validate`` runs once per parse (the Snakefile's;
  common.smk's ``CFG`` is then built by ``from_validated`` without checking again);
* what changes results (RUNTIME_KEYS) and the configuration hash: ``reid.config``; ``as_dict`` gives a
  section back exactly as the schema spells it, so the hash of a section is the hash of its dict.

Adding a config key (e.g. ``custom_models``, ``cross_domain``) costs three lines:

1. the schema: the key, its type and its default (and ``config.yaml`` with a comment);
2. here: one field, with the key's name, on the class of its section (a key that is a Python keyword
   spells its name in ``field(metadata={"key": ...})``, as ``RerankConfig.lambda_value`` (config key ``lambda``, the parameter name of reid.metrics.rerank); a new nested
   section is a new ``Section`` subclass with its schema path in ``SECTION``, used as a field's type;
   a new top-level section is also one field of ``Config``);
3. a rule across keys, if any: one ``if`` in ``reid.config_checks.check_references``.

``tests/test_typed_config.py`` fails, naming the key, when the schema and the classes disagree.

Values are kept as the schema reads them (an integer stays an integer where the schema allows a
number, so a section's hash does not change); lists become tuples and mappings read-only views so
that the objects are frozen throughout.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

from reid.config import ConfigError, section_schema, validate_section


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return types.MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, Section):
        return value.as_dict()
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    return value


def _key(f) -> str:
    return f.metadata.get("key", f.name)


def _section_type(hint: Any) -> type | None:
    """The Section class a field holds (``RerankConfig``, ``SyntheticConfig | None``), else None."""
    candidates = typing.get_args(hint) or (hint,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, Section):
            return c
    return None


@dataclass(frozen=True)
class Section:
    """One config section: one field per schema key (same name), no defaults of its own."""

    SECTION: ClassVar[str]  # its path in the schema: "model", "evaluate.rerank", "$defs.dataset"

    @classmethod
    def from_dict(cls, value: Mapping | None, what: str | None = None):
        """Validate ``value`` (a copy) with the schema, fill the schema's defaults, build the object.

        Raises ConfigError naming ``what`` (default ``config '<section>'``) and every key at fault.
        """
        value = copy.deepcopy(dict(value or {}))
        validate_section(value, cls.SECTION, what or f"config '{cls.SECTION}'")
        return cls._from_validated(value)

    @classmethod
    def _from_validated(cls, value: Mapping):
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in fields(cls):
            raw = value.get(_key(f))  # absent and no schema default: None ("unset" in the schema)
            sub = _section_type(hints[f.name])
            kwargs[f.name] = sub._from_validated(raw) if sub is not None and raw is not None else _frozen(raw)
        return cls(**kwargs)

    def as_dict(self) -> dict:
        """The section as config.yaml spells it (lists, dicts, schema key names): what is hashed."""
        return {_key(f): _thawed(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def schema_keys(cls) -> set[str]:
        node, _ = section_schema(cls.SECTION)
        return set(node.get("properties", {}))


@dataclass(frozen=True)
class ModelConfig(Section):
    """Config ``model:`` (docs/model.md): backbone, attention and heads of every variant."""

    SECTION: ClassVar[str] = "model"
    backbone: str
    pretrained: str | None
    pretrained_url: str | None
    pretrained_sha256: str | None
    embedding_dim: int
    dropout: float
    attention_layers: tuple[int, ...]
    test_embedding: str
    attention_norm: str
    attention_init: str
    identification_path: str
    verification_norm: str
    embedding_norm: str
    verification_feature: str
    verification_head: str
    attention_channels: str


@dataclass(frozen=True)
class TrainConfig(Section):
    """Config ``train:``; ``workers`` and ``device`` are runtime keys (reid.config.RUNTIME_KEYS)."""

    SECTION: ClassVar[str] = "train"
    height: int
    width: int
    epochs: int
    batch_pairs: int
    lr: float
    lr_step: int
    lr_gamma: float
    momentum: float
    weight_decay: float
    verification_weight: float
    random_erasing: float
    horizontal_flip: float
    workers: int
    device: str
    precision: str
    lr_decay: str
    lr_decay_epochs: int
    input_norm: str
    mean_image_size: str
    positive_pairs: str


@dataclass(frozen=True)
class BotConfig(Section):
    """Config ``bot:``, the strong baseline's training recipe (reid.recipes.bot; its defaults are the
    published configuration of Luo et al. 2019)."""

    SECTION: ClassVar[str] = "bot"
    height: int
    width: int
    epochs: int
    identities_per_batch: int
    images_per_identity: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    warmup_factor: float
    lr_milestones: tuple[int, ...]
    lr_gamma: float
    label_smoothing: float
    triplet_margin: float
    center_loss_weight: float
    center_lr: float
    last_stride: int
    neck: str
    neck_feat: str
    horizontal_flip: float
    padding: int
    random_erasing: float

    def __post_init__(self):
        # the schedule counts milestones passed with bisect (reid.recipes.bot.lr_at): they must be in order
        milestones = list(self.lr_milestones)
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ConfigError(f"bot.lr_milestones must be strictly increasing epochs, got {milestones}")


@dataclass(frozen=True)
class RerankConfig(Section):
    """Config ``evaluate.rerank:``, k-reciprocal re-ranking (Zhong et al., CVPR 2017)."""

    SECTION: ClassVar[str] = "evaluate.rerank"
    k1: int
    k2: int
    lambda_value: float = field(metadata={"key": "lambda"})  # config key `lambda` (a Python keyword)


@dataclass(frozen=True)
class BootstrapConfig(Section):
    """Config ``evaluate.bootstrap:``, the identity bootstrap behind every interval."""

    SECTION: ClassVar[str] = "evaluate.bootstrap"
    resamples: int
    seed: int


@dataclass(frozen=True)
class EvaluateConfig(Section):
    """Config ``evaluate:``; ``batch_size``, ``device`` and ``memory_gb`` are runtime keys."""

    SECTION: ClassVar[str] = "evaluate"
    batch_size: int
    device: str | None  # where extraction runs; None: as train.device
    flip: bool
    feature_norm: str
    max_rank: int
    memory_gb: float
    rerank: RerankConfig
    bootstrap: BootstrapConfig


@dataclass(frozen=True)
class SyntheticConfig(Section):
    """Config ``synthetic:``, the generated dataset (reid.data.synthetic); ``difficulty`` holds only the
    knobs that are set (the others keep reid.data.synthetic_draw.Difficulty's values)."""

    SECTION: ClassVar[str] = "synthetic"
    seed: int
    train_ids: int
    test_ids: int
    cameras: int
    cameras_per_id: tuple[int, int]
    images_per_camera: tuple[int, int]
    distractors: int
    junk: int
    multi_query_images: tuple[int, int]
    height: int
    width: int
    difficulty: Mapping[str, Any]


@dataclass(frozen=True)
class DatasetSpec(Section):
    """One entry of config ``dataset:``; keys without a schema default are None when unset."""

    SECTION: ClassVar[str] = "$defs.dataset"
    source: str
    kind: str | None
    archive: str | None
    path: str | None
    url: str | None
    md5: str | None
    sha256: str | None
    custom: bool
    synthetic: Mapping[str, Any] | None  # source: synthetic only: keys merged over the top-level section


@dataclass(frozen=True)
class ReportConfig(Section):
    """Config ``report:``: which dataset each table is built for.

    In ``Config.report`` the values are resolved against ``datasets`` (``resolved``): an unset
    ``table1_datasets`` is every configured dataset, an unset ``table2_dataset``/``table3_dataset``
    the first one, and null means the table is not built (``()`` and None); ``readings_dataset``
    unset or null is the first configured dataset.
    """

    SECTION: ClassVar[str] = "report"
    table1_datasets: tuple[str, ...] | None
    table2_dataset: str | None
    table3_dataset: str | None
    readings_dataset: str | None


@dataclass(frozen=True)
class MlflowConfig(Section):
    """Config ``mlflow:``, whether and where runs are recorded (runtime keys only)."""

    SECTION: ClassVar[str] = "mlflow"
    enabled: bool
    tracking_uri: str | None
    experiment_prefix: str


def _resolved_report(raw: Mapping, datasets: tuple[str, ...]) -> ReportConfig:
    """``report:`` with what an unset key means spelt out (see ReportConfig)."""
    first = datasets[0]
    table1 = raw["table1_datasets"] if "table1_datasets" in raw else None
    return ReportConfig(
        table1_datasets=() if "table1_datasets" in raw and table1 is None else tuple(table1 or datasets),
        table2_dataset=raw["table2_dataset"] if "table2_dataset" in raw else first,
        table3_dataset=raw["table3_dataset"] if "table3_dataset" in raw else first,
        readings_dataset=raw.get("readings_dataset") or first)


@dataclass(frozen=True)
class Config:
    """The whole configuration (config.yaml, presets, ``--config``), validated and checked once."""

    datasets: tuple[str, ...]
    models: tuple[str, ...]
    plugins: tuple[str, ...]  # modules imported first (reid.plugins)
    custom_models: Mapping[str, Mapping[str, Any]]  # name -> its entry (reid.variants)
    seeds: tuple[int, ...]
    dataset: Mapping[str, DatasetSpec]
    synthetic: SyntheticConfig
    cross_domain: tuple[Mapping[str, str], ...]  # ({"train": A, "test": B}, ...)
    model: ModelConfig
    train: TrainConfig
    bot: BotConfig
    evaluate: EvaluateConfig
    report: ReportConfig
    mlflow: MlflowConfig

    # the top-level keys that are sections, and their classes
    SECTIONS: ClassVar[dict[str, type[Section]]] = {
        "synthetic": SyntheticConfig, "model": ModelConfig, "train": TrainConfig, "bot": BotConfig,
        "evaluate": EvaluateConfig,
        "report": ReportConfig, "mlflow": MlflowConfig}


def from_validated(config: Mapping, source: str = "config") -> Config:
    """The typed configuration of a config that reid.config_checks.validate has already validated,
    completed and checked (the Snakefile's): it is not checked again, so a config is validated once
    per parse. reid.config_checks.from_config validates and builds in one call."""
    sections = {name: cls._from_validated(config.get(name) or _defaults(cls))
                for name, cls in Config.SECTIONS.items()}
    sections["report"] = _resolved_report(config.get("report") or {}, tuple(config["datasets"]))
    cfg = Config(datasets=tuple(config["datasets"]), models=tuple(config["models"]), seeds=tuple(config["seeds"]),
                 dataset=types.MappingProxyType({name: DatasetSpec._from_validated(spec)
                                                 for name, spec in config["dataset"].items()}),
                 cross_domain=_frozen(list(config.get("cross_domain") or [])),
                 plugins=_frozen(list(config.get("plugins") or [])),
                 custom_models=_frozen(dict(config.get("custom_models") or {})),
                 **sections)
    return cfg


def _defaults(cls: type[Section]) -> dict:
    """A section the config leaves out entirely (``synthetic:`` without a synthetic dataset): the schema's defaults."""
    value: dict = {}
    validate_section(value, cls.SECTION, f"config '{cls.SECTION}'")
    return value


def _is_section_class(obj: Any) -> bool:
    return isinstance(obj, type) and is_dataclass(obj) and issubclass(obj, Section) and obj is not Section


SECTION_CLASSES: tuple[type[Section], ...] = tuple(
    obj for obj in list(globals().values()) if _is_section_class(obj))
