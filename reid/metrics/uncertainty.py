"""Uncertainty of re-ID metrics: per-query results, identity (cluster) bootstrap intervals, paired tests.

Depends on numpy only (the tests check it against scipy.stats.bootstrap); importable on its own:

    from reid.metrics import uncertainty as U
    a = U.read_per_query_csv("results/market/baseline/seed0/per_query.csv")
    b = U.read_per_query_csv("results/market/mutual/seed0/per_query.csv")
    U.model_intervals([a])          # {"estimate": {key: value}, "ci95": {key: [low, high]}}
    U.paired_difference(a, b)       # {"rank1": {"difference", "ci95", "p_value", "significant"}, "mAP": ...}

Per-query table (`PerQuery`, one model, one seed; the rows of ``per_query.csv``)
    For every protocol (``PROTOCOLS``: ``single``, ``rerank``, ``multi_query_mean``,
    ``multi_query_mean/rerank``, ``multi_query_max``, ``multi_query_max/rerank``; the names are the
    metrics.json prefixes without the slash, ``single`` having none) and every query, in query order,
    the registered per-query columns of reid.metrics.keys (``COLUMNS``): ``first_match_rank``
    (1-based; 0 in memory and empty in the CSV when the query has no true match), ``ap`` (step
    convention), ``ap_trapezoid``, ``inp`` (NaN / empty without a true match), then any column a
    plugin registered. The scalar metrics are exactly what each metric's registration makes of these
    rows (`estimates`, reid.metrics.keys.Metric.value): Rank-k = share of valid queries with
    ``first_match_rank <= k``, mAP = mean ``ap``, mINP = mean ``inp``.

Intervals: percentile bootstrap over query identities (cluster bootstrap)
    Queries of one person share their gallery matches, so their results are correlated; resampling
    single queries understates the spread. A bootstrap replicate draws the query identities (the
    distinct pids of the queries that have a true match) with replacement, each drawn identity bringing
    all its queries (Davison & Hinkley, *Bootstrap Methods and their Application*, 1997, sec. 3.8
    "hierarchical data"; Field & Welsh, JRSS-B 69:369, 2007). Every metric is then a ratio of sums
    over identities (each metric's reid.metrics.keys.Reduction), e.g. Rank-1 = sum of hits / sum of
    valid queries, and a replicate is ``(w @ hits) / (w @ valid)`` with ``w`` the identity counts of
    the draw: index arithmetic, one matrix product for all metrics and protocols. The 95% interval is the 2.5th and 97.5th
    percentile of the replicates (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993,
    ch. 13; ``numpy.quantile``, linear interpolation).

Several seeds (training runs evaluated on the same queries)
    Seed and query identity are crossed factors (every seed is scored on every identity), so a
    replicate draws the seeds with replacement and, independently, one identity resample shared by
    the drawn seeds; its value is the mean over the drawn seeds of each seed's replicate
    ("resample seeds, then identities": rows and columns of the seed x identity array resampled
    independently, the "pigeonhole" bootstrap of Owen, Ann. Appl. Stat. 1:386, 2007, slightly
    conservative there; on crossed designs see McCullagh, Bernoulli 6:285, 2000). The point estimate
    is the mean over seeds. With one seed this is exactly the single-model interval.

Paired comparisons
    Two models on the same queries (and, with several seeds, the same seeds) are resampled with the
    *same* identity (and seed) draws, so the replicate difference B - A keeps the pairing. The p-value
    is two-sided, from the same replicates: ``min(1, 2 min((#{d* <= 0} + 1), (#{d* >= 0} + 1)) / (B + 1))``,
    about the smallest level at which the percentile interval excludes 0 (Efron & Tibshirani 1993,
    ch. 16; Davison & Hinkley 1997, ch. 4, for the +1 of a Monte Carlo p-value, whose floor is
    2 / (B + 1)). An interval that contains 0 means "no significant difference at 95%".

Why not scipy.stats.bootstrap: it resamples one set of observations per call with indices it does
not expose. Here all 42 metric keys and every model of a comparison must share one identity draw
(the pairing), the seeds are a second, crossed resampling level it cannot express, and 10,000
resamples of 42 keys fit in well under a second only as one matrix product. The tests check these
intervals against scipy.stats.bootstrap (per-identity paired arrays, ratio-of-sums statistic).

Determinism: a draw is ``numpy.random.default_rng(seed)``: first the identity indices
(resamples x identities), then the seed indices (resamples x seeds); `resample_indices` returns them.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from . import keys as _keys  # the metric registry: protocols, key spelling, per-query columns, metrics
from .keys import PROTOCOLS

LABEL_COLUMNS = ("protocol", "query", "pid", "camid")  # per_query.csv's first columns; the results follow
CONFIDENCE = 0.95
QUANTILES = (0.025, 0.975)  # written out: (1 - 0.95) / 2 is 0.025000000000000022 in floating point
DEFAULT_RESAMPLES = 10_000


def metric_key(protocol: str, metric: str) -> str:
    """The metrics.json key: ``rank1`` for the single-query protocol, ``rerank/rank1`` for ``rerank``
    (reid.metrics.keys.key)."""
    return _keys.key(protocol, metric)


@dataclass(frozen=True)
class PerQuery:
    """One model's (one seed's) per-query results; ``results[protocol][column]`` has one entry per query.

    queries: str array of image paths (relative to the dataset folder); pids, camids: int64.
    results: protocol -> {column: array}, the per-query columns of reid.metrics.keys.COLUMNS
    ("first_match_rank": int64, 0 = no true match; "ap", "ap_trapezoid", "inp": float64, NaN = no
    true match; ...), the same columns in every protocol; protocols in `PROTOCOLS` order, any subset.
    """

    queries: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    results: dict

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(self.results)

    @property
    def columns(self) -> tuple[str, ...]:
        """The per-query columns the table holds (reid.metrics.keys.COLUMNS names), in order."""
        return tuple(next(iter(self.results.values())))


def per_query_table(per_query: Mapping, queries: Sequence[str], pids, camids, *,
                    columns: Sequence[str] | None = None) -> PerQuery:
    """Check and wrap the ``per_query`` arrays of ``compute_metrics`` (see `PerQuery`).

    columns: the per-query columns to keep, names of reid.metrics.keys.COLUMNS with
    ``first_match_rank`` among them (default: every registered column); other entries are ignored.
    Raises ValueError naming the protocol and column when a column is unknown or missing, an array
    has the wrong length, a rank is negative, or validity (rank > 0) and the NaN pattern of a float
    column disagree.
    """
    n = len(queries)
    qs = np.asarray([str(q) for q in queries], dtype=object)
    pids = np.asarray(pids, dtype=np.int64).reshape(-1)
    camids = np.asarray(camids, dtype=np.int64).reshape(-1)
    if len(pids) != n or len(camids) != n:
        raise ValueError(f"per-query table: {n} queries but {len(pids)} pids and {len(camids)} camids")
    names = _column_names(tuple(_keys.COLUMNS) if columns is None else tuple(columns))
    unknown = [p for p in per_query if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"per-query table: unknown protocol(s) {unknown}, expected some of {PROTOCOLS}")
    if not per_query:
        raise ValueError("per-query table: no protocol")
    results = {}
    for protocol in (p for p in PROTOCOLS if p in per_query):
        cols = per_query[protocol]
        missing = [c for c in names if c not in cols]
        if missing:
            raise ValueError(f"per-query table, protocol {protocol}: missing column(s) {missing}")
        results[protocol] = _checked_columns(protocol, cols, names, n)
    return PerQuery(queries=qs, pids=pids, camids=camids, results=results)


def _column_names(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [c for c in names if c not in _keys.COLUMNS]
    if unknown:
        raise ValueError(f"per-query column(s) {unknown} are not registered (reid.metrics.keys.COLUMNS: "
                         f"{', '.join(_keys.COLUMNS)}); load the plugin that registers their metric")
    if _keys.FIRST_MATCH_RANK.name not in names or len(set(names)) != len(names):
        raise ValueError(f"per-query columns {list(names)}: need {_keys.FIRST_MATCH_RANK.name!r}, each once")
    return names


def _checked_columns(protocol: str, cols: Mapping, names: tuple[str, ...], n: int) -> dict[str, np.ndarray]:
    """One protocol's columns as int64 / float64 arrays of length n, checked (see per_query_table)."""
    out = {}
    for c in names:
        if _keys.COLUMNS[c].integer:
            a = np.asarray(cols[c])
            if np.issubdtype(a.dtype, np.floating):  # NaN = no true match, as a float column gives it
                a = np.where(np.isnan(a), 0, a)
            out[c] = a.astype(np.int64).reshape(-1)
        else:
            out[c] = np.asarray(cols[c], dtype=np.float64).reshape(-1)
        if out[c].shape != (n,):
            raise ValueError(f"per-query table, protocol {protocol}: column {c} has shape {out[c].shape}, "
                             f"expected ({n},)")
    if (out[_keys.FIRST_MATCH_RANK.name] < 0).any():
        raise ValueError(f"per-query table, protocol {protocol}: negative first_match_rank")
    valid = _keys.valid_queries(out)
    for c in names:
        integer = _keys.COLUMNS[c].integer
        if ((out[c] != 0) & ~valid).any() if integer else (np.isnan(out[c]) == valid).any():
            raise ValueError(f"per-query table, protocol {protocol}: column {c} must be empty "
                             f"({'0' if integer else 'NaN'}) exactly where first_match_rank is (no true match)")
    return out


# ---------------------------------------------------------------- the CSV file

def per_query_csv(table: PerQuery) -> str:
    """The text of per_query.csv: a header (`LABEL_COLUMNS`, then the table's columns), then one row
    per (protocol, query), protocols in order.

    Floats are written with Python's shortest round-trip repr, so reading them back gives the same
    float64 bits; an empty field means the query has no true match.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow((*LABEL_COLUMNS, *table.columns))
    for protocol, cols in table.results.items():
        valid = _keys.valid_queries(cols).tolist()
        fields = [[str(v) if ok else "" for v, ok in zip(a.tolist(), valid)] if _keys.COLUMNS[c].integer
                  else ["" if math.isnan(v) else repr(v) for v in a.tolist()] for c, a in cols.items()]
        for i, (q, pid, cam) in enumerate(zip(table.queries, table.pids.tolist(), table.camids.tolist())):
            w.writerow([protocol, q, pid, cam, *(f[i] for f in fields)])
    return buf.getvalue()


def read_per_query_csv(path: str | Path) -> PerQuery:
    """Load a per_query.csv written by the evaluate stage. Raises ValueError naming the file and line,
    and for a column no registered metric defines (a plugin's, not loaded)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: per-query file not found") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header[:len(LABEL_COLUMNS)]) != LABEL_COLUMNS:
        raise ValueError(f"{path}: header {header} does not start with {list(LABEL_COLUMNS)}")
    try:
        names = _column_names(tuple(header[len(LABEL_COLUMNS):]))
    except ValueError as e:
        raise ValueError(f"{path}: header: {e}") from None
    rows: dict[str, list] = {}
    for line, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line}: {len(row)} fields, expected {len(header)}")
        rows.setdefault(row[0], []).append((line, row))
    if not rows:
        raise ValueError(f"{path}: no rows")
    first = None
    per_query = {}
    for protocol, prow in rows.items():
        if protocol not in PROTOCOLS:
            raise ValueError(f"{path}, line {prow[0][0]}: unknown protocol {protocol!r}, expected one of {PROTOCOLS}")
        try:
            labels = [(r[1], int(r[2]), int(r[3])) for _, r in prow]
            per_query[protocol] = {c: _parse_column(c, [r[j] for _, r in prow])
                                   for j, c in enumerate(names, start=len(LABEL_COLUMNS))}
        except ValueError as e:
            raise ValueError(f"{path}, protocol {protocol}: not a number ({e})") from None
        if first is None:
            first = labels
        elif labels != first:
            raise ValueError(f"{path}: protocol {protocol} lists other queries (or another order) than "
                             f"protocol {next(iter(rows))}")
    try:
        return per_query_table(per_query, [q for q, _, _ in first], [p for _, p, _ in first],
                               [c for _, _, c in first], columns=names)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _parse_column(name: str, cells: list[str]) -> np.ndarray:
    if _keys.COLUMNS[name].integer:
        return np.asarray([int(x) if x else 0 for x in cells], dtype=np.int64)
    return np.asarray([float(x) if x else math.nan for x in cells], dtype=np.float64)


# ---------------------------------------------------------------- point estimates

def estimates(table: PerQuery) -> dict[str, float]:
    """Every scalar metric key (each registered metric whose column the table has, under each
    protocol's prefix), in its unit.

    Each metric's registration (reid.metrics.keys.Metric.value) on the valid queries
    (``first_match_rank > 0``), in query order, which is how metrics.json's values are defined.
    Raises ValueError when a protocol has no valid query.
    """
    out = {}
    for protocol, cols in table.results.items():
        if not _keys.valid_queries(cols).any():
            raise ValueError(f"protocol {protocol}: no query has a true match")
        for metric, value in _keys.metric_values(cols).items():
            out[metric_key(protocol, metric)] = value
    return out


# ---------------------------------------------------------------- resampling

def resample_indices(n_identities: int, n_seeds: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The draws of a bootstrap: (identity indices (resamples x n_identities), seed indices (resamples x n_seeds)).

    Both int64, drawn with replacement from ``numpy.random.default_rng(seed)``, identities first.
    """
    if resamples < 1 or n_identities < 1 or n_seeds < 1:
        raise ValueError(f"resample_indices: resamples={resamples}, identities={n_identities}, "
                         f"seeds={n_seeds} must all be positive")
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n_identities, size=(resamples, n_identities), dtype=np.int64)
    seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds), dtype=np.int64)
    return ids, seeds


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of n items is drawn in each row of idx, as float64 (exact small integers)."""
    b = idx.shape[0]
    flat = idx + (np.arange(b, dtype=np.int64) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _check_same_queries(tables: Sequence[PerQuery]) -> None:
    ref = tables[0]
    for i, t in enumerate(tables[1:], start=1):
        if (len(t.queries) != len(ref.queries) or not np.array_equal(t.pids, ref.pids)
                or not np.array_equal(t.camids, ref.camids) or not np.array_equal(t.queries, ref.queries)):
            raise ValueError(f"per-query table {i} lists other queries (or another order) than table 0: "
                             f"intervals and comparisons need the same queries")
        if t.protocols != ref.protocols:
            raise ValueError(f"per-query table {i} has protocols {t.protocols}, table 0 has {ref.protocols}")
        for p in ref.protocols:
            if not np.array_equal(t.results[p]["first_match_rank"] > 0, ref.results[p]["first_match_rank"] > 0):
                raise ValueError(f"per-query tables 0 and {i} disagree, protocol {p}, on which queries have a "
                                 f"true match: they were not evaluated on the same query/gallery split")


def identities(table: PerQuery) -> np.ndarray:
    """The resampled units: sorted distinct pids of the queries with a true match in any protocol."""
    valid = np.zeros(len(table.pids), dtype=bool)
    for cols in table.results.values():
        valid |= cols["first_match_rank"] > 0
    if not valid.any():
        raise ValueError("no query has a true match: nothing to resample")
    return np.unique(table.pids[valid])


def _identity_sums(table: PerQuery, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per identity: the numerators and denominators (identities x keys) of every metric key, the
    sums over the identity's valid queries of its reduction's terms (reid.metrics.keys.Reduction)."""
    pos = np.searchsorted(ids, table.pids)
    pos = np.minimum(pos, len(ids) - 1)
    member = ids[pos] == table.pids
    n = len(ids)
    nums, dens, names = [], [], []
    for protocol, cols in table.results.items():
        valid = _keys.valid_queries(cols)
        cluster = pos[valid & member]
        for metric in (m for m in _keys.METRICS.values() if m.column.name in cols):
            num, den = metric.reduce.terms(metric.values(cols)[member[valid]])
            nums.append(np.bincount(cluster, weights=num, minlength=n))
            dens.append(np.bincount(cluster, weights=den, minlength=n))
            names.append(metric_key(protocol, metric.name))
    return np.stack(nums, axis=1), np.stack(dens, axis=1), names


class Bootstrap:
    """One set of draws shared by every model it scores (what makes comparisons paired).

    tables_like: a per-query table of the queries (any model, any seed) that fixes the identities.
    n_seeds: how many seeds each model brings (1 = identities only).
    """

    def __init__(self, tables_like: PerQuery, n_seeds: int = 1, resamples: int = DEFAULT_RESAMPLES, seed: int = 0):
        self.ids = identities(tables_like)
        self.reference = tables_like
        self.n_seeds = n_seeds
        self.resamples = resamples
        self.seed = seed
        id_idx, self.seed_idx = resample_indices(len(self.ids), n_seeds, resamples, seed)
        self.weights = _counts(id_idx, len(self.ids))  # resamples x identities

    def replicates(self, tables: Sequence[PerQuery]) -> tuple[np.ndarray, list[str]]:
        """(resamples x keys) replicate values of one model (one table per seed, in seed order), keys."""
        tables = list(tables)
        if len(tables) != self.n_seeds:
            raise ValueError(f"{len(tables)} per-query tables (seeds) given, the bootstrap was drawn for {self.n_seeds}")
        _check_same_queries([self.reference, *tables])
        per_seed = []
        keys = None
        for t in tables:
            num, den, keys = _identity_sums(t, self.ids)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_seed.append((self.weights @ num) / (self.weights @ den))
        rows = np.arange(self.resamples)
        stacked = np.stack(per_seed)  # seeds x resamples x keys
        acc = np.zeros_like(per_seed[0])
        for j in range(self.n_seeds):  # in draw order: a brute-force loop sums the same way
            acc += stacked[self.seed_idx[:, j], rows]
        return acc / self.n_seeds, keys


def _percentiles(reps: np.ndarray) -> np.ndarray:
    """(2 x keys) 2.5th and 97.5th percentiles; a replicate without a valid query (NaN) is left out."""
    if np.isnan(reps).any():
        return np.nanquantile(reps, QUANTILES, axis=0)
    return np.quantile(reps, QUANTILES, axis=0)


def _point(tables: Sequence[PerQuery]) -> dict[str, float]:
    per_seed = [estimates(t) for t in tables]
    return {k: float(np.mean([e[k] for e in per_seed])) for k in per_seed[0]}


def model_intervals(tables: PerQuery | Sequence[PerQuery], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                    bootstrap: Bootstrap | None = None, replicates=None) -> dict:
    """Point estimates and 95% percentile intervals of every scalar metric key of one model.

    tables: one `PerQuery`, or one per seed (same queries). Returns {"estimate": {key: fraction},
    "ci95": {key: [low, high]}}; with several seeds the estimate is the mean over seeds and the
    interval resamples seeds, then identities. Deterministic for a given ``seed``.
    bootstrap, replicates: reuse a `Bootstrap` (and its ``replicates(tables)``, a (values, keys) pair).
    """
    tables = [tables] if isinstance(tables, PerQuery) else list(tables)
    bs = bootstrap or Bootstrap(tables[0], len(tables), resamples, seed)
    reps, keys = replicates or bs.replicates(tables)
    lo, hi = _percentiles(reps)
    est = _point(tables)
    return {"estimate": {k: est[k] for k in keys},
            "ci95": {k: [float(lo[i]), float(hi[i])] for i, k in enumerate(keys)}}


def _p_value(diffs: np.ndarray) -> np.ndarray:
    b = diffs.shape[0]
    below = (np.sum(diffs <= 0, axis=0) + 1) / (b + 1)
    above = (np.sum(diffs >= 0, axis=0) + 1) / (b + 1)
    return np.minimum(1.0, 2 * np.minimum(below, above))


def compare_models(tables_a, tables_b, *, keys: Sequence[str] | None = None, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = 0, bootstrap: Bootstrap | None = None, replicates=None) -> dict:
    """Paired difference B - A of each metric key, its 95% interval and two-sided p-value.

    tables_a, tables_b: a `PerQuery` each, or lists of them, one per seed in the same seed order.
    keys: the metric keys (default: Rank-1 and mAP of every protocol both have).
    replicates: optional precomputed (reps_a, keys_a, reps_b, keys_b) from the same `bootstrap`.
    Returns {key: {"difference": fraction, "ci95": [low, high], "p_value": float,
    "significant": bool}}; ``significant`` is False when the interval contains 0.
    """
    ta = [tables_a] if isinstance(tables_a, PerQuery) else list(tables_a)
    tb = [tables_b] if isinstance(tables_b, PerQuery) else list(tables_b)
    if len(ta) != len(tb):
        raise ValueError(f"paired comparison: {len(ta)} seeds for A but {len(tb)} for B")
    _check_same_queries([*ta, *tb])
    bs = bootstrap or Bootstrap(ta[0], len(ta), resamples, seed)
    ra, ka, rb, kb = replicates or (*bs.replicates(ta), *bs.replicates(tb))
    if ka != kb:
        raise ValueError("paired comparison: the two models have different metric keys")
    if keys is None:
        keys = [metric_key(p, m) for p in ta[0].protocols for m in _keys.paired_metrics()]
    missing = [k for k in keys if k not in ka]
    if missing:
        raise ValueError(f"paired comparison: unknown metric key(s) {missing}")
    cols = [ka.index(k) for k in keys]
    diffs = rb[:, cols] - ra[:, cols]
    lo, hi = _percentiles(diffs)
    p = _p_value(diffs)
    pa, pb = _point(ta), _point(tb)
    out = {}
    for i, k in enumerate(keys):
        low, high = float(lo[i]), float(hi[i])
        out[k] = {"difference": pb[k] - pa[k], "ci95": [low, high], "p_value": float(p[i]),
                  "significant": not (low <= 0.0 <= high)}
    return out


def paired_difference(table_a, table_b, *, protocol: str = "single", resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0) -> dict:
    """Rank-1 and mAP of model B minus model A on the same queries, for one protocol.

    table_a, table_b: `PerQuery` (e.g. `read_per_query_csv` of two models' per_query.csv), or
    lists of them, one per seed, in the same seed order. Returns {"rank1": {...}, "mAP": {...}}, each
    {"difference", "ci95": [low, high], "p_value", "significant"} as `compare_models` (fractions).
    """
    paired = _keys.paired_metrics()
    res = compare_models(table_a, table_b, keys=[metric_key(protocol, m) for m in paired],
                         resamples=resamples, seed=seed)
    return {m: res[metric_key(protocol, m)] for m in paired}


__all__ = ["Bootstrap", "LABEL_COLUMNS", "PROTOCOLS", "PerQuery",
           "compare_models", "estimates", "identities", "metric_key", "model_intervals",
           "paired_difference", "per_query_csv", "per_query_table", "read_per_query_csv", "resample_indices"]
