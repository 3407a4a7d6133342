"""CMC, mAP (two conventions) and mINP under the Market-1501 / DukeMTMC-reID protocol.

Protocol, per query:
  * gallery images with pid -1 are junk: removed from the ranking (as the official Market-1501 code);
  * gallery images with the query's pid AND camera are removed (same-camera views are too easy);
  * the true matches ("good") are the remaining gallery images with the query's pid;
  * pid 0 distractors, and everything else, are negatives. A query whose pid is 0 or -1 has no true
    match by definition (distractors are never positives).
  * a query with no true match left is skipped (it counts neither in CMC nor in mAP).

Ordering: gallery images are ranked by increasing distance; ties are broken by gallery index (the
order `np.argsort(kind="stable")` gives), so results are deterministic. The reference toolkits
use an unstable argsort, so with exactly tied distances they may differ from run to run; with
real-valued features ties essentially never happen.

Every metric depends only on the positions r_1 < ... < r_m (0-based, in the ranking with junk
removed) of the m true matches of a query; how each is computed from them (CMC at k: r_1 < k; AP in
the step and trapezoid conventions; INP) is its registration in reid.metrics.keys, which also
turns the per-query columns into the scalars (means over the queries with a true match).
So no whole gallery row is ever sorted: only the kept images no farther than the query's farthest
true match are, by two stable sorts over all the rows of a block at once (see `match_ranks`).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _inputs, keys

AP_CONVENTIONS = ("step", "trapezoid")
JUNK_PID = -1  # same values as reid.data.market; repeated so that reid.metrics stands alone
DISTRACTOR_PID = 0


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, ap="step"):
    """(cmc, mAP): cmc[k-1] is the fraction of valid queries with a true match within the first k.

    `distmat` is queries x gallery (numpy or torch, any float dtype: half precision is ranked in
    float32, float64 in float64; smaller = more similar). `ap` picks the mAP
    convention: "step" (torchreid / fast-reid) or "trapezoid" (official Market-1501 code).
    Raises ValueError on malformed input, on max_rank larger than the gallery, and when no query
    has a true match in the gallery.
    """
    if ap not in AP_CONVENTIONS:
        raise ValueError(f"ap={ap!r}: unknown AP convention, expected one of {AP_CONVENTIONS}")
    out = evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    return out["cmc"], out["mAP"] if ap == "step" else out["mAP_trapezoid"]


def evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """All metrics as a dict (`summarise`): "cmc" (float64 array, length max_rank),
    "num_valid_queries", "num_matches", "per_query" ({column: array}: "first_match_rank" int64,
    1-based, 0 = no true match; "ap", "ap_trapezoid", "inp" float64, NaN = no true match; and any
    registered column), and every registered metric of reid.metrics.keys by name ("rank1", ...,
    "mAP", "mAP_trapezoid", "mINP"). A CUDA `distmat` is ranked on the GPU.
    """
    num_q, num_g = _check(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    if _inputs.is_tensor(distmat):
        distmat = _inputs.at_least_float32(distmat.detach())
    qp = _inputs.labels(q_pids, "q_pids", num_q)
    gp = _inputs.labels(g_pids, "g_pids", num_g)
    qc = _inputs.labels(q_camids, "q_camids", num_q)
    gc = _inputs.labels(g_camids, "g_camids", num_g)
    dist = distmat if _inputs.is_tensor(distmat) else torch.from_numpy(_inputs.to_numpy(distmat, "distmat"))
    qidx, ranks = match_ranks(dist, qp, gp, qc, gc)
    return summarise(qidx, ranks, num_q, max_rank)


def _check(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    if not hasattr(distmat, "shape"):
        distmat = np.asarray(distmat)
    if len(distmat.shape) != 2:
        raise ValueError(f"distmat: expected a 2-D queries x gallery matrix, "
                         f"got shape {tuple(distmat.shape)}")
    num_q, num_g = (int(s) for s in distmat.shape)
    for name, arr, n in (("q_pids", q_pids, num_q), ("q_camids", q_camids, num_q),
                         ("g_pids", g_pids, num_g), ("g_camids", g_camids, num_g)):
        if len(arr) != n:
            raise ValueError(f"{name}: length {len(arr)} does not match distmat shape {(num_q, num_g)}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank={max_rank!r}: expected a positive integer")
    if max_rank > num_g:
        raise ValueError(f"max_rank={max_rank} is larger than the gallery ({num_g} images)")
    _inputs.matrix(distmat, "distmat")
    return num_q, num_g


def kept_in_ranking(g_pid, g_camid, q_pid, q_camid):
    """Which gallery images a query's ranking keeps (element-wise, numpy or torch): not junk (pid -1)
    and not the query's identity seen by the query's camera (the Market-1501 protocol; module doc)."""
    return (g_pid != JUNK_PID) & ~((g_pid == q_pid) & (g_camid == q_camid))


def match_ranks(dist: torch.Tensor, qp, gp, qc, gc, *, max_entries: int = 1 << 22):
    """(query index, 0-based rank) of every true match, sorted by query then rank (numpy int64).

    dist: queries x gallery distances (a torch tensor on any device); qp, qc (length of dist) and
    gp, gc: int64 label arrays. Each row is cut to the kept (not junk, not same-pid-same-camera)
    images no farther than the query's farthest true match: only they can precede a match. Those
    are ranked with two stable sorts (by distance, then by query), so ties go to the lower gallery
    index. Rows are taken in groups of at most `max_entries` gallery entries, which bounds memory.
    """
    dev = dist.device
    num_q = dist.shape[0]
    gp_t, gc_t = torch.as_tensor(gp, device=dev), torch.as_tensor(gc, device=dev)
    qp_t, qc_t = torch.as_tensor(qp, device=dev), torch.as_tensor(qc, device=dev)
    # the gallery images of each query's pid, through the gallery sorted by pid
    by_pid = torch.sort(gp_t, stable=True).indices
    pids = gp_t[by_pid]
    lo = torch.searchsorted(pids, qp_t)
    n_same = torch.searchsorted(pids, qp_t, right=True) - lo
    rows = torch.repeat_interleave(torch.arange(num_q, device=dev), n_same)
    cols = by_pid[torch.arange(rows.numel(), device=dev) - torch.repeat_interleave(
        torch.cumsum(n_same, 0) - n_same - lo, n_same)]
    good = (gc_t[cols] != qc_t[rows]) & (qp_t[rows] > DISTRACTOR_PID)  # junk and distractors never match
    rows, cols = rows[good], cols[good]
    far = torch.full((num_q,), -float("inf"), dtype=dist.dtype, device=dev)
    far.scatter_reduce_(0, rows, dist[rows, cols], reduce="amax")  # -inf: no true match, no candidate
    qidx, ranks = [], []
    num_g = dist.shape[1]
    step = max(1, max_entries // max(1, num_g))  # rows whose candidates fit in max_entries
    for a in range(0, num_q, step):
        b = min(a + step, num_q)
        blk = dist[a:b]
        # candidates as flat positions in the block, row-major: gallery index order within a row
        # (flat gathers through index_select are several times faster than 2-D indexing)
        flat = torch.nonzero((blk <= far[a:b, None]).reshape(-1)).view(-1)
        r = torch.div(flat, num_g, rounding_mode="floor")
        c = flat - r * num_g
        g_pid = gp_t.index_select(0, c)
        same = g_pid == qp_t[a:b].index_select(0, r)
        keep = kept_in_ranking(g_pid, gc_t.index_select(0, c), qp_t[a:b].index_select(0, r),
                               qc_t[a:b].index_select(0, r))
        kept = torch.nonzero(keep).view(-1)
        r, flat, same = r.index_select(0, kept), flat.index_select(0, kept), same.index_select(0, kept)
        order = _order_within_rows(blk.reshape(-1).index_select(0, flat), r)
        r, is_good = r.index_select(0, order), same.index_select(0, order)
        per_row = torch.bincount(r, minlength=b - a)
        pos = torch.arange(r.numel(), device=dev) - (torch.cumsum(per_row, 0) - per_row).index_select(0, r)
        qidx.append((r[is_good] + a).cpu().numpy())
        ranks.append(pos[is_good].cpu().numpy())
    if not qidx:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(qidx).astype(np.int64), np.concatenate(ranks).astype(np.int64)


def _order_within_rows(v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The permutation that sorts entries by row, then value, then position (entries come in
    row-major, gallery-index order): one stable sort of a 64-bit key for float32 values (row in
    the high half, the value's bits made order-preserving in the low half), two otherwise."""
    if v.dtype == torch.float32:
        bits = (v + 0.0).view(torch.int32)  # + 0.0: -0.0 becomes 0.0, which it equals
        bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64) + (1 << 31)
        return torch.sort((r << 32) | bits, stable=True).indices
    order = torch.sort(v, stable=True).indices
    return order[torch.sort(r[order], stable=True).indices]


def summarise(qidx: np.ndarray, ranks: np.ndarray, num_q: int, max_rank: int) -> dict:
    """One protocol's results from the (query, rank) pairs of all true matches, sorted by query then
    rank: "cmc" (float64, length max_rank), "num_valid_queries", "num_matches" (int64 per query),
    "per_query" (every registered column of reid.metrics.keys, queries in order) and every registered
    metric by name ("rank1", "mAP", ...: reid.metrics.keys.metric_values of those columns)."""
    counts = np.bincount(qidx, minlength=num_q)
    num_valid = int((counts > 0).sum())
    if num_valid == 0:
        raise ValueError("no query has a true match in the gallery (all queries skipped): "
                         "check that query and gallery pids overlap across cameras")
    per_query = keys.compute_columns(qidx, ranks, num_q)
    first = per_query[keys.FIRST_MATCH_RANK.name]
    first = first[first > 0] - 1
    cmc = np.cumsum(np.bincount(first[first < max_rank], minlength=max_rank)[:max_rank]) / num_valid
    _inputs.finite_result(cmc, "cmc")
    return {"cmc": cmc.astype(np.float64), "num_valid_queries": num_valid, "num_matches": counts,
            "per_query": per_query, **keys.metric_values(per_query)}
