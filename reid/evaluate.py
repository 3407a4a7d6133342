"""The evaluation stage: metrics.json from features.pt, every protocol the paper reports.

Single query and (where gt_bbox exists) multi-query with mean and max pooling, each with and
without k-reciprocal re-ranking; both AP conventions. Plain ``rank1``/``mAP`` are single-query,
step-AP values; other protocols carry a prefix (``rerank/``, ``multi_query_mean/``, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from reid.features import load_features
from reid.metrics import evaluate_features, evaluate_multi_query

MULTI_QUERY_POOLINGS = ("mean", "max")


def compute_metrics(feats: dict, *, max_rank: int, rerank: dict, device=None) -> dict:
    q, g = feats["query_feats"], feats["gallery_feats"]
    qp, gp, qc, gc = feats["query_pids"], feats["gallery_pids"], feats["query_camids"], feats["gallery_camids"]
    max_rank = min(max_rank, len(gp))
    rr = {"k1": rerank["k1"], "k2": rerank["k2"], "lambda_value": rerank["lambda"]}
    out: dict = {}

    valid_queries: dict[str, int] = {}

    def add(prefix: str, result: dict) -> None:
        # metrics stay flat fractions; the count of queries with a true match goes to "counts"
        valid_queries[prefix or "single_query"] = result.pop("num_valid_queries")
        for k, v in result.items():
            out[f"{prefix}{k}"] = v

    add("", evaluate_features(q, g, qp, gp, qc, gc, max_rank=max_rank, device=device))
    add("rerank/", evaluate_features(q, g, qp, gp, qc, gc, max_rank=max_rank, rerank=rr, device=device))
    if "mq_feats" in feats and len(feats["mq_feats"]):
        mq = (feats["mq_feats"], feats["mq_pids"], feats["mq_camids"])
        for pooling in MULTI_QUERY_POOLINGS:
            prefix = f"multi_query_{pooling}/"
            for suffix, rerank_args in (("", None), ("rerank/", rr)):
                add(prefix + suffix, evaluate_multi_query(q, g, qp, gp, qc, gc, *mq, pooling=pooling,
                                                          max_rank=max_rank, rerank=rerank_args, device=device))
    out["counts"] = {"query": len(qp), "gallery": len(gp), "valid_queries": valid_queries}
    return out


def evaluate(*, features: Path, out: Path, max_rank: int, rerank: dict, inputs: dict, device=None) -> dict:
    feats = load_features(features)
    metrics = compute_metrics(feats, max_rank=max_rank, rerank=rerank, device=device)
    # how the test embeddings were made travels with the numbers (the tables print it)
    flip = feats.get("meta", {}).get("flip", "false") == "true"
    record = {**metrics, **inputs, "features": str(features), "flip_test": flip}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return record


def scalar_metrics(record: dict) -> dict:
    """The numeric, non-curve entries of a metrics record (what goes to MLflow as values)."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("seed",)}


def curves(record: dict) -> dict:
    return {k: v for k, v in record.items() if k == "cmc" or k.endswith("/cmc")}
