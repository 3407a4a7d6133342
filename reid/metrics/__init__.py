"""Re-ID evaluation: CMC, mAP (step and trapezoid conventions), mINP, multi-query and k-reciprocal
re-ranking. Depends on numpy and torch only.

    from reid.metrics import evaluate_rank, re_ranking, re_ranking_features
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, ap="step")
    final = re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3)
    final = re_ranking_features(q_feats, g_feats, k1=20, k2=6, lambda_value=0.3)
    results = evaluate_protocols(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids,
                                 rerank={"k1": 20, "k2": 6, "lambda_value": 0.3}, memory_gb=2)
"""

from .api import flat_metrics
from .distance import euclidean_distance, l2_normalize, squared_euclidean_distance
from .multi_query import pool_multi_query
from .rank import AP_CONVENTIONS, evaluate, evaluate_rank
from .rerank import re_ranking, re_ranking_features
from .stream import DEFAULT_MEMORY_GB, PROTOCOLS, evaluate_protocols

__all__ = [
    "AP_CONVENTIONS",
    "DEFAULT_MEMORY_GB",
    "PROTOCOLS",
    "euclidean_distance",
    "flat_metrics",
    "evaluate",
    "evaluate_protocols",
    "evaluate_rank",
    "l2_normalize",
    "pool_multi_query",
    "re_ranking",
    "re_ranking_features",
    "squared_euclidean_distance",
]
