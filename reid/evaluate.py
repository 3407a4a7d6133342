"""The evaluation stage: metrics.json from features.pt, every protocol the paper reports.

Single query and (where gt_bbox exists) multi-query with mean and max pooling, each with and
without k-reciprocal re-ranking; both AP conventions. Plain ``rank1``/``mAP`` are single-query,
step-AP values; other protocols carry a prefix (``rerank/``, ``multi_query_mean/``, ...).

Beside metrics.json the stage writes per_query.csv, one row per (protocol, query) (format:
reid.metrics.uncertainty), and metrics.json's scalars are exactly these rows' means. ``ci95`` holds a
95% percentile bootstrap interval over query identities for every scalar key.
"""

from __future__ import annotations

import math
from pathlib import Path

from reid import io
from reid.files import load_features
from reid.metrics import DEFAULT_MEMORY_GB, evaluate_protocols, flat_metrics, per_query_arrays
from reid.metrics import uncertainty

MULTI_QUERY_POOLINGS = ("mean", "max")


def compute_metrics(feats: dict, *, max_rank: int, rerank: dict, device=None,
                    memory_gb: float = DEFAULT_MEMORY_GB) -> dict:
    """Flat metrics of every protocol, plus "per_query": {protocol: {"first_match_rank" (int64, 1-based,
    0 = no true match), "ap", "ap_trapezoid", "inp" (float64, NaN = no true match)}} in query order, for
    the protocols of reid.metrics.uncertainty.PROTOCOLS ("single", "rerank", "multi_query_mean", ...).

    Queries are ranked in blocks within `memory_gb` GiB of working memory, and the gallery-side part
    of re-ranking is done once for all protocols (reid.metrics.stream); the numbers do not depend on
    the budget.
    """
    q, g = feats["query_feats"], feats["gallery_feats"]
    qp, gp, qc, gc = feats["query_pids"], feats["gallery_pids"], feats["query_camids"], feats["gallery_camids"]
    max_rank = min(max_rank, len(gp))
    rr = {"k1": rerank["k1"], "k2": rerank["k2"], "lambda_value": rerank["lambda"]}
    mq = None
    if "mq_feats" in feats and len(feats["mq_feats"]):
        mq = (feats["mq_feats"], feats["mq_pids"], feats["mq_camids"])
    results = evaluate_protocols(q, g, qp, gp, qc, gc, max_rank=max_rank, rerank=rr, multi_query=mq,
                                 poolings=MULTI_QUERY_POOLINGS, memory_gb=memory_gb, device=device)
    out: dict = {}
    valid_queries: dict[str, int] = {}
    per_query: dict[str, dict] = {}
    for protocol, full in results.items():
        prefix = "" if protocol == "single" else protocol + "/"
        flat = flat_metrics(full)
        # metrics stay flat fractions; the count of queries with a true match goes to "counts"
        valid_queries[prefix or "single_query"] = flat.pop("num_valid_queries")
        for k, v in flat.items():
            out[f"{prefix}{k}"] = v
        per_query[protocol] = per_query_arrays(full)
    out["counts"] = {"query": len(qp), "gallery": len(gp), "valid_queries": valid_queries}
    out["per_query"] = per_query
    return out


def query_names(paths) -> list[str]:
    """Query image paths relative to the dataset folder (``query/0001_c1s1_000151_00.jpg``)."""
    return [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]


def evaluate(*, features: Path, out: Path, per_query_out: Path, max_rank: int, rerank: dict, bootstrap: dict,
             inputs: dict, device=None, memory_gb: float | None = None) -> dict:
    """Write per_query.csv, then metrics.json (with ``ci95``); returns the metrics.json record.

    bootstrap: {"resamples": int, "seed": int} (config ``evaluate.bootstrap``).
    memory_gb: the working-memory budget of the evaluation (config ``evaluate.memory_gb``).
    """
    return evaluate_loaded(load_features(features), source=str(features), out=out, per_query_out=per_query_out,
                           max_rank=max_rank, rerank=rerank, bootstrap=bootstrap, inputs=inputs, device=device,
                           memory_gb=memory_gb)


def evaluate_loaded(feats: dict, *, source: str, out: Path, per_query_out: Path, max_rank: int, rerank: dict,
                    bootstrap: dict, inputs: dict, device=None, memory_gb: float | None = None) -> dict:
    """`evaluate` on features already in memory (the layout of features.pt; reid.external reads other
    tools' files into it). ``source`` names them in messages and in metrics.json's "features"."""
    _check_bootstrap(bootstrap)
    metrics = compute_metrics(feats, max_rank=max_rank, rerank=rerank, device=device,
                              memory_gb=DEFAULT_MEMORY_GB if memory_gb is None else memory_gb)
    if "query_paths" not in feats:
        raise ValueError(f"{source}: missing 'query_paths' (per_query.csv names every query)")
    table = uncertainty.per_query_table(metrics.pop("per_query"), query_names(feats["query_paths"]),
                                        feats["query_pids"], feats["query_camids"])
    # metrics.json's scalars are by definition the per-query rows' means; any other value is a bug
    exact = uncertainty.estimates(table)
    for key, value in exact.items():
        if key not in metrics or not math.isclose(metrics[key], value, rel_tol=1e-9, abs_tol=1e-12):
            raise RuntimeError(f"{source}: {key} = {metrics.get(key)} but the per-query rows give {value}")
    metrics.update(exact)
    intervals = uncertainty.model_intervals(table, resamples=bootstrap["resamples"], seed=bootstrap["seed"])
    # how the test embeddings were made travels with the numbers (the tables print it)
    flip = feats.get("meta", {}).get("flip", "false")
    flip = {"true": True, "false": False}.get(flip)  # None (JSON null): made by another tool, not known
    record = {**metrics, **inputs, "features": source, "flip_test": flip, "ci95": intervals["ci95"],
              "bootstrap": {"resamples": bootstrap["resamples"], "seed": bootstrap["seed"],
                            "over": "query identities", "identities": len(uncertainty.identities(table))}}
    io.write_text(per_query_out, uncertainty.per_query_csv(table))
    io.write_json(out, record)
    return record


def scalar_metrics(record: dict) -> dict:
    """The numeric, non-curve entries of a metrics record (what goes to MLflow as values)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("seed",)}


def _check_bootstrap(bootstrap: dict) -> None:
    for key, low in (("resamples", 1), ("seed", 0)):
        value = bootstrap.get(key) if isinstance(bootstrap, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"evaluate.bootstrap.{key} = {value!r}: expected an integer >= {low}")
    unknown = set(bootstrap) - {"resamples", "seed"}
    if unknown:
        raise ValueError(f"evaluate.bootstrap: unknown key(s) {sorted(unknown)}, expected resamples and seed")


def interval_metrics(record: dict) -> dict:
    """The ci95 bounds as MLflow metrics: ``rank1_ci95_low``, ``rerank/mAP_ci95_high``, ..."""
    out = {}
    for key, (low, high) in record.get("ci95", {}).items():
        out[f"{key}_ci95_low"], out[f"{key}_ci95_high"] = low, high
    return out


def curves(record: dict) -> dict:
    return {k: v for k, v in record.items() if k == "cmc" or k.endswith("/cmc")}
