"""The dataset-kind registry: the one place that says which kinds exist.

Each kind lives in one module of this package (its published counts, where it comes from, its
native layout and how it becomes Market-1501, the paper numbers it maps to) and is listed once in
``REGISTRY`` below. ``reid.config_checks.check_references`` checks config ``dataset.*.kind`` against it;
the schema's description of ``kind`` lists the same names (tests/data/test_kinds.py checks both).

To add a kind: write ``reid/data/kinds/<name>.py`` defining ``KIND = DatasetKind(...)`` with a
``Layout``, add it to ``_KINDS`` below and to the schema's description. Code outside ``reid/`` (a
module listed in config ``plugins:``, reid.plugins) calls ``register(kind)`` instead
(docs/extending.md).
"""

from __future__ import annotations

from reid.data.kinds import cuhk03np, custom, dukemtmcreid, market1501, msmt17
from reid.data.kinds.base import DatasetKind, DatasetLayoutError, SplitCounts, Transfer

__all__ = ["REGISTRY", "DatasetKind", "DatasetLayoutError", "SplitCounts", "Transfer", "get_kind", "kind_of",
           "register"]

_KINDS = (market1501.KIND, dukemtmcreid.KIND, msmt17.KIND, *cuhk03np.KINDS, custom.KIND)

REGISTRY: dict[str, DatasetKind] = {k.name: k for k in _KINDS}

DEFAULT_KIND = "custom"  # an archive or folder entry without `kind:`


def register(kind: DatasetKind) -> DatasetKind:
    """Add a kind defined outside this package; refuses to replace an existing name."""
    if kind.name in REGISTRY:
        raise ValueError(f"dataset kind {kind.name!r} is already registered")
    REGISTRY[kind.name] = kind
    return kind


def get_kind(name: str | None) -> DatasetKind:
    """The kind called ``name`` (None: the custom kind); a clear error naming the known kinds otherwise."""
    try:
        return REGISTRY[name or DEFAULT_KIND]
    except KeyError:
        raise ValueError(f"unknown dataset kind {name!r}: expected one of {sorted(REGISTRY)}") from None


def kind_of(spec: dict) -> DatasetKind | None:
    """The kind of a ``dataset.<name>`` config section; None for a synthetic dataset."""
    if spec.get("source") == "synthetic":
        return None
    return get_kind(spec.get("kind"))
