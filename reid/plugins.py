"""Extending the pipeline from outside the package: config ``plugins:`` and ``custom_models:``.

* ``plugins: [module, ...]``: modules imported before anything else, in the Snakefile and in every
  ``python -m reid`` process. Importing one may register model variants (``reid.variants.register``)
  and dataset kinds (``reid.data.kinds.register``).
* ``custom_models: {NAME: {entry: "package.module:function", label: "..."}}``: NAME becomes a model
  variant built by ``function(num_classes, config)`` (the interface is in docs/extending.md);
  NAME is then listed in ``models:`` like a built-in.

How registration reaches every job: every rule runs a separate ``python -m reid`` process (on SLURM
on another node), so the Snakefile puts both keys into the job environment as one variable,
``REID_PLUGINS`` (``environment``), which Snakemake's jobs inherit (sbatch passes the environment
on), and ``reid.cli.main`` loads it (``load_from_environment``) before it parses its arguments. A
module is imported with the working directory on ``sys.path`` (as ``python -m`` has it), so a module
file beside config.yaml works as well as an installed package.

This module is imported by the Snakefile when it is parsed: it must not import torch.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any, Mapping

from reid.variants import REGISTRY, Variant, register, split_entry

ENV_VAR = "REID_PLUGINS"


class PluginError(ImportError):
    """A module of config ``plugins:`` that raised while it was imported (SyntaxError, RuntimeError,
    ...): the message names its ``plugins[i]`` entry and the error, never a traceback into the caller."""


def load(plugins: list[str] | tuple[str, ...] = (), custom_models: Mapping[str, Mapping[str, Any]] | None = None,
         source: str = "config") -> None:
    """Import each module of ``plugins``, then register each entry of ``custom_models`` as a variant.

    Idempotent (a module is imported once; the same custom model registered again is a no-op).
    Raises ImportError naming ``plugins[i]`` when a module cannot be found, PluginError (an ImportError)
    naming ``plugins[i]`` and the error when its code raises on import (SyntaxError, RuntimeError, ...),
    ValueError naming
    ``custom_models.NAME`` for a malformed entry or a name already taken by another variant.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:  # as `python -m` has it: a module beside config.yaml is found
        sys.path.append(cwd)
    for i, module in enumerate(plugins or ()):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ImportError(f"{source}: plugins[{i}]: cannot import module {module!r} ({e}); it must be importable "
                              "by every job: on PYTHONPATH or in the working directory") from None
        except Exception as e:  # noqa: BLE001 - any error of the module's own code: named once, with its cause
            raise PluginError(f"{source}: plugins[{i}]: importing module {module!r} failed: "
                              f"{type(e).__name__}: {e}") from None
    for name, spec in (custom_models or {}).items():
        register_custom(name, spec, source)


def custom_variant(name: str, spec: Mapping[str, Any], source: str = "config") -> Variant:
    """The Variant of config ``custom_models.NAME`` (``entry``, optional ``label``; nothing imported yet)."""
    what = f"{source}: custom_models.{name}"
    if not isinstance(spec, Mapping) or "entry" not in spec:
        raise ValueError(f"{what}: expected a mapping with 'entry: package.module:function'")
    unknown = sorted(set(spec) - {"entry", "label"})
    if unknown:
        raise ValueError(f"{what}: unexpected key(s) {', '.join(unknown)} (allowed: entry, label)")
    split_entry(spec["entry"], f"{what}.entry")
    label = str(spec.get("label") or name)
    return Variant(name=name, label=label, short_label=label, colour=None, attention=None, verifier=None,
                   test_embeddings=("single",), builder=spec["entry"])


def register_custom(name: str, spec: Mapping[str, Any], source: str = "config") -> Variant:
    """Register config ``custom_models.NAME`` (see ``custom_variant``); returns the registered variant.

    A variant already registered under NAME with the same builder is kept (``label`` may be absent
    from ``spec``: a stage given only the entry); another one is refused, naming the key.
    """
    variant = custom_variant(name, spec, source)
    known = REGISTRY.get(name)
    if known is not None:
        if known.builtin or known.builder != variant.builder:
            raise ValueError(f"{source}: custom_models.{name}: the name is taken by "
                             + ("a built-in variant" if known.builtin else f"another variant (builder {known.builder})")
                             + "; choose another name")
        return known
    return register(variant)


def environment(config: Mapping[str, Any]) -> dict[str, str]:
    """``{REID_PLUGINS: ...}`` for the job environment, from config ``plugins:`` and ``custom_models:``
    (an empty dict when neither is set, so a job's environment stays as it was)."""
    plugins, custom = list(config.get("plugins") or []), dict(config.get("custom_models") or {})
    if not plugins and not custom:
        return {}
    return {ENV_VAR: json.dumps({"plugins": plugins, "custom_models": custom}, sort_keys=True)}


def load_from_environment(environ: Mapping[str, str] | None = None) -> None:
    """Load what the Snakefile put into ``REID_PLUGINS`` (nothing when it is unset or empty).

    Raises ValueError naming the variable when its value is not the JSON ``environment`` writes.
    """
    text = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    if not text:
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"environment variable {ENV_VAR}: not valid JSON ({e})") from None
    if not isinstance(value, dict) or set(value) - {"plugins", "custom_models"}:
        raise ValueError(f"environment variable {ENV_VAR}: expected {{\"plugins\": [...], \"custom_models\": {{...}}}}")
    load(value.get("plugins") or [], value.get("custom_models") or {}, source=f"environment variable {ENV_VAR}")
