"""The options of the paper's model, declared once: config ``model:`` minus the ImageNet weights keys.

``ModelOptions`` is what ``reid.models.siamese`` builds from (read by attribute), what
``build_model(variant, num_classes, **options)`` accepts by keyword, and what a model file written
before the builder meta (``meta["model_kwargs"]``) is read back into. Its fields are the schema's
``model`` properties (workflow/schemas/config.schema.yaml) other than ``pretrained*``, with the
schema's defaults (tests/models/test_model_builder.py checks both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from reid.models.attention import ATTENTION_CHANNELS, ATTENTION_INITS, INPUT_NORMS
from reid.models.backbone import BACKBONES, STAGES
from reid.models.heads import EMBEDDING_NORMS, VERIFICATION_FEATURES, VERIFICATION_HEADS, VERIFICATION_NORMS
from reid.readings import IDENTIFICATION_PATHS, TEST_EMBEDDINGS, identification_path_conflict

# keys of config ``model:`` that say where ImageNet weights come from, not what the model is
WEIGHTS_KEYS = ("pretrained", "pretrained_url", "pretrained_sha256")


@dataclass(frozen=True)
class ModelOptions:
    """The architecture options of ``ReIDModel`` (docs/model.md, "The choices").

    ``backbone`` (resnet18 | resnet34 | resnet50); ``embedding_dim`` D of the (B, D) embedding;
    ``dropout`` p in [0, 1) before each classifier; ``attention_layers`` the residual stages (1-4)
    followed by attention; ``test_embedding`` (single | mutual_self | plain) how the mutual model
    embeds one image; ``attention_norm`` (rms | none) whether eqs. 1-4 see f / RMS(f) or f;
    ``attention_init`` (kaiming | zero) how the last attention conv starts; ``verification_norm``
    (batchnorm | none) before the verification layer; ``identification_path`` (single | pair) which
    path of the mutual model the identification loss trains; ``embedding_norm`` (batchnorm | none)
    inside the 512-d sequential layer, ``verification_feature`` (squared | absolute) f_d,
    ``verification_head`` (linear | sequential) and ``attention_channels`` (per_channel | shared):
    readings of section 4 and 3.3 (docs/model.md, choice 6).
    """

    backbone: str = "resnet50"
    embedding_dim: int = 512
    dropout: float = 0.75
    attention_layers: tuple[int, ...] = (3, 4)
    test_embedding: str = "single"
    attention_norm: str = "rms"
    attention_init: str = "kaiming"
    verification_norm: str = "batchnorm"
    identification_path: str = "single"
    embedding_norm: str = "batchnorm"
    verification_feature: str = "squared"
    verification_head: str = "linear"
    attention_channels: str = "per_channel"

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention_layers", tuple(self.attention_layers))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_config(cls, model_section: Mapping[str, Any]) -> ModelOptions:
        """The options in config ``model:`` (a schema-complete dict: a missing key is a KeyError naming it;
        the weights keys and any key another model reads are ignored)."""
        return cls(**{name: model_section[name] for name in cls.names()})

    def as_dict(self) -> dict[str, Any]:
        """Plain values (attention_layers a list), as a model file's meta keeps them."""
        out = asdict(self)
        out["attention_layers"] = list(self.attention_layers)
        return out

    def check(self, attention: str, num_classes: int) -> None:
        """ValueError naming the config key for a value out of range; ``attention`` is the variant's
        (none | self | mutual: reid.variants), which decides which rules apply."""
        if self.backbone not in BACKBONES:
            choices = ", ".join(BACKBONES)
            raise ValueError(f"model.backbone: unknown backbone {self.backbone!r}; choose one of {choices}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        dim = self.embedding_dim
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"model.embedding_dim must be a positive integer, got {dim!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must lie in [0, 1), got {self.dropout!r}")
        layers = list(self.attention_layers)
        if any(layer not in STAGES for layer in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"model.attention_layers must be distinct stages among {list(STAGES)}, got {layers!r}")
        if attention in ("self", "mutual") and not layers:
            raise ValueError(f"model.attention_layers is empty: {attention} attention needs at least one stage")
        for key, allowed in (("test_embedding", TEST_EMBEDDINGS), ("attention_norm", INPUT_NORMS),
                             ("attention_init", ATTENTION_INITS), ("identification_path", IDENTIFICATION_PATHS),
                             ("verification_norm", VERIFICATION_NORMS), ("embedding_norm", EMBEDDING_NORMS),
                             ("verification_feature", VERIFICATION_FEATURES),
                             ("verification_head", VERIFICATION_HEADS), ("attention_channels", ATTENTION_CHANNELS)):
            value = getattr(self, key)
            if value not in allowed:
                raise ValueError(f"model.{key} {value!r} is unknown; choose one of {', '.join(allowed)}")
        conflict = identification_path_conflict(self.identification_path, self.test_embedding)
        if attention == "mutual" and conflict:
            raise ValueError(conflict)
