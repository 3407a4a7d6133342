"""The training-recipe registry: the one place that says which training recipes exist.

A recipe is how a model is trained: how batches are sampled and augmented, which losses are
minimised, the optimiser and its learning-rate schedule. The training stage (reid.train) builds the
model, asks the variant's recipe (``Variant.recipe``, reid.variants) for a :class:`reid.recipes.base.Plan`
and runs the same loop, checkpoints and tracking for every recipe.

Recipes in the package (one module each):

* ``siamese`` (reid.recipes.siamese): the paper's. Pairs, half positive (reid.data.pairs), the
  identification + verification losses, SGD with a step decay; its keys are config ``train:``'s.

* ``bot`` (reid.recipes.bot): the strong baseline of Luo et al. (CVPR workshops 2019): P x K
  batches, ID loss with label smoothing + batch-hard triplet (+ center) loss on a BNNeck, Adam with
  warm-up and steps; its keys are config ``bot:``'s.

Adding a recipe (docs/extending.md): a module whose ``plan(model, setting)`` returns a Plan, and one
``RecipeEntry`` line below (or ``register`` from a module listed in config ``plugins:``). A recipe
with its own keys names its config section; the section is a typed class of reid.typed_config.

This module is imported by the Snakefile when it is parsed: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class RecipeEntry:
    """One training recipe: ``entry`` is ``"package.module:function"``, the function
    ``plan(model, setting) -> Plan`` (reid.recipes.base); ``section`` the top-level config section
    holding its own keys (None: it reads config ``train:`` only)."""

    name: str
    entry: str
    section: str | None
    description: str


BUILTIN = (
    RecipeEntry("siamese", "reid.recipes.siamese:plan", None,
                "the paper's Siamese pairs: identification + verification losses, SGD with a step decay"),
    RecipeEntry("bot", "reid.recipes.bot:plan", "bot",
                "the strong baseline (Luo et al. 2019): P x K batches, label-smoothed ID + batch-hard triplet "
                "(+ center) loss on a BNNeck, Adam with warm-up and steps"),
)
REGISTRY: dict[str, RecipeEntry] = {r.name: r for r in BUILTIN}


def register(recipe: RecipeEntry) -> RecipeEntry:
    """Add a recipe defined outside the package; the same definition twice is a no-op, another one
    under a registered name a ValueError naming it."""
    known = REGISTRY.get(recipe.name)
    if known is not None and known != recipe:
        raise ValueError(f"training recipe {recipe.name!r} is already registered ({known.entry})")
    REGISTRY[recipe.name] = recipe
    return recipe


def get(name: str) -> RecipeEntry:
    """The recipe called ``name``; ValueError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"training recipe {name!r} is unknown; choose one of {', '.join(REGISTRY)}") from None


def planner(name: str) -> Callable:
    """The recipe's ``plan(model, setting)`` function (imported now: it may import torch)."""
    from reid.variants import import_entry

    return import_entry(get(name).entry, f"training recipe {name!r}")
