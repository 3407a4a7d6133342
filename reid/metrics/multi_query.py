"""Multi-query (Market-1501's "multi-shot"): a query's feature pooled over its gt_bbox images.

For each query, every gt_bbox (multi-query) image with the same pid and the same camera is pooled
(mean or element-wise max of the L2-normalised features), and the result is L2-normalised. The
query is then evaluated with the single-query junk and true-match sets, as in the official
Market-1501 evaluation code.

A query with no gt_bbox image of its pid and camera keeps its own (L2-normalised) feature. Its own
image is not added to the pool: the gt_bbox images already include hand-drawn boxes of the same
person in the same camera.
"""

from __future__ import annotations

import torch

from . import _inputs
from .distance import l2_normalize

POOLINGS = ("mean", "max")


def pool_multi_query(q_pids, q_camids, mq_feats, mq_pids, mq_camids, pooling="mean", q_feats=None):
    """Pooled, L2-normalised query features, one row per query (same type as `mq_feats`).

    q_pids, q_camids:   the queries' labels (length Q).
    mq_feats:           gt_bbox features (M x D); mq_pids, mq_camids their labels (length M).
    pooling:            "mean" or "max".
    q_feats:            the queries' own features (Q x D), used for queries with no gt_bbox image
                        of their pid and camera; without it such a query raises ValueError.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}: expected one of {POOLINGS}")
    n_q = len(q_pids)
    qp = _inputs.labels(q_pids, "q_pids")
    qc = _inputs.labels(q_camids, "q_camids", n_q)
    mqf = _inputs.float_tensor(mq_feats, "mq_feats")
    if mqf.ndim != 2:
        raise ValueError(f"mq_feats: expected a 2-D (images x dims) matrix, got shape {tuple(mqf.shape)}")
    mp = _inputs.labels(mq_pids, "mq_pids", mqf.shape[0])
    mc = _inputs.labels(mq_camids, "mq_camids", mqf.shape[0])
    _inputs.matrix(mqf, "mq_feats")
    for name, cams in (("q_camids", qc), ("mq_camids", mc)):
        if cams.size and (cams.min() < 0 or cams.max() >= 1000):
            raise ValueError(f"{name}: camera ids must lie in [0, 1000)")
    dev = mqf.device
    mqf = l2_normalize(mqf)

    # group gt_bbox images by (pid, camera); each query picks its group
    keys = torch.as_tensor(mp * 1000 + mc, device=dev)
    uniq, group = torch.unique(keys, return_inverse=True)
    n_groups = uniq.numel()
    if pooling == "mean":
        pooled = torch.zeros((n_groups, mqf.shape[1]), device=dev).index_add_(0, group, mqf)
        pooled /= torch.bincount(group, minlength=n_groups)[:, None]
    else:
        pooled = torch.full((n_groups, mqf.shape[1]), -float("inf"), device=dev)
        pooled.scatter_reduce_(0, group[:, None].expand_as(mqf), mqf, reduce="amax")
    pooled = l2_normalize(pooled)

    qkeys = torch.as_tensor(qp * 1000 + qc, device=dev)
    pos = torch.searchsorted(uniq, qkeys).clamp_(max=max(n_groups - 1, 0))
    found = (uniq[pos] == qkeys) if n_groups else torch.zeros(n_q, dtype=torch.bool, device=dev)
    if n_groups:
        out = pooled[pos]
    else:
        out = torch.zeros((n_q, mqf.shape[1]), device=dev)
    missing = torch.nonzero(~found).flatten()
    if missing.numel():
        if q_feats is None:
            i = int(missing[0])
            raise ValueError(f"query {i} (pid {qp[i]}, camera {qc[i]}) has no gt_bbox image of its pid and "
                             f"camera; pass q_feats to keep its own feature")
        own = _inputs.float_tensor(q_feats, "q_feats", dev)
        if tuple(own.shape) != (n_q, mqf.shape[1]):
            raise ValueError(f"q_feats: shape {tuple(own.shape)}, expected {(n_q, mqf.shape[1])}")
        out[missing] = l2_normalize(own[missing])
    _inputs.finite_result(out, "pool_multi_query")
    return out if _inputs.is_tensor(mq_feats) else out.cpu().numpy()
