"""The model-variant registry: the one place that says which model variants exist and what each is.

A variant is what config ``models:`` lists and the ``{model}`` wildcard of the workflow matches:
its name, how tables and figures name and colour it, which attention it has, whether it has a
verifier, how it embeds a test image, and the builder that makes it. Every other module reads these
facts from here: the Snakefile's wildcard constraint (``wildcard_pattern``), ``reid train --model``,
``reid.models.siamese.ReIDModel``, the report's model order, labels and colours
(tests/test_variants.py checks that nothing else spells them out).

This module is imported by the Snakefile when it is parsed: it must not import torch. A builder is
therefore named by a string ``"package.module:function"`` and imported only when a model is built.

Adding a variant (docs/extending.md):

* in the package: write its model in ``reid/models/<name>.py`` with a function
  ``build(num_classes, config) -> nn.Module`` and add one ``Variant(...)`` line to ``BUILTIN`` below;
* from outside the package: a module listed in config ``plugins:`` calls ``register(Variant(...))``
  when imported, or config ``custom_models:`` names the builder (``reid.plugins``).

The builder's contract is the custom-model interface of docs/extending.md: ``forward(x1, x2)`` on a
batch of pairs returns a dict with ``logits1``, ``logits2`` (B x num_classes) and optionally
``verif_logits`` (B x 2, class 1 = same identity); ``embed(x)`` returns the (B, D) test features.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from reid.readings import TEST_EMBEDDINGS

ATTENTIONS = ("none", "self", "mutual")
# colours of the variants registered after the package's, in registration order (matplotlib's
# tab10 without the package's five)
EXTRA_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
NAME_PATTERN = r"[A-Za-z0-9_]+"  # a name is a path component of results/{dataset}/{model}/


# ---------------------------------------------------------------- "package.module:function" entries

def split_entry(entry: str, what: str) -> tuple[str, str]:
    """(module, function) of ``"package.module:function"``; ValueError naming ``what`` otherwise."""
    if not isinstance(entry, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", entry):
        raise ValueError(f"{what}: {entry!r} is not of the form 'package.module:function'")
    module, function = entry.split(":")
    return module, function


def import_entry(entry: str, what: str) -> Callable:
    """The callable named by ``"package.module:function"``.

    Raises ImportError naming ``what`` and the entry when the module cannot be imported or has no
    such callable (the module must be importable: on PYTHONPATH, or in the working directory).
    """
    module_name, function = split_entry(entry, what)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"{what}: cannot import module {module_name!r} of {entry!r} ({e}); it must be "
                          "importable by every job: on PYTHONPATH or in the working directory") from None
    target: Any = module
    for part in function.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise ImportError(f"{what}: {entry!r}: module {module_name!r} has no callable {function!r}")
    return target


@dataclass(frozen=True)
class Variant:
    """One model variant.

    ``label`` is the table row label; ``{bb}`` in it is replaced by the backbone's name
    (``label_for``). ``attention`` is one of ATTENTIONS, or None for a model that does not declare
    it (a custom model). ``verifier``: whether ``forward`` returns ``verif_logits`` (None: not
    declared; the training loss follows what ``forward`` returns). ``test_embeddings``: the values
    of ``model.test_embedding`` the variant honours, the default first; a variant with one embeds a
    test image alone, one way. ``builder``: ``"package.module:function"``, called as
    ``function(num_classes, config, **builder_args)`` (config: the validated configuration's
    ``model`` and ``train`` sections, and ``custom_models`` for a custom model, as plain dicts).
    ``builtin``: defined in this package, so that its name fixes its builder (the config hash leaves
    the entry out) and its ``forward`` output is trusted (not checked at every step). Every model
    file, built-in or not, records the builder and its arguments (reid.models.builder).
    ``recipe``: the training recipe that trains it (a name of reid.recipes; the paper's Siamese
    pairs unless the variant says otherwise).
    """

    name: str
    label: str
    short_label: str
    colour: str | None
    attention: str | None
    verifier: bool | None
    test_embeddings: tuple[str, ...]
    builder: str
    builder_args: Mapping[str, Any] = field(default_factory=dict)
    builtin: bool = False
    recipe: str = "siamese"

    def __post_init__(self):
        if not re.fullmatch(NAME_PATTERN, self.name):
            raise ValueError(f"model variant name {self.name!r}: use letters, digits and _ only")
        if self.attention is not None and self.attention not in ATTENTIONS:
            raise ValueError(f"model variant {self.name!r}: attention {self.attention!r} is not one of {ATTENTIONS}")
        if not self.test_embeddings:
            raise ValueError(f"model variant {self.name!r}: test_embeddings is empty")
        split_entry(self.builder, f"model variant {self.name!r}: builder")

    def label_for(self, backbone: str | None) -> str:
        """The table row label, with the backbone's display name (``backbone_label``) in place of {bb}."""
        return self.label.format(bb=backbone_label(backbone)) if "{bb}" in self.label else self.label

    @property
    def has_attention(self) -> bool:
        return self.attention in ("self", "mutual")

    @property
    def chooses_test_embedding(self) -> bool:
        """Whether ``model.test_embedding`` changes how this variant embeds a test image."""
        return len(self.test_embeddings) > 1

    def test_embedding(self, configured: str | None) -> str:
        """How this variant embeds a test image under config ``model.test_embedding = configured``."""
        return configured if self.chooses_test_embedding and configured in self.test_embeddings \
            else self.test_embeddings[0]

    def build(self, num_classes: int, config: Mapping[str, Any]):
        """The untrained model: ``builder(num_classes, config, **builder_args)``.

        Raises ImportError naming the builder when it cannot be imported (reid.models.custom.build
        checks what it returns).
        """
        return import_entry(self.builder, f"model variant {self.name!r}")(num_classes, config,
                                                                           **dict(self.builder_args))


BACKBONE_LABELS = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50"}


def backbone_label(backbone: str | None) -> str:
    return BACKBONE_LABELS.get(backbone, backbone or "")


# The builder of the paper's variants (reid.models.siamese.ReIDModel); a variant with another builder is not
# ReIDModel's (and does not read model.test_embedding / identification_path unless its builder does).
PAPER_BUILDER = "reid.models.siamese:build_from_config"

# The package's variants (docs/model.md), in the order tables list them: the paper's, then the strong baseline.
BUILTIN = (
    Variant("ide", "{bb} IDE (identification loss only)", "IDE", "#7f7f7f", "none", False, ("single",),
            PAPER_BUILDER, {"variant": "ide"}, builtin=True),
    Variant("baseline", "{bb} baseline (Siamese, no attention)", "baseline", "#1f77b4", "none", True, ("single",),
            PAPER_BUILDER, {"variant": "baseline"}, builtin=True),
    Variant("self_attention", "{bb} + self-attention", "self-attention", "#2ca02c", "self", True, ("single",),
            PAPER_BUILDER, {"variant": "self_attention"}, builtin=True),
    Variant("mutual", "{bb} + mutual attention", "mutual attention", "#d62728", "mutual", True, TEST_EMBEDDINGS,
            PAPER_BUILDER, {"variant": "mutual"}, builtin=True),
    # not the paper's: the field's strong baseline (Luo et al. 2019), trained by its own recipe (reid.recipes.bot)
    Variant("bot", "{bb} strong baseline (BoT)", "BoT", "#ff7f0e", "none", False, ("single",),
            "reid.models.bot:build", recipe="bot"),
    # the paper's self-attention (eqs. 1-4) on the strong baseline, trained by its recipe (reid.models.bot)
    Variant("bot_self_attention", "{bb} strong baseline (BoT) + self-attention", "BoT + self-attention", "#ad494a",
            "self", False, ("single",), "reid.models.bot:build", {"attention": "self"}, recipe="bot"),
)

# The paper's comparison: its baseline and its proposed model (Table 1 reports the proposed model
# alone; Figures 4-6 set the two side by side). The report rules take them from here.
PAPER_BASELINE = "baseline"
PAPER_PROPOSED = "mutual"

REGISTRY: dict[str, Variant] = {v.name: v for v in BUILTIN}


def register(variant: Variant) -> Variant:
    """Add a variant defined outside this package (a plug-in, a custom model); returns it.

    Registering the same definition again is a no-op (a plug-in imported twice); another variant
    under a registered name is refused (ValueError naming it). A variant without a colour gets the
    next of EXTRA_COLOURS.
    """
    known = REGISTRY.get(variant.name)
    if known is not None:
        if known == variant or (variant.colour is None and known == _with_colour(variant, known.colour)):
            return known
        raise ValueError(f"model variant {variant.name!r} is already registered"
                         + (" (a built-in variant)" if known in BUILTIN else f" (builder {known.builder})"))
    if variant.colour is None:
        extra = sum(1 for v in REGISTRY.values() if v not in BUILTIN)
        variant = _with_colour(variant, EXTRA_COLOURS[extra % len(EXTRA_COLOURS)])
    REGISTRY[variant.name] = variant
    return variant


def _with_colour(variant: Variant, colour: str | None) -> Variant:
    from dataclasses import replace

    return replace(variant, colour=colour)


def get_variant(name: str) -> Variant:
    """The variant called ``name``; ValueError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"model variant {name!r} is unknown; choose one of {', '.join(REGISTRY)} "
                         "(or define it under custom_models:, or register it from a module in plugins:)") from None


def names() -> tuple[str, ...]:
    """Every registered variant, in table order (built-ins first, then in registration order)."""
    return tuple(REGISTRY)


def wildcard_pattern(extra: tuple[str, ...] | list[str] = ()) -> str:
    """The regex of the Snakefile's ``{model}`` wildcard: every registered variant, and ``extra``."""
    return "|".join(re.escape(n) for n in dict.fromkeys([*names(), *extra]))
