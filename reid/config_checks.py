"""The configuration's top layer: the cross-key and cross-registry rules a JSON schema cannot say,
checked once per parse, after the schema (reid.config, the bottom layer; reid.typed_config above it).

``validate`` (schema, defaults, then these rules) is what the Snakefile runs on its config, once;
``load`` reads and validates a config file; ``from_config`` builds the typed configuration
(reid.typed_config) of a config not yet validated. The rules import the registries
(reid.variants, reid.plugins, reid.data.kinds, reid.readings): nothing below imports this module.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from reid.config import ConfigError, cross_domain_dir, effective_synthetic, validate_schema, validate_section


def validate(config: dict, source: str = "config") -> dict:
    """Validate against the JSON schema (reid.config.validate_schema), filling schema defaults in
    place, then check the cross-key rules (``check_references``); returns config.

    Errors name the offending key path, e.g. ``train.epohcs: unexpected key``.
    """
    validate_schema(config, source)
    check_references(config, source)
    return config


def from_config(config: dict, source: str = "config"):
    """The typed configuration (reid.typed_config.Config) of ``config`` (config.yaml's mapping,
    presets merged): a copy validated by ``validate`` (schema, then the cross-key rules), then built.
    ``config`` is left as it is. Raises ConfigError naming ``source`` and the keys at fault."""
    import copy

    from reid.typed_config import from_validated

    return from_validated(validate(copy.deepcopy(config), source), source)


def load(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return validate(config, source=str(path))


# ---------------------------------------------------------------- cross-key rules (the one place)
# A rule across keys that a JSON schema cannot say is written here once; ``validate`` runs them.

def check_references(config: dict, source: str = "config") -> None:
    """Cross-key rules on a config the schema has validated and completed: every named dataset is
    defined, per-dataset synthetic keys and cross-domain pairs make sense, the pair identification
    path has the mutual_self test embedding. Raises ConfigError naming ``source`` and the keys."""
    defined = config.get("dataset", {})
    report = config.get("report") or {}
    named = list(config["datasets"]) + list(report.get("table1_datasets") or [])
    named += [report[k] for k in ("table2_dataset", "table3_dataset", "readings_dataset") if report.get(k) is not None]
    for name in named:
        if name not in defined:
            raise ConfigError(f"{source}: dataset '{name}' is used but not defined under 'dataset:' "
                              f"(defined: {', '.join(sorted(defined)) or 'none'}); a preset layered over another "
                              f"needs both, e.g. --configfile presets/paper.yaml presets/paper-market.yaml")
    _check_synthetic_overrides(config, source)
    _check_cross_domain(config, source)
    _check_models(config, source)
    if config["train"]["lr_step"] < 1:
        raise ConfigError(f"{source}: train.lr_step must be >= 1")
    model = config["model"]
    from reid.variants import BUILTIN, PAPER_BUILDER, REGISTRY

    from reid.readings import identification_path_conflict

    # the paper's mutual model reads model.identification_path (reid.models.siamese)
    pair_path = any(REGISTRY[m].builder == PAPER_BUILDER and REGISTRY[m].attention == "mutual"
                    for m in config["models"])
    conflict = identification_path_conflict(model["identification_path"], model["test_embedding"])
    if pair_path and conflict:
        # caught here, before any job runs, rather than when the mutual model is built
        raise ConfigError(f"{source}: {conflict}")
    # a built-in model with attention (self_attention, mutual, bot_self_attention) needs a stage to put it after;
    # the readings ablation trains self_attention and mutual whatever models: lists
    attending = [v.name for v in BUILTIN if v.name in config["models"] and v.has_attention]
    if not model["attention_layers"] and attending:
        raise ConfigError(f"{source}: model.attention_layers is empty, but {', '.join(attending)} put attention "
                          "after at least one residual stage (e.g. [3, 4], the paper's)")


def _check_synthetic_overrides(config: dict, source: str) -> None:
    """A dataset's own ``synthetic:`` keys exist only for source: synthetic, and the merged section
    must pass the ``synthetic:`` schema (an unknown or out-of-range key names the dataset)."""
    for name, spec in config.get("dataset", {}).items():
        if "synthetic" not in spec:
            continue
        if spec.get("source") != "synthetic":
            raise ConfigError(f"{source}: dataset.{name}.synthetic: only a dataset with source: synthetic takes "
                              f"synthetic settings (its source is {spec.get('source')!r})")
        validate_section(effective_synthetic(config, name), "synthetic",
                         f"{source}: dataset.{name}.synthetic (merged over the top-level 'synthetic:' section)")


def _check_cross_domain(config: dict, source: str) -> None:
    """Every ``cross_domain`` entry names two different defined datasets; each pair once, and no two
    pairs share a folder name (``a_to_b`` + ``c`` and ``a`` + ``b_to_c`` would)."""
    defined = config.get("dataset", {})
    seen: dict[str, int] = {}
    for i, entry in enumerate(config.get("cross_domain") or []):
        where = f"{source}: cross_domain[{i}] (train: {entry['train']}, test: {entry['test']})"
        for role in ("train", "test"):
            if entry[role] not in defined:
                raise ConfigError(f"{where}: {role} dataset '{entry[role]}' is not defined under 'dataset:' "
                                  f"(defined: {', '.join(sorted(defined)) or 'none'})")
        if entry["train"] == entry["test"]:
            raise ConfigError(f"{where}: train and test are the same dataset; in-domain results are "
                              f"results/{entry['train']}/... and the table's diagonal already")
        folder = cross_domain_dir(entry["train"], entry["test"])
        if folder in seen:
            j = seen[folder]
            other = config["cross_domain"][j]
            if (other["train"], other["test"]) == (entry["train"], entry["test"]):
                raise ConfigError(f"{where}: the pair is listed twice (first as cross_domain[{j}])")
            raise ConfigError(f"{where}: its folder results/cross_domain/{folder}/ is also that of cross_domain[{j}] "
                              f"(train: {other['train']}, test: {other['test']}); rename one of the datasets")
        seen[folder] = i


def _check_models(config: dict, source: str) -> None:
    """Every name in ``models:`` is a registered variant (reid.variants), every ``dataset.*.kind`` a
    registered kind (reid.data.kinds), once ``plugins:`` are imported and ``custom_models:``
    registered (reid.plugins.load, idempotent). The schema checks only the names' form, so that
    registered names pass it."""
    from reid import plugins, recipes, variants

    try:
        plugins.load(config.get("plugins") or [], config.get("custom_models") or {}, source)
    except ImportError as e:
        raise ConfigError(str(e)) from None
    except ValueError as e:
        raise ConfigError(str(e) if str(e).startswith(source) else f"{source}: {e}") from None
    from reid.data.kinds import REGISTRY as KINDS

    for name, spec in (config.get("dataset") or {}).items():
        kind = spec.get("kind") if isinstance(spec, dict) and spec.get("source") != "synthetic" else None
        if kind is not None and kind not in KINDS:
            raise ConfigError(f"{source}: dataset.{name}.kind: unknown dataset kind {kind!r}; known: "
                              f"{', '.join(sorted(KINDS))} (or register one from a module listed in plugins:)")
    for i, name in enumerate(config["models"]):
        if name not in variants.REGISTRY:
            raise ConfigError(f"{source}: models[{i}]: unknown model variant {name!r}; known: "
                              f"{', '.join(variants.names())}. Define it under custom_models: "
                              f"(custom_models.{name}.entry: package.module:function) or register it from a "
                              f"module listed in plugins: (docs/extending.md)")
        recipe = variants.REGISTRY[name].recipe
        if recipe not in recipes.REGISTRY:
            raise ConfigError(f"{source}: models[{i}]: model variant {name!r} is trained by recipe {recipe!r}, which "
                              f"is not registered; known: {', '.join(recipes.REGISTRY)} (reid.recipes)")
