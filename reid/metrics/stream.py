"""Every evaluation protocol in bounded memory: queries streamed in blocks, gallery work shared.

`evaluate_protocols` runs single-query and multi-query (mean and max pooling) evaluation, each
plain and k-reciprocal re-ranked, and returns per protocol what `reid.metrics.evaluate` returns,
without ever holding a queries x gallery matrix when the memory budget does not allow it:

* Queries are processed in blocks of whole *tiles* (`tile_rows` rows, at most 2048). A block's
  distances (plain Euclidean, or re-ranked) are made, reduced to the positions of its true matches
  (everything CMC, AP, INP and the per-query results need), then freed. The block size follows
  from `memory_gb` (and, on CUDA, from the free device memory).
* Re-ranking (Zhong et al., CVPR 2017; `rerank.py` states the algorithm) needs, for every one of
  the N = queries + gallery images, its nearest neighbours among all N and its largest distance.
  The gallery-to-gallery part of that search depends on the gallery alone: it is done once per
  gallery (`GallerySide`) and shared by every block and every protocol that ranks that gallery.
  Each protocol then merges its query columns into a copy of the gallery's neighbour lists (a
  gallery image's neighbours can be queries), which is exact: a list keeps the k + 1 smallest
  values of its row, and the k + 1 smallest of a union are the k + 1 smallest of the merged lists.
  Pass 1 goes over the query tiles once (their rows and, transposed, their columns); pass 2 goes
  over the query blocks again for the Jaccard distances, recomputing the block's distances unless
  the budget allows keeping all of them from pass 1.
* The plain protocol costs no matrix product of its own when re-ranking runs: pass 1's queries x
  gallery products, completed by |q|^2, are exactly `squared_euclidean_distance`'s, so each tile
  is ranked plainly as soon as its row of products is complete.
* The multi-query protocols rank the L2-normalised gallery; `l2_normalize` leaves rows already of
  unit length as they are, so for features from `reid extract` that is the single-query gallery
  itself, with one neighbour search for all six protocols.

Exactly the same numbers as the unstreamed path (`euclidean_distance` or `re_ranking_features`,
then `evaluate`): every entry is computed with the same arithmetic as there (the same matrix
products, the same direct or transposed formula for each query pair, the same sums), and what is
merged across blocks (neighbour selection, row maxima, match positions) does not depend on the
order of the blocks. One caveat, measured rather than guaranteed: BLAS libraries compute an entry
of a matrix product the same way whatever the shape of the call only above a few rows or columns
(MKL on AVX-512: from 12), so no tile is cut below MIN_TILE_ROWS rows (a shorter remainder joins
the tile before it); and whatever the BLAS, a run with many blocks makes the very same calls as
a run with one block.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _inputs
from .distance import SPAN, l2_normalize
from .keys import PROTOCOLS, protocol  # the metric-key registry's, in metrics.json order
from .multi_query import POOLINGS, pool_multi_query
from .rank import match_ranks, summarise
from .kreciprocal import (InvertedGallery, RunningNearest, check_params, check_rowmax, encode, expand, jaccard_rows,
                          stable_from_candidates, transposed)
from .rerank import rerank_args

DEFAULT_MEMORY_GB = 2.0
SPAN_ROWS = SPAN  # the unstreamed re_ranking_features' default block_rows: which query pairs are
#                   computed directly and which transposed is decided by these spans, as there
MIN_TILE_ROWS = 16  # MKL computes a product's entries alike from 12 rows/columns up (see above)


def evaluate_protocols(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, *, max_rank=50, rerank=None,
                       multi_query=None, poolings=POOLINGS, single=True, memory_gb=DEFAULT_MEMORY_GB,
                       device=None, tile_rows=None) -> dict:
    """Every protocol's metrics, streaming queries in blocks and sharing the gallery-side work.

    q_feats (Q x D), g_feats (G x D): features, numpy or torch, any float dtype (computed in
        float32). Single-query protocols rank g_feats as given; multi-query protocols rank the
        L2-normalised gallery (`l2_normalize` leaves unit rows as given), as the official
        Market-1501 code, whose features are all normalised.
    q_pids, g_pids, q_camids, g_camids: integer labels (pid -1 junk, 0 distractor).
    rerank: None, or {"k1", "k2", "lambda_value"}: also run the re-ranked protocols.
    multi_query: None, or (mq_feats, mq_pids, mq_camids), the gt_bbox images: also run
        "multi_query_<pooling>" (and "multi_query_<pooling>/rerank") for each of `poolings`.
    single: run the single-query protocols ("single" and "rerank").
    memory_gb: working-memory budget in GiB beyond the inputs (not counting the few fixed
        per-gallery arrays); sets the number of queries per block, never fewer than one tile.
    device: where to compute ("cuda", ...); default: where q_feats lives, else CPU.
    tile_rows: queries per matrix-product call (>= MIN_TILE_ROWS; a block is a whole number of
        tiles); default: SPAN_ROWS, halved until one tile's distances fit in the budget. Results
        do not depend on it (see the module docstring).

    Returns {protocol: dict} with protocol names from PROTOCOLS (only those run) and the keys of
    `reid.metrics.evaluate` ("cmc" of length max_rank, "num_valid_queries", "num_matches",
    "per_query": every registered per-query column, and every registered metric by name), queries
    in input order.
    Raises ValueError on malformed input, non-finite features or distances, and a protocol in
    which no query has a true match.
    """
    rr = _check_arguments(q_feats, g_feats, rerank, memory_gb, tile_rows)
    dev = _inputs.resolve_device(device, q_feats, g_feats)
    q = _inputs.float_tensor(q_feats, "q_feats", dev).contiguous()
    g = _inputs.float_tensor(g_feats, "g_feats", dev).contiguous()
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"features: dimension mismatch, q_feats {q.shape[1]} vs g_feats {g.shape[1]}")
    _inputs.matrix(q, "q_feats")
    _inputs.matrix(g, "g_feats")
    num_q, num_g = q.shape[0], g.shape[0]
    labels = (_inputs.labels(q_pids, "q_pids", num_q), _inputs.labels(g_pids, "g_pids", num_g),
              _inputs.labels(q_camids, "q_camids", num_q), _inputs.labels(g_camids, "g_camids", num_g))
    max_rank = max(1, min(int(max_rank), num_g))
    budget = _budget_bytes(memory_gb, dev)
    if tile_rows is None:
        tile_rows = SPAN_ROWS
        while tile_rows > MIN_TILE_ROWS and tile_rows * 8 * num_g > budget:
            tile_rows //= 2

    runs = []  # (multi-query pooling or None, queries, gallery key)
    if single:
        runs.append((None, q, "raw"))
    if multi_query is not None:
        mq_feats, mq_pids, mq_camids = multi_query
        for pooling in poolings:
            pooled = pool_multi_query(labels[0], labels[2], _inputs.float_tensor(mq_feats, "mq_feats", dev),
                                      mq_pids, mq_camids, pooling=pooling, q_feats=q)
            runs.append((pooling, pooled.contiguous(), "normalised"))
    galleries = {"raw": _Gallery(g)}
    if multi_query is not None:
        gn = l2_normalize(g).contiguous()
        # l2_normalize leaves unit-length rows (features written by `reid extract`) as they are:
        # then both kinds of protocol share one gallery (and one neighbour search)
        galleries["normalised"] = galleries["raw"] if torch.equal(gn, g) else _Gallery(gn)

    results = {}
    with torch.inference_mode():
        for pooling, queries, gkey in runs:
            gal = galleries[gkey]
            if rr is None:
                results[protocol(pooling)] = _plain(queries, gal, labels, max_rank, budget, tile_rows)
            else:  # one pass makes both: they rank the same products
                results[protocol(pooling)], results[protocol(pooling, rerank=True)] = _reranked(
                    queries, gal, labels, max_rank, budget, tile_rows, **rr)
    return {p: results[p] for p in PROTOCOLS if p in results}


def _check_arguments(q_feats, g_feats, rerank, memory_gb, tile_rows) -> dict | None:
    """The re-ranking parameters (None: no re-ranking), after refusing malformed arguments (ValueError)."""
    rr = None if rerank is None else rerank_args(rerank)
    if rr is not None:
        check_params(rr["k1"], rr["k2"], rr["lambda_value"], SPAN_ROWS)
    if tile_rows is not None and (isinstance(tile_rows, bool) or not isinstance(tile_rows, (int, np.integer))
                                  or tile_rows < MIN_TILE_ROWS):
        raise ValueError(f"tile_rows={tile_rows!r}: expected an integer >= {MIN_TILE_ROWS}")
    if not (isinstance(memory_gb, (int, float)) and not isinstance(memory_gb, bool) and memory_gb > 0):
        raise ValueError(f"memory_gb={memory_gb!r}: expected a positive number of GiB")
    for name, x in (("q_feats", q_feats), ("g_feats", g_feats)):
        shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
        if len(shape) != 2 or 0 in shape:
            raise ValueError(f"{name}: expected a non-empty 2-D (images x dims) matrix, got shape {shape}")
    return rr


# ----------------------------------------------------------------------------------------------
# blocks


def _budget_bytes(memory_gb, dev) -> int:
    budget = int(memory_gb * 2**30)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        budget = min(budget, int(0.8 * free))
    return budget


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    edges = list(range(0, n, size)) + [n]
    return list(zip(edges[:-1], edges[1:]))


def _tiles(n: int, tile_rows: int) -> list[tuple[int, int, int]]:
    """(start, end, start of its span) of the query tiles: each span of SPAN_ROWS cut into tiles
    of tile_rows, a remainder shorter than MIN_TILE_ROWS joined to the tile before it (a span
    shorter than that is one tile, as it is one product in the unstreamed path)."""
    tiles = []
    for sa, sb in _spans(n, SPAN_ROWS):
        cuts = list(range(sa, sb, tile_rows)) + [sb]
        if len(cuts) > 2 and cuts[-1] - cuts[-2] < MIN_TILE_ROWS:
            del cuts[-2]
        tiles += [(a, b, sa) for a, b in zip(cuts[:-1], cuts[1:])]
    return tiles


def _blocks(tiles, bytes_per_query: int, fixed: int, budget: int):
    """Consecutive runs of whole tiles, each within budget (at least one tile each)."""
    rows = max(1, (budget - fixed) // max(1, bytes_per_query))
    blocks, cur = [], []
    for t in tiles:
        if cur and t[1] - cur[0][0] > rows:
            blocks.append(cur)
            cur = []
        cur.append(t)
    if cur:
        blocks.append(cur)
    return blocks


class _Ranks:
    """The (query, 0-based rank) pairs of the true matches, collected block by block."""

    def __init__(self, labels):
        self.qp, self.gp, self.qc, self.gc = labels
        self.qidx, self.ranks = [], []

    def add(self, s: int, dist: torch.Tensor, what: str) -> None:
        # distances are >= 0 here, and the maximum is NaN or inf as soon as one entry is
        if not bool(torch.isfinite(dist.amax())):
            bad = int(torch.nonzero(~torch.isfinite(dist))[0, 0]) + s
            raise ValueError(f"{what}: non-finite distance for query {bad}")
        e = s + dist.shape[0]
        qi, r = match_ranks(dist, self.qp[s:e], self.gp, self.qc[s:e], self.gc)
        self.qidx.append(qi + s)
        self.ranks.append(r)

    def summary(self, max_rank: int) -> dict:
        return summarise(np.concatenate(self.qidx), np.concatenate(self.ranks), self.qp.size, max_rank)


class _Gallery:
    """Gallery features with their squared norms, and (computed on first use, then shared) the
    gallery-to-gallery part of re-ranking's neighbour search."""

    def __init__(self, feats: torch.Tensor):
        self.f = feats
        self.sq = (feats * feats).sum(1)
        self.n = feats.shape[0]
        self.spans = _spans(self.n, SPAN_ROWS)
        self._lists: dict[int, tuple] = {}

    def lists(self, kk: int):
        """For every gallery image, the kk smallest of p_ij = |g_j|^2 - 2 g_i.g_j over gallery
        images j (self at -|g_i|^2; gallery indices) and the largest, as `re_ranking_features`
        computes them: the products of span pairs on and above the diagonal, the others transposed."""
        if kk not in self._lists:
            f, sq = self.f, self.sq
            best = RunningNearest(self.n, kk, f.device)
            for bi, (a, b) in enumerate(self.spans):
                for c, d in self.spans[bi:]:
                    p = torch.addmm(sq[None, c:d], f[a:b], f[c:d].T, alpha=-2.0)
                    if a == c:
                        ar = torch.arange(b - a, device=f.device)
                        p[ar, ar] = -sq[a:b]
                    best.absorb(a, c, p)
                    if a != c:
                        best.absorb(c, a, transposed(p, sq[c:d], sq[a:b]))
            self._lists[kk] = (best.vals, best.idx, best.top)
        return self._lists[kk]


# ----------------------------------------------------------------------------------------------
# plain Euclidean distances


def _plain(q, gal: _Gallery, labels, max_rank, budget, tile_rows) -> dict:
    """As `evaluate(euclidean_distance(q, g), ...)`, a block of queries at a time."""
    sq_q = (q * q).sum(1)
    ranks = _Ranks(labels)
    # a block's distances (4 bytes each) and the ranking's per-row temporaries
    for block in _blocks(_tiles(q.shape[0], tile_rows), 8 * gal.n, 0, budget):
        s, e = block[0][0], block[-1][1]
        dist = torch.empty((e - s, gal.n), dtype=torch.float32, device=q.device)
        for t0, t1, _ in block:
            _squared_rows(q[t0:t1], sq_q[t0:t1], gal, dist[t0 - s:t1 - s])
        ranks.add(s, dist.clamp_(min=0).sqrt_(), "Euclidean distances")
        del dist
    return ranks.summary(max_rank)


def _squared_rows(q, sq_q, gal: _Gallery, out) -> None:
    """out <- squared distances (not clamped) of queries q to the gallery, as
    `squared_euclidean_distance` and re-ranking compute them: |g|^2 - 2 q.g per gallery span,
    then + |q|^2."""
    for c, d in gal.spans:
        out[:, c:d] = torch.addmm(gal.sq[None, c:d], q, gal.f[c:d].T, alpha=-2.0)
    out += sq_q[:, None]


# ----------------------------------------------------------------------------------------------
# k-reciprocal re-ranking


def _reranked(q, gal: _Gallery, labels, max_rank, budget, tile_rows, k1, k2, lambda_value) -> tuple[dict, dict]:
    """(plain, re-ranked): as `evaluate(euclidean_distance(q, g), ...)` and
    `evaluate(re_ranking_features(q, g, k1, k2, lambda_value), ...)`, a block of queries at a time.

    Pass 1's queries x gallery products are the plain protocol's squared distances too (the same
    arithmetic as `squared_euclidean_distance`), so each query tile is ranked plainly as soon as
    its row of products is complete: the plain protocol costs no product of its own."""
    num_q, num_g = q.shape[0], gal.n
    n = num_q + num_g
    dev = q.device
    k_fwd = min(k1 + 1, n)
    k_half = min(int(round(k1 / 2)) + 1, n)  # Python's round, like np.around: halves to even
    k_qe = min(k2, n)
    k_all = max(k_fwd, k_qe)
    kk = min(k_all + 1, n)  # one more than needed, to see ties across the k-th place
    sq_q = (q * q).sum(1)
    tiles = _tiles(num_q, tile_rows)
    # keep pass 1's queries x gallery distances for pass 2 when they take at most half the budget
    keep = torch.empty((num_q, num_g), dtype=torch.float32, device=dev) if 8 * num_q * num_g <= budget else None
    plain = _Ranks(labels)

    q_vals, q_idx, q_top, g_best = _pass1(q, sq_q, gal, tiles, kk, keep, plain)

    sq = torch.cat([sq_q, gal.sq])
    rowmax = (torch.cat([q_top, g_best.top]) + sq).clamp_(min=0)
    check_rowmax(rowmax)
    vals = (torch.cat([q_vals, g_best.vals]) + sq[:, None]).clamp_(min=0) / rowmax[:, None]
    idx = torch.cat([q_idx, g_best.idx])
    del q_vals, q_idx, q_top, g_best
    src = _QueryGalleryPairs(q, sq_q, gal)
    nn, nn_d = stable_from_candidates(vals, idx, k_all, lambda r: src.full_rows(r) / rowmax[r, None])
    del vals, idx
    v = encode(src, nn, nn_d, rowmax, k_fwd, k_half)
    if k2 != 1:
        v = expand(v, nn[:, :k_qe], n)
    del nn, nn_d
    ranks = _pass2(q, sq_q, gal, tiles, keep, rowmax, v, labels, budget, lambda_value)
    return plain.summary(max_rank), ranks.summary(max_rank)


def _pass1(q, sq_q, gal: _Gallery, tiles, kk: int, keep, plain: _Ranks):
    """Re-ranking's pass 1 over the query tiles: the kk nearest (p-values, indices) and the largest
    p-value of every query row and, merged into the gallery's own lists, of every gallery row
    (q_vals, q_idx, q_top, g_best); each tile's plain Euclidean distances go to `plain`, and its
    squared distances into `keep` when it is not None."""
    num_q, num_g, dev = q.shape[0], gal.n, q.device
    g_vals, g_idx, g_top = gal.lists(kk)
    g_best = RunningNearest.from_state(g_vals.clone(), g_idx + num_q, g_top.clone())
    q_vals = torch.empty((num_q, kk), dtype=torch.float32, device=dev)
    q_idx = torch.empty((num_q, kk), dtype=torch.int64, device=dev)
    q_top = torch.empty(num_q, dtype=torch.float32, device=dev)
    q_spans = _spans(num_q, SPAN_ROWS)
    # one tile's plain Euclidean distances (and its squared distances when they are not kept)
    buf = torch.empty((max(t1 - t0 for t0, t1, _ in tiles), num_g), dtype=torch.float32, device=dev)
    for t0, t1, sa in tiles:
        best = RunningNearest(t1 - t0, kk, dev)
        for c, d in q_spans:
            if c >= sa:  # the unstreamed path's products on and above the diagonal
                p = torch.addmm(sq_q[None, c:d], q[t0:t1], q[c:d].T, alpha=-2.0)
                if c == sa:
                    ar = torch.arange(t1 - t0, device=dev)
                    p[ar, ar + (t0 - sa)] = -sq_q[t0:t1]  # self distance exactly zero
            else:  # ... and below it, transposed
                p = transposed(torch.addmm(sq_q[None, t0:t1], q[c:d], q[t0:t1].T, alpha=-2.0),
                               sq_q[t0:t1], sq_q[c:d])
            best.absorb(0, c, p)
        # the tile's squared distances (as _squared_rows): kept for pass 2 if the budget allows
        rows = keep[t0:t1] if keep is not None else buf[:t1 - t0]
        for c, d in gal.spans:
            p = torch.addmm(gal.sq[None, c:d], q[t0:t1], gal.f[c:d].T, alpha=-2.0)
            best.absorb(0, num_q + c, p)
            rows[:, c:d] = p
            g_best.absorb(c, t0, transposed(p, gal.sq[c:d], sq_q[t0:t1]))
        rows += sq_q[t0:t1, None]
        plain.add(t0, torch.clamp(rows, min=0, out=buf[:t1 - t0]).sqrt_(), "Euclidean distances")
        q_vals[t0:t1], q_idx[t0:t1], q_top[t0:t1] = best.vals, best.idx, best.top
        del best, p, rows
    del buf
    return q_vals, q_idx, q_top, g_best


def _pass2(q, sq_q, gal: _Gallery, tiles, keep, rowmax, v, labels, budget, lambda_value) -> _Ranks:
    """Re-ranking's pass 2, a block of queries at a time: Jaccard distances and the final ranking."""
    num_g, dev = gal.n, q.device
    inverted = InvertedGallery(v, q.shape[0], q.shape[0] + num_g)
    ranks = _Ranks(labels)
    fixed = 4 * 256 * num_g * 4  # the Jaccard's working rows (see jaccard_rows)
    per_query = (0 if keep is not None else 4 * num_g) + 4 * num_g
    for block in _blocks(tiles, per_query, fixed, budget):
        s, e = block[0][0], block[-1][1]
        if keep is not None:
            out = keep[s:e]
        else:
            out = torch.empty((e - s, num_g), dtype=torch.float32, device=dev)
            for t0, t1, _ in block:
                _squared_rows(q[t0:t1], sq_q[t0:t1], gal, out[t0 - s:t1 - s])
        out.clamp_(min=0).div_(rowmax[s:e, None])
        jaccard_rows(out, v, s, inverted, lambda_value)
        ranks.add(s, out, "re-ranked distances")
        del out
    return ranks


class _QueryGalleryPairs:
    """Squared distances between any two of the N = queries + gallery images (queries first), as
    re_ranking_features' _FeatureRows computes them, without concatenating the features."""

    def __init__(self, q, sq_q, gal: _Gallery):
        self.q, self.g = q, gal.f
        self.nq = q.shape[0]
        self.sq = torch.cat([sq_q, gal.sq])

    def _rows(self, idx):
        out = torch.empty((idx.numel(), self.q.shape[1]), dtype=self.q.dtype, device=self.q.device)
        is_q = idx < self.nq
        # index_select/index_copy_: several times faster than boolean-mask indexing
        for rows, feats, offset in ((torch.nonzero(is_q).view(-1), self.q, 0),
                                    (torch.nonzero(~is_q).view(-1), self.g, self.nq)):
            out.index_copy_(0, rows, feats.index_select(0, idx.index_select(0, rows) - offset))
        return out

    def pairs(self, i, j, chunk=1 << 13):
        out = torch.empty(i.numel(), dtype=torch.float32, device=self.q.device)
        for s in range(0, i.numel(), chunk):
            a, b = i[s:s + chunk], j[s:s + chunk]
            dot = (self._rows(a) * self._rows(b)).sum(1)
            out[s:s + chunk] = (self.sq[a] + self.sq[b] - 2.0 * dot).clamp_(min=0)
        out[i == j] = 0.0
        return out

    def full_rows(self, rows):
        """Whole rows, for the rare rows tied at the k-th place (one product with all N columns,
        as the unstreamed path)."""
        f = torch.cat([self.q, self.g])
        blk = torch.addmm(self.sq[rows, None] + self.sq[None, :], f[rows], f.T, alpha=-2.0)
        blk.clamp_(min=0)
        blk[torch.arange(rows.numel(), device=blk.device), rows] = 0.0
        return blk


__all__ = ["DEFAULT_MEMORY_GB", "PROTOCOLS", "evaluate_protocols"]
