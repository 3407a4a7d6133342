"""The configuration's bottom layer: config.yaml's keys, their schema and defaults, and what changes
results (rerun keys and hashes). It imports nothing of the pipeline's registries.

The layers, each importing only those below it:

1. here: the schema (workflow/schemas/config.schema.yaml) and its defaults (``validate_schema``,
   ``validate_section``: integers that are integers), the bounds of the verbs' numeric options
   (``key_schema``, ``check_number``), ``--config`` values read as YAML, the runtime keys and the
   configuration hash (``RUNTIME_KEYS``, ``result_keys``, ``checkpoint_keys``, ``config_hash``);
2. reid.typed_config: the validated config as frozen, typed sections;
3. reid.config_checks: the cross-key and cross-registry rules (a named dataset is defined, every
   model and dataset kind is registered once ``plugins:`` are imported, ...), and ``validate`` /
   ``load``, which run the schema and these rules once per parse (the Snakefile's parse included).
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


def _validator_class(schema: dict):
    """The schema's validator class with integers that are integers: JSON Schema counts ``2.0`` as an
    integer (draft 2020-12, "a number with a zero fractional part"), which would let
    ``train={epochs: 2.0}`` or ``seeds: [0.0]`` through to fail after the work (``range(2.0)``, a
    ``seed0.0`` folder); here a float is refused wherever the schema says integer."""
    import jsonschema

    base = jsonschema.validators.validator_for(schema)
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, value: isinstance(value, int)
                                         and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=checker)


def validate_schema(config: dict, source: str = "config") -> dict:
    """The schema part of ``validate`` only (no cross-key rules); returns config, defaults filled."""
    schema = load_schema()
    validator_cls = _validator_class(schema)
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


def departures(section: str, values: dict) -> list[str]:
    """The keys of config section ``section`` whose value in ``values`` differs from the schema's default,
    as ``"key value (default d)"``, in the schema's order. For a section whose defaults are a published
    configuration (``bot:``), this is what a run changed of it: the tables state it in their captions.
    Raises KeyError for a section the schema does not have."""
    node, _ = section_schema(section)
    out = []
    for key, sub in node.get("properties", {}).items():
        if key in values and "default" in sub and values[key] != sub["default"]:
            out.append(f"{key} {values[key]} (published {sub['default']})")
    return out


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


def cross_domain_dir(train: str, test: str) -> str:
    """The folder name of one cross-domain pair under results/cross_domain/."""
    return f"{train}_to_{test}"


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


def key_schema(path: str) -> dict:
    """The schema node of one key: a dotted path through the properties (``evaluate.max_rank``), a
    list's items (``seeds[]``), or ``$defs.<name>`` (``$defs.threads``: bounds of a command-line
    option that no config key carries). KeyError when the schema has no such key."""
    root = load_schema()
    parts = path.split(".")
    if parts[0] == "$defs":
        node, parts = root["$defs"][parts[1]], parts[2:]
    else:
        node = root
    for part in parts:
        items = part.endswith("[]")
        node = _resolve(node, root)["properties"][part[:-2] if items else part]
        if items:
            node = _resolve(node, root)["items"]
    return _resolve(node, root)


def check_number(value: Any, path: str, what: str) -> Any:
    """``value`` checked against the type and bounds of schema key ``path`` (key_schema): the one
    source of the bounds of config keys and of the verbs' numeric options. Returns ``value``; raises
    ConfigError naming ``what`` and ``path``, e.g. ``--max-rank -3: must be >= 1 (config
    'evaluate.max_rank')``."""
    node = key_schema(path)
    where = f"{what} {value!r}" if what else repr(value)
    key = f"(config '{path}')" if not path.startswith("$defs.") else f"(schema {path})"
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            "integer" in kinds and "number" not in kinds and not isinstance(value, int)):
        raise ConfigError(f"{where}: expected {'an integer' if 'number' not in kinds else 'a number'} {key}")
    for bound, ok, text in (("minimum", lambda b: value >= b, ">="), ("maximum", lambda b: value <= b, "<="),
                            ("exclusiveMinimum", lambda b: value > b, ">"),
                            ("exclusiveMaximum", lambda b: value < b, "<")):
        if bound in node and not ok(node[bound]):
            raise ConfigError(f"{where}: must be {text} {node[bound]} {key}")
    return value


def validate_section(value: Any, section: str, what: str) -> dict:
    """Check one config section (e.g. the JSON a rule passes to a stage) against the same schema as
    config.yaml, filling its defaults in place; returns value.

    Raises ConfigError naming ``what`` and every offending key, e.g. ``--train-params (config
    'train'): invalid\n  devcie: unexpected key``, so that a stage run by hand with a misspelt or
    missing key stops before any work instead of failing later with a KeyError.
    """
    node, root = section_schema(section)
    schema = {**node, "$defs": root.get("$defs", {})}  # "#/$defs/..." references resolve against this
    validator_cls = _validator_class(root)
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
