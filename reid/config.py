"""The one place that knows config.yaml's keys: loading, schema validation, defaults, hashing.

Snakemake validates the config when the Snakefile is parsed; the package validates the same file
with the same schema when used on its own, so both paths reject the same mistakes. The validated
config becomes typed, frozen objects in reid.typed_config (which also holds the cross-key rules).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value that the schema or the pipeline rejects."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def validate(config: dict, source: str = "config") -> dict:
    """Validate against the JSON schema, filling schema defaults in place, then check the cross-key
    rules (reid.typed_config.check_rules); returns config.

    Errors name the offending key path, e.g. ``train.epohcs: unexpected key``.
    """
    validate_schema(config, source)
    check_references(config, source)
    return config


def validate_schema(config: dict, source: str = "config") -> dict:
    """The schema part of ``validate`` only (no cross-key rules); returns config, defaults filled."""
    import jsonschema

    schema = load_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"  {where}: {err.message}")
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    _fill_defaults(config, schema, schema)
    return config


def schema_default(path: str) -> Any:
    """The schema's default for the dotted key ``path`` (e.g. ``train.workers``); KeyError if it has none."""
    schema = load_schema()
    node = schema
    for part in path.split("."):
        node = _resolve(node, schema)["properties"][part]
    return _resolve(node, schema)["default"]


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if ref and ref.startswith("#/"):
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _fill_defaults(value: Any, node: dict, root: dict) -> None:
    node = _resolve(node, root)
    if not isinstance(value, dict):
        return
    for key, sub in node.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in value and "default" in sub:
            value[key] = json.loads(json.dumps(sub["default"]))
        if key in value:
            _fill_defaults(value[key], sub, root)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for key in value:
            if key not in node.get("properties", {}):
                _fill_defaults(value[key], extra, root)


# ---------------------------------------------------------------- cross-key rules (the one place)
# A rule across keys that a JSON schema cannot say is written here once; reid.typed_config's builder
# (common.smk's CFG), ``validate`` and the model (reid.models.siamese) call it.

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
    from reid.variants import REGISTRY

    from reid.readings import identification_path_conflict

    pair_path = any(REGISTRY[m].builtin and REGISTRY[m].attention == "mutual" for m in config["models"])
    conflict = identification_path_conflict(model["identification_path"], model["test_embedding"])
    if pair_path and conflict:
        # caught here, before any job runs, rather than when the mutual model is built
        raise ConfigError(f"{source}: {conflict}")


def merge_sections(base: Any, override: Any) -> Any:
    """``override`` merged over ``base``, key by key: mappings are merged recursively, any other value
    (number, string, list) replaces the base's. Neither argument is changed; the result shares nothing
    with them."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = {k: json.loads(json.dumps(v)) for k, v in base.items()}
        for key, value in override.items():
            merged[key] = merge_sections(base.get(key), value) if key in base else json.loads(json.dumps(value))
        return merged
    return json.loads(json.dumps(override))


def effective_synthetic(config: dict, name: str) -> dict:
    """The ``synthetic:`` settings dataset ``name`` (``source: synthetic``) is generated from: the
    top-level ``synthetic:`` section with the dataset entry's own ``synthetic:`` keys merged over it
    (merge_sections). A dataset without its own keys gets the top-level section unchanged, so its
    files and numbers do not move when another synthetic dataset is added. Raises ConfigError when
    ``name`` is not a synthetic dataset of the configuration."""
    spec = config.get("dataset", {}).get(name)
    if spec is None or spec.get("source") != "synthetic":
        raise ConfigError(f"dataset '{name}' is not a synthetic dataset (source: synthetic) of the configuration")
    base = config.get("synthetic") or {}
    return merge_sections(base, spec["synthetic"]) if spec.get("synthetic") else merge_sections(base, {})


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


def cross_domain_dir(train: str, test: str) -> str:
    """The folder name of one cross-domain pair under results/cross_domain/."""
    return f"{train}_to_{test}"


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
    from reid import plugins, variants

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


# ---------------------------------------------------------------- what changes results (docs/reruns.md)
# The one list of configuration keys that change how a job runs, never the numbers it produces:
# Snakemake's rule params, the MLflow `config_hash` tag and the training checkpoint's key leave
# them out, so changing one of them neither reruns a job nor invalidates a checkpoint. Every other
# key is a result key. `*` stands for any dataset name.
RUNTIME_KEYS = frozenset({
    "train.workers",        # DataLoader processes: each sample's randomness comes from (seed, epoch, index)
    "train.device",         # where the same experiment runs (CUDA trains in bfloat16 autocast: not bit-identical to CPU)
    "evaluate.batch_size",  # images per forward pass in feature extraction (eval mode: per-image)
    "evaluate.device",      # where extraction runs (as train.device)
    "evaluate.memory_gb",   # the evaluation's working-memory budget (streamed = unstreamed, bit for bit)
    "model.pretrained_url", # where missing weights are downloaded from; their sha256 is a result key
    "dataset.*.url",        # where a missing archive is downloaded from; md5/sha256 are result keys
    "mlflow",               # where runs are recorded
})
# Result keys a training checkpoint stays valid across: the lr schedules (reid/schedules.py) and the per-epoch pair
# sampling depend on the epoch index only, so N epochs continued to N + k equal N + k straight
# (tests/test_train.py proves it bit for bit). Lowering it below a checkpoint's epoch starts afresh.
CONTINUABLE_KEYS = frozenset({"train.epochs"})


# Result keys added after results existed (the readings of issue 22), each with the value that
# reproduces the code from before it existed, bit for bit. At that value a key is left out of
# result_keys and checkpoint_keys, so adding it re-keys no existing result (config_hash in model.pt,
# metrics.json and MLflow), checkpoint or Snakemake job; any other value is a result key as usual.
# train.lr_decay_epochs only acts with train.lr_decay "gradual": with "step" it is left out too.
NEUTRAL_DEFAULTS = {
    "train.lr_decay": "step",
    "train.input_norm": "mean_std",
    "train.mean_image_size": "stored",
    "train.positive_pairs": "cross_camera",
    "model.embedding_norm": "batchnorm",
    "model.verification_feature": "squared",
    "model.verification_head": "linear",
    "model.attention_channels": "per_channel",
    "evaluate.feature_norm": "l2",
}


def _neutral(value: dict, path: str) -> set:
    """The keys of the section ``value`` at dotted ``path`` that NEUTRAL_DEFAULTS leaves out."""
    out = {k for k, v in value.items() if NEUTRAL_DEFAULTS.get(f"{path}.{k}" if path else str(k), object()) == v}
    if path == "train" and value.get("lr_decay", "step") == "step":
        out.add("lr_decay_epochs")
    return out


def _matches(path: str, patterns: frozenset) -> bool:
    parts = path.split(".")
    for pattern in patterns:
        pat = pattern.split(".")
        if len(pat) <= len(parts) and all(p in ("*", q) for p, q in zip(pat, parts)):
            return True
    return False


def _without(value: Any, path: str, patterns: frozenset) -> Any:
    if not isinstance(value, dict):
        return value
    neutral = _neutral(value, path)
    return {k: _without(v, f"{path}.{k}" if path else str(k), patterns) for k, v in value.items()
            if not _matches(f"{path}.{k}" if path else str(k), patterns) and k not in neutral}


def result_keys(value: Any, path: str = "") -> Any:
    """``value`` (the config, or the section at dotted ``path``) without its RUNTIME_KEYS, and without
    the NEUTRAL_DEFAULTS keys at their neutral value."""
    return _without(value, path, RUNTIME_KEYS)


def is_result_key(path: str) -> bool:
    """Whether the dotted config key ``path`` (e.g. ``train.lr``) changes results (docs/reruns.md)."""
    return not _matches(path, RUNTIME_KEYS)


def checkpoint_keys(value: Any, path: str = "") -> Any:
    """``value`` without RUNTIME_KEYS and CONTINUABLE_KEYS: what a training checkpoint must match."""
    return _without(value, path, RUNTIME_KEYS | CONTINUABLE_KEYS)


def typed_overrides(overrides: Any) -> Any:
    """``--config key=value`` values read as YAML, the way the config file is read.

    Snakemake parses a top-level value as int, float or bool when it can, and everything else with
    YAML's BaseLoader, which leaves every scalar inside a list or mapping a string
    (``seeds=[0,1,2]`` gives ``['0', '1', '2']``, which the schema rejects). Each string is read
    again with ``yaml.safe_load`` (``'0'`` -> 0, ``'null'`` -> None, ``'0.5'`` -> 0.5, ``'abc'`` -> 'abc');
    values that are not strings are kept. A string that only YAML quoting kept a string in the
    command (``"['7']"``) cannot be told apart and is read as a number: quote-free names are fine.
    """
    if isinstance(overrides, dict):
        return {k: typed_overrides(v) for k, v in overrides.items()}
    if isinstance(overrides, list):
        return [typed_overrides(v) for v in overrides]
    if isinstance(overrides, str):
        try:
            value = yaml.safe_load(overrides)
        except yaml.YAMLError:
            return overrides
        return value if value is None or isinstance(value, (bool, int, float, str)) else overrides
    return overrides


def config_hash(*sections: Any) -> str:
    """Short stable hash of the config sections that determine a result (for MLflow tags, metrics.json)."""
    blob = json.dumps(sections, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def section_schema(section: str) -> tuple[dict, dict]:
    """(schema of one config section, root schema). ``section`` is a dotted path through the
    schema's properties (``train``, ``evaluate.rerank``) or ``$defs.<name>`` (``$defs.dataset``)."""
    root = load_schema()
    parts = section.split(".")
    if parts[0] == "$defs":
        node = root["$defs"][parts[1]]
        parts = parts[2:]
    else:
        node = root
    for part in parts:
        node = _resolve(node, root)["properties"][part]
    return _resolve(node, root), root


def validate_section(value: Any, section: str, what: str) -> dict:
    """Check one config section (e.g. the JSON a rule passes to a stage) against the same schema as
    config.yaml, filling its defaults in place; returns value.

    Raises ConfigError naming ``what`` and every offending key, e.g. ``--train-params (config
    'train'): invalid\n  devcie: unexpected key``, so that a stage run by hand with a misspelt or
    missing key stops before any work instead of failing later with a KeyError.
    """
    import jsonschema

    node, root = section_schema(section)
    schema = {**node, "$defs": root.get("$defs", {})}  # "#/$defs/..." references resolve against this
    validator_cls = jsonschema.validators.validator_for(root)
    errors = sorted(validator_cls(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = ".".join(str(p) for p in err.absolute_path)
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                allowed = set(_resolve(err.schema, root).get("properties", {}))
                for key in sorted(set(err.instance) - allowed):
                    lines.append(f"  {where + '.' if where else ''}{key}: unexpected key "
                                 f"(allowed: {', '.join(sorted(allowed))})")
                continue
            lines.append(f"  {where or '<top level>'}: {err.message}")
        raise ConfigError(f"{what}: invalid\n" + "\n".join(lines))
    _fill_defaults(value, node, root)
    return value


def parse_json_arg(text: str, what: str, section: str | None = None) -> dict:
    """The JSON a rule passes on the command line (one config section).

    With ``section`` (see section_schema) the object is validated and completed with the schema's
    defaults (validate_section). Raises ConfigError naming ``what``.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what}: not valid JSON ({e}); got {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(value).__name__}")
    if section is not None:
        validate_section(value, section, what)
    return value
