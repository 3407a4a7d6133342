"""The metric registry: what each metric is and how it is computed, and the metrics.json keys.

A metric is ONE registration, a `Metric`: its metrics.json name, table label and unit; the per-query
column it is computed from (a `Column`: one value per query with a true match, computed from the
positions of that query's true matches, a column of per_query.csv); how a query's column value
becomes the value that is averaged (``per_query``: ``first_match_rank <= 5`` for Rank-5); and how
those values reduce, over the queries with a true match, to the metric and to an identity-bootstrap
replicate (a `Reduction`; every built-in metric is `MEAN`). Everything else follows from the
registry: the per-query columns reid.metrics.rank computes (`compute_columns`), each protocol's
scalars in metrics.json (`metric_values`), per_query.csv's columns and the ci95 intervals
(reid.metrics.uncertainty), the MLflow names (`mlflow_name`), Table 1's rows (``table1``) and the
paired comparisons (``paired``). Adding a metric is one `register` call, from inside the package or
from a plugin module (``plugins:`` in the config; docs/extending.md has a worked example).

metrics.json is flat (docs/architecture.md): a metric of the single-query protocol is its bare name
(``rank1``, ``mAP``), any other protocol's carries the protocol as a prefix (``rerank/mAP``,
``multi_query_mean/rerank/rank1``); each protocol's CMC curve is ``<prefix>cmc``. Keys are built
(``key``, ``curve_key``) and read back (``parse``) here and nowhere else, and every table prints a
value through ``format_value`` / ``format_interval`` / ``Unit``, so that a metric that is not a
fraction (a mean rank, milliseconds per query) prints as what it is.

The built-in definitions (Zheng et al., ICCV 2015, and the official Market-1501 code; Ye et al.,
TPAMI 2021, for mINP), from the positions r_1 < ... < r_m (0-based, in the ranking with junk and
same-camera views removed, see reid.metrics.rank) of a query's m true matches:
  * ``first_match_rank`` = r_1 + 1; Rank-k = share of queries with ``first_match_rank <= k``
    (the CMC at k), for k in REPORTED_RANKS;
  * ``ap`` (step convention: torchreid, fast-reid) = mean over k of k / (r_k + 1); mAP = mean ``ap``;
  * ``ap_trapezoid`` (official Market-1501 code) = mean over k of (precision just before the k-th
    hit + precision at it) / 2, precision just before = (k - 1) / r_k, or 1 when r_k = 0;
  * ``inp`` (fast-reid's mINP) = m / (r_m + 1); mINP = mean ``inp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

SEPARATOR = "/"  # between a protocol and a metric name
CURVE = "cmc"    # a protocol's CMC curve, a list of fractions (not a scalar metric)
REPORTED_RANKS = (1, 5, 10, 20)  # the CMC ranks reported as metrics (rank1, rank5, ...)


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


# ---------------------------------------------------------------- how a metric is computed

@dataclass(frozen=True)
class Matches:
    """The true matches of one protocol's valid queries (those with at least one), valid queries in
    query order, each query's matches in ranking order.

    rank: float64 (M,), the 0-based position r of every true match in its query's ranking (junk and
        same-camera views removed); hit: float64 (M,), its 1-based number k among its query's
        matches; starts: int64 (V,), where each valid query's matches begin in ``rank``;
        counts: float64 (V,), m, its number of true matches; first, last: int64 (V,), r_1 and r_m.
    """

    rank: np.ndarray
    hit: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    first: np.ndarray
    last: np.ndarray

    @classmethod
    def of(cls, qidx: np.ndarray, ranks: np.ndarray, num_q: int) -> tuple[Matches, np.ndarray]:
        """(Matches, valid mask (num_q,) bool) from the (query index, 0-based rank) pairs of all true
        matches, sorted by query then rank (reid.metrics.rank.match_ranks)."""
        counts = np.bincount(qidx, minlength=num_q)
        valid = counts > 0
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        starts = offsets[valid]
        hit = np.arange(ranks.size) - np.repeat(offsets, counts) + 1.0
        return cls(rank=ranks.astype(np.float64), hit=hit, starts=starts, counts=counts[valid].astype(np.float64),
                   first=ranks[starts], last=ranks[starts + counts[valid] - 1]), valid

    def per_query_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of a per-match array over each valid query's matches."""
        return np.add.reduceat(values, self.starts)


@dataclass(frozen=True)
class Column:
    """A per-query result: one value per query with a true match, a column of per_query.csv.

    compute: Matches -> (V,) values, valid queries in order. integer: an int64 column, 0 in memory and
    empty in per_query.csv for a query without a true match (else float64, NaN / empty).
    """

    name: str
    compute: Callable[[Matches], np.ndarray]
    integer: bool = False
    description: str = ""


@dataclass(frozen=True)
class Reduction:
    """How a metric's per-query values (one per query with a true match) become one number: a ratio
    of sums, sum(numerator) / sum(denominator) over those queries, ``terms(values)`` giving the two
    (V,) float64 arrays. The identity bootstrap (reid.metrics.uncertainty) sums both per query
    identity; a replicate is the same ratio with each identity's sums weighted by how often it is
    drawn, so any metric of this form gets its interval with no code of its own."""

    name: str
    terms: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

    def value(self, values: np.ndarray) -> float:
        num, den = self.terms(values)
        return float(np.sum(num) / np.sum(den))


# the mean over the queries with a true match: sum(values) / count, as numpy.mean sums (pairwise)
MEAN = Reduction("mean over the queries with a true match", lambda v: (v, np.ones_like(v)))


def _as_float(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class Metric:
    """One metric: its metrics.json name, a table label, its unit (a key of UNITS), whether Table 1
    lists it, what it is (with the source of its definition), and how it is computed: ``column``
    (its per-query column), ``per_query`` (column values of the valid queries -> the float64 values
    ``reduce`` reduces; default: the column itself). ``headline``: MLflow logs the single-query
    value under the bare name (else under ``single_query/``); ``paired``: the paired comparisons
    of models (comparisons.json, the tables' paired sections) test it."""

    name: str
    label: str
    unit: str
    table1: bool
    description: str
    column: Column
    per_query: Callable[[np.ndarray], np.ndarray] = _as_float
    reduce: Reduction = MEAN
    headline: bool = False
    paired: bool = False

    @property
    def units(self) -> Unit:
        return UNITS[self.unit]

    def values(self, per_query: Mapping[str, np.ndarray]) -> np.ndarray:
        """The per-query values of the valid queries from a protocol's per-query columns."""
        return self.per_query(np.asarray(per_query[self.column.name])[valid_queries(per_query)])

    def value(self, per_query: Mapping[str, np.ndarray]) -> float:
        """The metric of one protocol from its per-query columns."""
        return self.reduce.value(self.values(per_query))


def _ap_step(m: Matches) -> np.ndarray:
    return m.per_query_sum(m.hit / (m.rank + 1.0)) / m.counts


def _ap_trapezoid(m: Matches) -> np.ndarray:
    prec_at = m.hit / (m.rank + 1.0)
    prec_before = np.where(m.rank > 0, (m.hit - 1.0) / np.maximum(m.rank, 1.0), 1.0)
    return m.per_query_sum((prec_before + prec_at) / 2.0) / m.counts


FIRST_MATCH_RANK = Column("first_match_rank", lambda m: m.first + 1, integer=True,
                          description="1-based rank of the first true match (0 / empty: no true match)")
AP = Column("ap", _ap_step, description="average precision, step convention")
AP_TRAPEZOID = Column("ap_trapezoid", _ap_trapezoid, description="average precision, trapezoid rule")
INP = Column("inp", lambda m: m.counts / (m.last + 1.0), description="inverse negative penalty")


def cmc_metric(k: int) -> Metric:
    """Rank-k: the share of valid queries whose first true match is within the first k (CMC at k)."""
    return Metric(f"rank{k}", f"Rank-{k}", "fraction", True,
                  "CMC at rank 1: queries whose first true match is ranked first" if k == 1 else f"CMC at rank {k}",
                  FIRST_MATCH_RANK, per_query=lambda f: (f <= k).astype(np.float64), headline=True, paired=k == 1)


COLUMNS: dict[str, Column] = {}
METRICS: dict[str, Metric] = {}


def valid_queries(per_query: Mapping[str, np.ndarray]) -> np.ndarray:
    """Which queries have a true match (``first_match_rank > 0``), from one protocol's columns."""
    return np.asarray(per_query[FIRST_MATCH_RANK.name]) > 0


def register(metric: Metric) -> Metric:
    """Add a metric, and its column if new (from the package, a plugin or a test).

    ValueError when the unit is unknown, the name is taken (or is the curve, or holds the
    separator), or another column is registered under its column's name."""
    if metric.unit not in UNITS:
        raise ValueError(f"metric {metric.name!r}: unit {metric.unit!r} is unknown; choose one of {', '.join(UNITS)}")
    if metric.name in METRICS or metric.name == CURVE or SEPARATOR in metric.name:
        raise ValueError(f"metric name {metric.name!r} is already a metric, the curve, or holds {SEPARATOR!r}")
    taken = COLUMNS.get(metric.column.name)
    if taken is not None and taken is not metric.column:
        raise ValueError(f"metric {metric.name!r}: another per-query column is already named "
                         f"{metric.column.name!r}; reuse reid.metrics.keys.COLUMNS[{metric.column.name!r}] or rename it")
    COLUMNS.setdefault(metric.column.name, metric.column)
    METRICS[metric.name] = metric
    return metric


for _m in (*(cmc_metric(k) for k in REPORTED_RANKS),
           Metric("mAP", "mAP", "fraction", True,
                  "mean average precision, step convention (mean precision at each true match; torchreid, fast-reid)",
                  AP, headline=True, paired=True),
           Metric("mAP_trapezoid", "mAP, trapezoid", "fraction", True,
                  "mean average precision, trapezoid rule on the precision-recall curve (official Market-1501 code)",
                  AP_TRAPEZOID),
           Metric("mINP", "mINP", "fraction", False, "mean inverse negative penalty (Ye et al., TPAMI 2021; fast-reid)",
                  INP)):
    register(_m)
del _m


def compute_columns(qidx: np.ndarray, ranks: np.ndarray, num_q: int) -> dict[str, np.ndarray]:
    """Every registered per-query column of one protocol, queries in order (see `Column`), from the
    (query index, 0-based rank) pairs of all true matches, sorted by query then rank. Raises
    ValueError naming the column when one of its values is NaN or infinite."""
    from ._inputs import finite_result

    matches, valid = Matches.of(qidx, ranks, num_q)
    out = {}
    for col in COLUMNS.values():
        values = finite_result(np.asarray(col.compute(matches)), col.name)
        full = np.zeros(num_q, np.int64) if col.integer else np.full(num_q, np.nan, np.float64)
        full[valid] = values
        out[col.name] = full
    return out


def metric_values(per_query: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Every registered metric whose column ``per_query`` has (one protocol's columns), in registry
    order: ``{"rank1": ..., "mAP": ...}``. The values metrics.json holds."""
    return {m.name: m.value(per_query) for m in METRICS.values() if m.column.name in per_query}


def paired_metrics() -> tuple[str, ...]:
    """The metrics paired comparisons test (``Metric.paired``), in registry order."""
    return tuple(m.name for m in METRICS.values() if m.paired)


def headline_metrics() -> tuple[str, ...]:
    """The metrics reported first (``Metric.headline``: CMC ranks and mAP), in registry order."""
    return tuple(m.name for m in METRICS.values() if m.headline)


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


def mlflow_name(name: str) -> str | None:
    """The name MLflow logs a metrics.json-style key under (a metric, or an interval bound such as
    ``rank1_ci95_low``), None for one it leaves to metrics.json. The headline metrics of the single
    query protocol keep their bare names, so that the compare view (which sorts metric names) and the
    Models page list mAP and rank1 first; the other single-query numbers go under ``single_query/``;
    the re-ranked protocol keeps its ``rerank/`` prefix, which sorts after rank*. The multi-query
    protocols (Market-1501 only, numbers whose multi_query_ prefix would sort between mAP and rank1)
    stay in metrics.json and Table 3 rather than in the metric list."""
    protocol = protocol_of(name)
    if is_multi_query(protocol):
        return None
    metric = METRICS.get(name)
    if protocol == SINGLE and (metric is None or not metric.headline):
        return f"single_query/{name}"
    return name


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
