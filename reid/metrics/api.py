"""The high-level entry points the pipeline's evaluate stage calls: features in, flat metrics out."""

from __future__ import annotations

import numpy as np

from . import _inputs
from .distance import euclidean_distance, l2_normalize
from .multi_query import pool_multi_query
from .rank import cmc_at, evaluate
from .rerank import re_ranking_features

REPORTED_RANKS = (1, 5, 10, 20)
RERANK_KEYS = ("k1", "k2", "lambda_value")


def evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, *, max_rank=50,
                      rerank=None, device=None, per_query=False) -> dict:
    """Rank the gallery for every query by Euclidean distance (or re-ranked) and score it.

    rerank: None, or a dict with k1, k2, lambda_value (Zhong et al.; config's `lambda` is accepted
            as an alias of lambda_value).
    device: where to compute ("cuda", ...); default: where q_feats lives, else CPU.

    Returns flat keys, all fractions in [0, 1]:
      rank1, rank5, rank10, rank20   CMC at those ranks (exact at any rank, whatever max_rank)
      mAP                            step convention (torchreid / fast-reid)
      mAP_trapezoid                  official Market-1501 code's convention
      mINP                           fast-reid's mean inverse negative penalty
      cmc                            list of min(max_rank, gallery size) fractions
      num_valid_queries              queries that had a true match (an int)
    With per_query=True also "per_query": {"first_match_rank": int64 (1-based; 0 = no true match),
    "ap", "ap_trapezoid", "inp": float64 (NaN = no true match)}, one entry per query, in query order.
    """
    num_g = len(g_pids)
    if rerank is None:
        distmat = euclidean_distance(_as_tensor(q_feats, device), _as_tensor(g_feats, device))
    else:
        distmat = re_ranking_features(q_feats, g_feats, device=device, **_rerank_args(rerank))
    full = evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max(1, min(max_rank, num_g)))
    out = {f"rank{k}": cmc_at(full["first_match_rank"], k) for k in REPORTED_RANKS}
    out.update(mAP=full["mAP"], mAP_trapezoid=full["mAP_trapezoid"], mINP=full["mINP"],
               cmc=[float(x) for x in full["cmc"]], num_valid_queries=int(full["num_valid_queries"]))
    if per_query:
        out["per_query"] = {"first_match_rank": np.nan_to_num(full["first_match_rank"], nan=0.0).astype(np.int64),
                            "ap": full["AP"], "ap_trapezoid": full["AP_trapezoid"], "inp": full["INP"]}
    return out


def evaluate_multi_query(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, mq_feats, mq_pids,
                         mq_camids, *, pooling="mean", max_rank=50, rerank=None, device=None,
                         per_query=False) -> dict:
    """Multi-query evaluation: queries pooled over their gt_bbox images (see multi_query.py).

    Pooled queries are unit length, so the gallery features are L2-normalised too (as in the
    official Market-1501 code, whose features are all normalised); single-query evaluation is left
    to `evaluate_features` on whatever features the caller has. Same keys as `evaluate_features`.
    """
    pooled = pool_multi_query(q_pids, q_camids, mq_feats, mq_pids, mq_camids, pooling=pooling,
                              q_feats=q_feats)
    return evaluate_features(pooled, l2_normalize(g_feats), q_pids, g_pids, q_camids, g_camids,
                             max_rank=max_rank, rerank=rerank, device=device, per_query=per_query)


def _rerank_args(rerank) -> dict:
    if not isinstance(rerank, dict):
        raise ValueError(f"rerank={rerank!r}: expected None or a dict with keys {RERANK_KEYS}")
    args = dict(rerank)
    if "lambda" in args:
        if "lambda_value" in args:
            raise ValueError("rerank: give either 'lambda' or 'lambda_value', not both")
        args["lambda_value"] = args.pop("lambda")
    unknown = set(args) - set(RERANK_KEYS)
    if unknown:
        raise ValueError(f"rerank: unknown keys {sorted(unknown)}, expected {RERANK_KEYS}")
    return args


def _as_tensor(x, device):
    return _inputs.float_tensor(x, "features", device)


__all__ = ["evaluate_features", "evaluate_multi_query", "REPORTED_RANKS"]
