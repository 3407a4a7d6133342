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
removed) of the m true matches of a query:
  * CMC:   the query counts as a hit at k when r_1 < k;
  * AP, ap="step" (torchreid, fast-reid): mean over k of precision at the k-th hit, k / (r_k + 1);
  * AP, ap="trapezoid" (official Market-1501 code): mean over k of
        (precision just before the k-th hit + precision at it) / 2,
    precision just before = (k - 1) / r_k, or 1 when r_k = 0;
  * INP (fast-reid's mINP): m / (r_m + 1).
So the CPU path never sorts a whole gallery row: it keeps only the images no farther than the
query's farthest true match, and stable-sorts those (or, when there are many, counts with one
binary search each how many negatives precede every match).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _inputs

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
    """All metrics as a dict.

    Keys: cmc (float64 array, length max_rank), mAP (step convention), mAP_trapezoid, mINP,
    num_valid_queries, and per query (NaN for skipped queries): AP, AP_trapezoid, INP,
    first_match_rank (1-based), num_matches.
    A CUDA `distmat` is ranked on the GPU.
    """
    num_q, num_g = _check(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    if _inputs.is_tensor(distmat):
        distmat = _inputs.at_least_float32(distmat.detach())
    qp = _inputs.labels(q_pids, "q_pids", num_q)
    gp = _inputs.labels(g_pids, "g_pids", num_g)
    qc = _inputs.labels(q_camids, "q_camids", num_q)
    gc = _inputs.labels(g_camids, "g_camids", num_g)
    if _inputs.is_tensor(distmat) and distmat.device.type != "cpu":
        qidx, ranks = _match_ranks_sorted(distmat, qp, gp, qc, gc)
    else:
        qidx, ranks = _match_ranks_counting(_inputs.to_numpy(distmat, "distmat"), qp, gp, qc, gc)
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


def _match_ranks_counting(dist: np.ndarray, qp, gp, qc, gc):
    """CPU path: (query index, rank) of every true match, without sorting whole gallery rows.

    Only gallery images no farther than the query's farthest true match can precede a match, so
    each row is first cut to those candidates (few for a useful model) and only they are ranked.
    """
    num_g = gp.size
    # kind of each gallery column for the current query: 0 negative, 1 true match, 2 removed
    kind = np.where(gp == JUNK_PID, 2, 0).astype(np.int8)
    by_pid = np.argsort(gp, kind="stable")  # columns of each pid, ascending
    pids, starts = np.unique(gp[by_pid], return_index=True)
    ends = np.append(starts[1:], num_g)
    cols_of = {int(p): by_pid[s:e] for p, s, e in zip(pids, starts, ends)}

    qidx, ranks = [], []
    for i in range(dist.shape[0]):
        pid = int(qp[i])
        same = cols_of.get(pid)
        if same is None or pid in (JUNK_PID, DISTRACTOR_PID):
            continue
        other_cam = gc[same] != qc[i]
        good = same[other_cam]
        if good.size == 0:
            continue
        row = dist[i]
        kind[good] = 1
        kind[same[~other_cam]] = 2
        cand = np.flatnonzero(row <= row[good].max())
        r = _ranks_in_candidates(row[cand], kind[cand])
        kind[same] = 0
        qidx.append(np.full(r.size, i, dtype=np.int64))
        ranks.append(r)
    if not ranks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(qidx), np.concatenate(ranks)


_SORT_MAX = 2048  # below this many candidates a stable sort is cheaper than counting


def _ranks_in_candidates(v: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Sorted 0-based positions of the true matches (kind 1) among the kept (kind != 2) entries.

    `v` holds distances in gallery-index order, so a stable sort breaks ties by gallery index.
    """
    if v.size <= _SORT_MAX:
        ks = kind[np.argsort(v, kind="stable")]
        return np.flatnonzero(ks[ks != 2] == 1)
    return _ranks_by_counting(v, np.flatnonzero(kind == 1), np.flatnonzero(kind == 2))


def _ranks_by_counting(d: np.ndarray, good: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The same positions by counting: one binary search per entry among the m match distances."""
    gvals = d[good]
    order = np.lexsort((good, gvals))  # by distance, ties by index
    gs = gvals[order]
    m = gs.size
    # b[j] = number of true matches whose distance is <= d[j]; entry j lies strictly before the
    # k-th match (k = 1..m) exactly when b[j] <= k - 1.
    b = np.searchsorted(gs, d, side="right")
    lt_all = np.cumsum(np.bincount(b, minlength=m + 1))[:m]
    goods_lt = np.searchsorted(gs, gs, side="left")
    rv = np.sort(d[removed])
    neg_lt = lt_all - goods_lt - np.searchsorted(rv, gs, side="left")
    # A negative at exactly a match's distance would need the index tie-break: detect, then fall
    # back. d[j] equals some match distance iff it equals the largest match distance <= d[j].
    prev = np.concatenate(([-np.inf], gs))[b]
    n_equal = np.count_nonzero(d == prev)
    expected = m + np.count_nonzero(np.isin(rv, gs))
    if n_equal != expected:
        return _ranks_by_sorting(d, good, removed)
    return neg_lt + np.arange(m)


def _ranks_by_sorting(d: np.ndarray, good: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The same positions by a stable sort of all entries (used when distances tie)."""
    keep = np.ones(d.size, dtype=bool)
    keep[removed] = False
    is_good = np.zeros(d.size, dtype=bool)
    is_good[good] = True
    cols = np.flatnonzero(keep)
    order = np.argsort(d[cols], kind="stable")
    return np.flatnonzero(is_good[cols][order])


def _match_ranks_sorted(distmat: torch.Tensor, qp, gp, qc, gc, chunk: int = 2048):
    """Device path (GPU): stable-sort every row, then read the match positions off the masks."""
    dev = distmat.device
    gp_t, gc_t = torch.as_tensor(gp, device=dev), torch.as_tensor(gc, device=dev)
    qidx, ranks = [], []
    for s in range(0, distmat.shape[0], chunk):
        d = distmat[s:s + chunk]
        order = torch.sort(d, dim=1, stable=True).indices
        sp, sc = gp_t[order], gc_t[order]
        qpc = torch.as_tensor(qp[s:s + chunk], device=dev)[:, None]
        qcc = torch.as_tensor(qc[s:s + chunk], device=dev)[:, None]
        same = sp == qpc
        keep = (sp != JUNK_PID) & ~(same & (sc == qcc))
        good = same & keep & (qpc > DISTRACTOR_PID)
        pos = torch.cumsum(keep, dim=1) - 1  # position among kept columns
        rows, cols = torch.nonzero(good, as_tuple=True)  # row-major: sorted by query, then rank
        qidx.append((rows + s).cpu().numpy())
        ranks.append(pos[rows, cols].cpu().numpy())
    return np.concatenate(qidx).astype(np.int64), np.concatenate(ranks).astype(np.int64)


def summarise(qidx: np.ndarray, ranks: np.ndarray, num_q: int, max_rank: int) -> dict:
    """Metrics from the (query, rank) pairs of all true matches, sorted by query then rank."""
    counts = np.bincount(qidx, minlength=num_q)
    valid = counts > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a true match in the gallery (all queries skipped): "
                         "check that query and gallery pids overlap across cameras")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[valid]
    m = counts[valid].astype(np.float64)
    k = np.arange(ranks.size) - np.repeat(np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + 1.0
    r = ranks.astype(np.float64)
    prec_at = k / (r + 1.0)
    prec_before = np.where(r > 0, (k - 1.0) / np.maximum(r, 1.0), 1.0)
    ap_step = np.add.reduceat(prec_at, starts) / m
    ap_trap = np.add.reduceat((prec_before + prec_at) / 2.0, starts) / m
    first = ranks[starts]
    last = ranks[starts + counts[valid] - 1]
    inp = m / (last + 1.0)

    cmc = np.cumsum(np.bincount(first[first < max_rank], minlength=max_rank)[:max_rank]) / num_valid
    for what, x in (("mAP", ap_step), ("mAP_trapezoid", ap_trap), ("mINP", inp), ("cmc", cmc)):
        _inputs.finite_result(x, what)

    def per_query(values, fill=np.nan):
        out = np.full(num_q, fill, dtype=np.float64)
        out[valid] = values
        return out

    return {
        "cmc": cmc.astype(np.float64),
        "mAP": float(ap_step.mean()),
        "mAP_trapezoid": float(ap_trap.mean()),
        "mINP": float(inp.mean()),
        "num_valid_queries": num_valid,
        "AP": per_query(ap_step),
        "AP_trapezoid": per_query(ap_trap),
        "INP": per_query(inp),
        "first_match_rank": per_query(first + 1.0),
        "num_matches": counts,
    }


def cmc_at(first_match_rank: np.ndarray, k: int) -> float:
    """Fraction of valid queries whose first true match is within the first k (any k >= 1)."""
    f = first_match_rank[~np.isnan(first_match_rank)]
    return float(np.mean(f <= k))
