"""The metric-key registry: every metrics.json scalar's name, unit and print form, and the protocols.

metrics.json is flat (docs/architecture.md): a metric of the single-query protocol is its bare name
(``rank1``, ``mAP``), any other protocol's carries the protocol as a prefix (``rerank/mAP``,
``multi_query_mean/rerank/rank1``); each protocol's CMC curve is ``<prefix>cmc``. Keys are built
(``key``, ``curve_key``) and read back (``parse``) here and nowhere else, and every table prints a
value through ``format_value`` / ``format_interval`` / ``Unit``, so that a metric that is not a
fraction (a mean rank, milliseconds per query) prints as what it is.

Adding a metric: one ``Metric`` in ``METRICS`` (or ``register`` from outside the package); the
evaluation must then write it under ``key(protocol, name)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SEPARATOR = "/"  # between a protocol and a metric name
CURVE = "cmc"    # a protocol's CMC curve, a list of fractions (not a scalar metric)


@dataclass(frozen=True)
class Unit:
    """How values of one kind are stored, checked and printed.

    A stored value ``v`` prints as ``v * scale`` with ``digits`` decimals; a valid stored value lies
    in [low, high]. ``symbol`` is what a table header says (``%``); ``difference`` names the unit of a
    difference of two printed values (``pp``, percentage points).
    """

    name: str
    scale: float
    digits: int
    symbol: str
    difference: str
    low: float = -math.inf
    high: float = math.inf

    def display(self, value: float) -> float:
        return value * self.scale

    def format(self, value: float | None, signed: bool = False) -> str:
        """``value`` (stored units) with ``digits`` decimals in display units; a dash for None."""
        if value is None:
            return "–"
        return f"{self.display(value):{'+' if signed else ''}.{self.digits}f}"


UNITS = {
    "fraction": Unit("fraction", 100.0, 2, "%", "pp", 0.0, 1.0),    # printed as a percentage
    "rank": Unit("rank", 1.0, 2, "rank", "ranks", 1.0, math.inf),  # a (mean) 1-based rank
    "ms": Unit("ms", 1.0, 2, "ms", "ms", 0.0, math.inf),           # milliseconds
}


@dataclass(frozen=True)
class Metric:
    """One metric: its metrics.json name, a table label, its unit (a key of UNITS), whether Table 1
    lists it, and what it is (with the source of its definition)."""

    name: str
    label: str
    unit: str
    table1: bool
    description: str

    @property
    def units(self) -> Unit:
        return UNITS[self.unit]


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("rank1", "Rank-1", "fraction", True, "CMC at rank 1: queries whose first true match is ranked first"),
    Metric("rank5", "Rank-5", "fraction", True, "CMC at rank 5"),
    Metric("rank10", "Rank-10", "fraction", True, "CMC at rank 10"),
    Metric("rank20", "Rank-20", "fraction", True, "CMC at rank 20"),
    Metric("mAP", "mAP", "fraction", True,
           "mean average precision, step convention (mean precision at each true match; torchreid, fast-reid)"),
    Metric("mAP_trapezoid", "mAP, trapezoid", "fraction", True,
           "mean average precision, trapezoid rule on the precision-recall curve (official Market-1501 code)"),
    Metric("mINP", "mINP", "fraction", False, "mean inverse negative penalty (Ye et al., TPAMI 2021; fast-reid)"),
)}

# Protocols in metrics.json order: (name, label). The name is the prefix without its slash;
# "single" (single query, no re-ranking) has no prefix.
PROTOCOL_LABELS: dict[str, str] = {
    "single": "single query",
    "rerank": "single query + re-ranking",
    "multi_query_mean": "multi-query (mean pooling)",
    "multi_query_mean/rerank": "multi-query (mean) + re-ranking",
    "multi_query_max": "multi-query (max pooling)",
    "multi_query_max/rerank": "multi-query (max) + re-ranking",
}
PROTOCOLS = tuple(PROTOCOL_LABELS)
SINGLE = "single"
RERANK_SUFFIX = "rerank"
MULTI_QUERY = "multi_query_"  # multi-query protocols: MULTI_QUERY + pooling (+ "/rerank")


def protocol(pooling: str | None = None, rerank: bool = False) -> str:
    """The protocol name of single query (``pooling`` None) or multi-query with that pooling,
    plain or re-ranked: ``protocol() == "single"``, ``protocol("max", True) == "multi_query_max/rerank"``.
    ValueError when no such protocol is registered."""
    base = SINGLE if pooling is None else MULTI_QUERY + pooling
    name = (RERANK_SUFFIX if base == SINGLE else base + SEPARATOR + RERANK_SUFFIX) if rerank else base
    if name not in PROTOCOL_LABELS:
        raise ValueError(f"no protocol for pooling={pooling!r}, rerank={rerank}; the protocols are "
                         f"{', '.join(PROTOCOLS)}")
    return name


def protocol_of(name: str) -> str | None:
    """The protocol whose prefix a metrics.json-style key carries, whatever follows it (a metric, the
    curve, an interval bound such as ``rerank/mAP_ci95_low``): ``"single"`` for no prefix, None for
    an unknown prefix."""
    head = name.rpartition(SEPARATOR)[0]
    return SINGLE if not head else head if head in PROTOCOL_LABELS else None


def is_multi_query(protocol_name: str | None) -> bool:
    """Whether a protocol pools the queries' gt_bbox images (Market-1501's multi-query)."""
    return protocol_name is not None and protocol_name.startswith(MULTI_QUERY)


def register(metric: Metric) -> Metric:
    """Add a metric (e.g. from a plugin or a test); ValueError if the name or unit is taken/unknown."""
    if metric.unit not in UNITS:
        raise ValueError(f"metric {metric.name!r}: unit {metric.unit!r} is unknown; choose one of {', '.join(UNITS)}")
    if metric.name in METRICS or metric.name == CURVE or SEPARATOR in metric.name:
        raise ValueError(f"metric name {metric.name!r} is already a metric, the curve, or holds {SEPARATOR!r}")
    METRICS[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric added with ``register`` (tests)."""
    METRICS.pop(name, None)


def prefix(protocol: str) -> str:
    """``''`` for single query, else ``'<protocol>/'``; ValueError for an unknown protocol."""
    if protocol not in PROTOCOL_LABELS:
        raise ValueError(f"protocol {protocol!r} is unknown; choose one of {', '.join(PROTOCOLS)}")
    return "" if protocol == SINGLE else protocol + SEPARATOR


def key(protocol: str, metric: str) -> str:
    """The metrics.json key of ``metric`` (a name in METRICS, or ``cmc``) under ``protocol``:
    ``key("single", "rank1") == "rank1"``, ``key("rerank", "mAP") == "rerank/mAP"``."""
    if metric not in METRICS and metric != CURVE:
        raise ValueError(f"metric {metric!r} is not in reid.metrics.keys.METRICS ({', '.join(METRICS)})")
    return prefix(protocol) + metric


def curve_key(protocol: str) -> str:
    """The metrics.json key of ``protocol``'s CMC curve (``cmc``, ``rerank/cmc``, ...)."""
    return key(protocol, CURVE)


def parse(name: str) -> tuple[str, str] | None:
    """(protocol, metric name) of a metrics.json key, or None when it is not a metric or curve key
    (provenance such as ``seed``, ``config_hash``; an unknown metric)."""
    protocol, _, metric = name.rpartition(SEPARATOR)
    protocol = protocol or SINGLE
    if protocol not in PROTOCOL_LABELS or (metric not in METRICS and metric != CURVE):
        return None
    return protocol, metric


def is_metric(name: str) -> bool:
    """Whether ``name`` is a scalar metric's key (not a curve, not provenance)."""
    parsed = parse(name)
    return parsed is not None and parsed[1] != CURVE


def is_curve(name: str) -> bool:
    parsed = parse(name)
    return parsed is not None and parsed[1] == CURVE


def metric_of(name: str) -> Metric:
    """The Metric behind a scalar metrics.json key; KeyError naming the key otherwise."""
    parsed = parse(name)
    if parsed is None or parsed[1] == CURVE:
        raise KeyError(f"{name!r} is not a metric key of reid.metrics.keys (metrics: {', '.join(METRICS)}; "
                       f"protocols: {', '.join(PROTOCOLS)})")
    return METRICS[parsed[1]]


def unit_of(name: str) -> Unit:
    return metric_of(name).units


def check(name: str, value: float) -> None:
    """ValueError naming the key when ``value`` is NaN or outside its unit's range (a fraction in [0, 1], ...)."""
    unit = unit_of(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or not unit.low <= value <= unit.high:
        what = {"fraction": "a fraction in [0, 1]"}.get(unit.name, f"a {unit.name} in [{unit.low}, {unit.high}]")
        raise ValueError(f"{name} = {value!r} is not {what}")


def format_value(name: str, value: float | None, signed: bool = False) -> str:
    """A stored value of key ``name`` as a table prints it: ``0.3727`` -> ``'37.27'`` for a fraction."""
    return unit_of(name).format(value, signed)


def format_interval(name: str, value: float, low: float, high: float, signed: bool = False) -> str:
    """``'37.27 [33.10, 41.52]'``: a stored value and its interval in the key's display unit."""
    unit = unit_of(name)
    return f"{unit.format(value, signed)} [{unit.format(low, signed)}, {unit.format(high, signed)}]"
