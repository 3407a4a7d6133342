"""The high-level entry points the pipeline's evaluate stage calls: features in, flat metrics out."""

from __future__ import annotations

import numpy as np

from . import keys
from .rank import cmc_at
from .stream import DEFAULT_MEMORY_GB, evaluate_protocols

REPORTED_RANKS = (1, 5, 10, 20)


def evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, *, max_rank=50,
                      rerank=None, device=None, per_query=False, memory_gb=None) -> dict:
    """Rank the gallery for every query by Euclidean distance (or re-ranked) and score it.

    rerank: None, or a dict with k1, k2, lambda_value (Zhong et al.; config's `lambda` is accepted
            as an alias of lambda_value).
    device: where to compute ("cuda", ...); default: where q_feats lives, else CPU.
    memory_gb: working-memory budget; queries are ranked in blocks (see `evaluate_protocols`),
            with the same results as one `evaluate` of the whole distance matrix.

    Returns `flat_metrics` of the protocol's result: all fractions in [0, 1] but the count. With
    per_query=True also "per_query": `per_query_arrays` of the result.
    """
    protocol = keys.protocol(rerank=rerank is not None)
    full = _run(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, rerank=rerank,
                device=device, memory_gb=memory_gb)[protocol]
    return _flat(full, per_query)


def evaluate_multi_query(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, mq_feats, mq_pids,
                         mq_camids, *, pooling="mean", max_rank=50, rerank=None, device=None,
                         per_query=False, memory_gb=None) -> dict:
    """Multi-query evaluation: queries pooled over their gt_bbox images (see multi_query.py).

    Pooled queries are unit length, so the gallery features are L2-normalised too (as in the
    official Market-1501 code, whose features are all normalised; rows already of unit length,
    within `distance.UNIT_NORM_TOLERANCE`, are ranked as given); single-query evaluation is left
    to `evaluate_features` on whatever features the caller has. Same keys as `evaluate_features`.
    """
    protocol = keys.protocol(pooling, rerank=rerank is not None)
    full = _run(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, rerank=rerank,
                device=device, memory_gb=memory_gb, multi_query=(mq_feats, mq_pids, mq_camids),
                poolings=(pooling,), single=False)[protocol]
    return _flat(full, per_query)


def flat_metrics(full: dict) -> dict:
    """The reported numbers of one protocol's `evaluate` result:
      rank1, rank5, rank10, rank20   CMC at those ranks (exact at any rank, whatever max_rank)
      mAP                            step convention (torchreid / fast-reid)
      mAP_trapezoid                  official Market-1501 code's convention
      mINP                           fast-reid's mean inverse negative penalty
      cmc                            list of min(max_rank, gallery size) fractions
      num_valid_queries              queries that had a true match (an int)
    """
    out = {f"rank{k}": cmc_at(full["first_match_rank"], k) for k in REPORTED_RANKS}
    out.update(mAP=full["mAP"], mAP_trapezoid=full["mAP_trapezoid"], mINP=full["mINP"],
               cmc=[float(x) for x in full["cmc"]], num_valid_queries=int(full["num_valid_queries"]))
    return out


def per_query_arrays(full: dict) -> dict:
    """One protocol's per-query results, in query order: {"first_match_rank": int64 (1-based; 0 = no
    true match), "ap", "ap_trapezoid", "inp": float64 (NaN = no true match)}."""
    return {"first_match_rank": np.nan_to_num(full["first_match_rank"], nan=0.0).astype(np.int64),
            "ap": full["AP"], "ap_trapezoid": full["AP_trapezoid"], "inp": full["INP"]}


def _flat(full: dict, per_query: bool) -> dict:
    out = flat_metrics(full)
    if per_query:
        out["per_query"] = per_query_arrays(full)
    return out


def _run(*args, memory_gb=None, **kwargs):
    return evaluate_protocols(*args, memory_gb=DEFAULT_MEMORY_GB if memory_gb is None else memory_gb, **kwargs)


__all__ = ["evaluate_features", "evaluate_multi_query", "flat_metrics", "per_query_arrays", "REPORTED_RANKS"]
