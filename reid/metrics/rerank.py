"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), as the authors' released Python code behaves.

The algorithm, on the N = queries + gallery images (queries first):
 1. d(i, j): squared Euclidean distance; each row i divided by its maximum (the reference divides
    the columns of the symmetric matrix and transposes, which for symmetric input is the same; for
    `re_ranking` we follow the reference literally: row i of d is column i of the input divided by
    that column's maximum).
 2. Ranking of each row by d, self included (ties: lower index first; the reference's unstable
    argsort leaves them unspecified).
 3. R(i, k): the k-reciprocal set: j among the k + 1 nearest of i with i among the k + 1 nearest
    of j.  R*(i) = R(i, k1) plus R(c, round(k1 / 2)) for every c in R(i, k1) whose half-size set
    has more than 2/3 of its members in R(i, k1).  (`round` is numpy's: halves to even.)
 4. V[i, j] = exp(-d(i, j)) / sum over R*(i), for j in R*(i); zero elsewhere.
 5. Local query expansion (k2 > 1): V[i] <- mean of V[j] over the k2 nearest j of i (self included).
 6. Jaccard distance 1 - t / (2 - t), t = sum_j min(V[q, j], V[g, j]), for query rows only.
 7. final = (1 - lambda) * Jaccard + lambda * d, on the queries x gallery block.

Unlike the reference (about 24 bytes x N^2: 8.2 GiB at Market-1501 scale), nothing here holds an
N x N matrix when starting from features: d is made by blocks of the symmetric Gram matrix (only
blocks on and above the diagonal, each used for its rows and, transposed, its columns) and only the
nearest neighbours of every row are kept; V is sparse (a few dozen entries a row); Jaccard is
computed through an inverted index restricted to gallery rows. Memory is dominated by the queries x
gallery result; `stream.py` computes the same numbers for the evaluate stage without ever holding
it, a block of queries at a time, sharing the gallery-to-gallery work across blocks and protocols. `re_ranking` (given the three distance matrices) takes rows of those matrices by
blocks instead, and shares everything after the neighbour lists.

Numerics: everything is float32 like the authors' current code (their repository replaced the
original float16 storage of V by float32; torchreid's copy still stores V in float16, which moves
final distances by up to about 1e-3). Sums run in a different order than numpy's, so results agree
with a float32 dense implementation to about 1e-6, not bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _inputs
from .distance import SPAN

# The published parameters (Zhong et al., CVPR 2017, section 4.2: k1 = 20, k2 = 6, lambda = 0.3).
RERANK_DEFAULTS = {"k1": 20, "k2": 6, "lambda_value": 0.3}
RERANK_KEYS = tuple(RERANK_DEFAULTS)

_PAIR_CHUNK = 1 << 13  # (i, j) pairs per gathered dot-product batch
_GROUP = 16  # columns per group in the running nearest-neighbour selection
_MAX_GROUPS = 6  # more candidate groups than this in a row: topk that row instead


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3, *, device=None,
               block_rows=1024):
    """Re-ranked queries x gallery distances from plain (not squared) Euclidean distance matrices.

    q_g_dist (Q x G), q_q_dist (Q x Q), g_g_dist (G x G); k1, k2 >= 1; 0 <= lambda_value <= 1.
    Any float dtype: float64 is squared in float64 (as the reference), float16 and bfloat16 are
    widened to float32 first. Numpy in, numpy out (float32); torch in, torch out on the working device. `device` (or CUDA
    input) runs it on that device. As the reference's slicing does, k1 + 1, round(k1 / 2) + 1 and
    k2 are clamped to N = Q + G. Raises ValueError on shape mismatches, NaN/inf, bad parameters,
    and an image whose distances are all zero (its row cannot be normalised).
    """
    q_g_dist, q_q_dist, g_g_dist = (_array(x, n) for x, n in (
        (q_g_dist, "q_g_dist"), (q_q_dist, "q_q_dist"), (g_g_dist, "g_g_dist")))
    num_q, num_g = _shape2(q_g_dist, "q_g_dist")
    _inputs.matrix(q_g_dist, "q_g_dist")
    _inputs.matrix(q_q_dist, "q_q_dist", num_q, num_q)
    _inputs.matrix(g_g_dist, "g_g_dist", num_g, num_g)
    dev = _inputs.resolve_device(device, q_g_dist, q_q_dist, g_g_dist)
    rows = _DenseRows(*(_as_float(x, name, dev) for x, name in (
        (q_g_dist, "q_g_dist"), (q_q_dist, "q_q_dist"), (g_g_dist, "g_g_dist"))))
    out = _rerank(rows, num_q, num_q + num_g, k1, k2, lambda_value, dev, block_rows)
    _inputs.finite_result(out, "re_ranking")
    return out if _inputs.is_tensor(q_g_dist) else out.cpu().numpy()


def re_ranking_features(q_feats, g_feats, k1=20, k2=6, lambda_value=0.3, *, device=None,
                        block_rows=SPAN):
    """The same as `re_ranking(euclidean(q, g), euclidean(q, q), euclidean(g, g), ...)` from features
    (Q x D and G x D), without ever holding an N x N matrix. Numpy in, numpy out; torch in, torch
    out. Peak memory is about the Q x G float32 result plus a few block_rows^2 buffers.
    """
    q_feats, g_feats = _array(q_feats, "q_feats"), _array(g_feats, "g_feats")
    num_q, dim = _shape2(q_feats, "q_feats")
    num_g, g_dim = _shape2(g_feats, "g_feats")
    if g_dim != dim:
        raise ValueError(f"g_feats: feature size {g_dim} differs from q_feats' {dim}")
    _inputs.matrix(q_feats, "q_feats")
    _inputs.matrix(g_feats, "g_feats")
    dev = _inputs.resolve_device(device, q_feats, g_feats)
    feats = torch.cat([_inputs.float_tensor(q_feats, "q_feats", dev),
                       _inputs.float_tensor(g_feats, "g_feats", dev)])
    out = _rerank(_FeatureRows(feats), num_q, num_q + num_g, k1, k2, lambda_value, dev, block_rows)
    _inputs.finite_result(out, "re_ranking_features")
    return out if _inputs.is_tensor(q_feats) else out.cpu().numpy()


# ----------------------------------------------------------------------------------------------
# where the squared distances come from


class _FeatureRows:
    """Squared Euclidean distances computed on demand from features (N x D).

    Pass 1 (`first_pass`) works on blocks of the symmetric Gram matrix S = F F^T, computing only
    the blocks on and above the diagonal (half the matrix products) and using each one for its
    rows and, transposed, for its columns. Within row i, distances are ranked by
    p_ij = |f_j|^2 - 2 f_i.f_j, which differs from the squared distance by the row constant |f_i|^2.
    """

    def __init__(self, feats: torch.Tensor):
        self.f = feats.contiguous()
        self.sq = (self.f * self.f).sum(1)

    def full_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Exact squared distances of a few whole rows (used for rows with ties at the k-th place)."""
        blk = torch.addmm(self.sq[rows, None] + self.sq[None, :], self.f[rows], self.f.T, alpha=-2.0)
        blk.clamp_(min=0)
        blk[torch.arange(rows.numel(), device=blk.device), rows] = 0.0
        return blk

    def pairs(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        out = torch.empty(i.numel(), dtype=torch.float32, device=self.f.device)
        for s in range(0, i.numel(), _PAIR_CHUNK):
            a, b = i[s:s + _PAIR_CHUNK], j[s:s + _PAIR_CHUNK]
            dot = (self.f[a] * self.f[b]).sum(1)
            out[s:s + _PAIR_CHUNK] = (self.sq[a] + self.sq[b] - 2.0 * dot).clamp_(min=0)
        out[i == j] = 0.0
        return out

    def first_pass(self, num_q: int, k: int, block: int):
        """(normalised queries x gallery distances, k nearest of every row and their normalised
        distances, row maxima)."""
        f, sq = self.f, self.sq
        n, dev = f.shape[0], f.device
        kk = min(k + 1, n)  # one more than needed, to see ties across the k-th place
        best = _RunningNearest(n, kk, dev)
        out = torch.empty((num_q, n - num_q), dtype=torch.float32, device=dev)
        # block boundaries include num_q, so that every query x gallery block is a whole block
        edges = sorted(set(list(range(0, num_q, block)) + list(range(num_q, n, block)) + [n]))
        spans = list(zip(edges[:-1], edges[1:]))

        for bi, (a, b) in enumerate(spans):
            for c, d in spans[bi:]:
                p = torch.addmm(sq[None, c:d], f[a:b], f[c:d].T, alpha=-2.0)
                if a == c:
                    ar = torch.arange(b - a, device=dev)
                    p[ar, ar] = -sq[a:b]  # self distance exactly zero
                best.absorb(a, c, p)
                if b <= num_q <= c:  # a query x gallery block
                    out[a:b, c - num_q:d - num_q] = p + sq[a:b, None]
                if a != c:
                    best.absorb(c, a, _transposed(p, sq[c:d], sq[a:b]))  # |f_a|^2 - 2 S^T
        rowmax = (best.top + sq).clamp_(min=0)
        out.clamp_(min=0).div_(rowmax[:num_q, None])
        vals = (best.vals + sq[:, None]).clamp_(min=0) / rowmax[:, None]
        nn, nn_d = _stable_from_candidates(vals, best.idx, k, lambda r: self.full_rows(r) / rowmax[r, None])
        return out, nn, nn_d, rowmax


def _transposed(p, sq_rows, sq_cols):
    """The p-values of the transposed block: (p^T - |rows|^2) + |cols|^2, for p holding
    |cols|^2 - 2 S (p's columns are the new rows). A contiguous copy of p^T first (the transpose
    kernel is about twice as fast as subtracting through the transposed view), then in place;
    p itself is left as it was."""
    return p.T.clone(memory_format=torch.contiguous_format).sub_(sq_rows[:, None]).add_(sq_cols[None, :])


class _RunningNearest:
    """The kk smallest values (and their columns) of every row, and its maximum, merged over blocks.

    A block's entries can only enter a row's list if they are below the row's current kk-th value.
    After the first block of a row this is a handful, so the block is scanned once for the minimum
    of each group of _GROUP columns and only groups whose minimum passes the threshold are looked
    at; the very first block of a row, and rows with many passing groups, go through topk.
    """

    def __init__(self, n, kk, dev):
        self.kk, self.dev = kk, dev
        self.vals = torch.full((n, kk), float("inf"), device=dev)
        self.idx = torch.zeros((n, kk), dtype=torch.int64, device=dev)
        self.top = torch.full((n,), -float("inf"), device=dev)

    @classmethod
    def from_state(cls, vals, idx, top):
        """Continue from lists made earlier (rows n x kk, as `vals`, `idx`, `top` of another)."""
        self = cls.__new__(cls)
        self.kk, self.dev = vals.shape[1], vals.device
        self.vals, self.idx, self.top = vals, idx, top
        return self

    def absorb(self, r0: int, c0: int, p: torch.Tensor):
        nr, w = p.shape
        rows = slice(r0, r0 + nr)
        thr = self.vals[rows, -1]
        if bool(torch.isinf(thr).any()):  # a row's first block: nothing to prune with yet
            self.top[rows] = torch.maximum(self.top[rows], p.amax(1))
            v, ix = torch.topk(p, min(self.kk, w), dim=1, largest=False)
            self._merge(r0, torch.arange(nr, device=self.dev), v, ix + c0)
            return
        g = _GROUP
        ng = w // g  # group t holds columns t, t + ng, t + 2 ng, ... (reduced across contiguous rows
        full = ng * g  # of the (g, ng) view: vectorises far better than contiguous groups)
        mins = [p[:, :full].view(nr, g, ng).amin(1)] if ng else []
        if full < w:  # the last w - full columns form one more group
            mins.append(p[:, full:].amin(1, keepdim=True))
        gmin = torch.cat(mins, 1) if len(mins) > 1 else mins[0]
        self.top[rows] = torch.maximum(self.top[rows], p.amax(1))
        r, grp = torch.nonzero(gmin < thr[:, None], as_tuple=True)
        if r.numel() == 0:
            return
        per_row = torch.bincount(r, minlength=nr)
        heavy = per_row > _MAX_GROUPS  # rows whose threshold is still loose: topk on those rows
        if bool(heavy.any()):
            hrows = torch.nonzero(heavy).flatten()
            v, ix = torch.topk(p[hrows], min(self.kk, w), dim=1, largest=False)
            self._merge(r0, hrows, v, ix + c0)
            light = ~heavy[r]
            r, grp = r[light], grp[light]
            per_row = per_row.masked_fill(heavy, 0)
            if r.numel() == 0:
                return
        lrows, slot_of = torch.unique(r, return_inverse=True)  # r is sorted: rows with candidates
        slots = int(per_row.max())
        t = torch.arange(g, device=self.dev)
        cols = torch.where((grp < ng)[:, None], grp[:, None] + ng * t, full + t)
        inside = cols < w
        cols.clamp_(max=w - 1)
        cand = p[r[:, None], cols]
        cand.masked_fill_(~inside, float("inf"))
        slot = torch.arange(r.numel(), device=self.dev) - (torch.cumsum(per_row, 0) - per_row)[r]
        v = torch.full((lrows.numel(), slots, g), float("inf"), device=self.dev)
        ix = torch.zeros((lrows.numel(), slots, g), dtype=torch.int64, device=self.dev)
        v[slot_of, slot] = cand
        ix[slot_of, slot] = cols + c0
        self._merge(r0, lrows, v.view(lrows.numel(), -1), ix.view(lrows.numel(), -1))

    def _merge(self, r0, local_rows, v, ix):
        rows = local_rows + r0
        cv = torch.cat([self.vals[rows], v], dim=1)
        ci = torch.cat([self.idx[rows], ix], dim=1)
        v2, sel = torch.topk(cv, self.kk, dim=1, largest=False)
        self.vals[rows], self.idx[rows] = v2, ci.gather(1, sel)


class _DenseRows:
    """Squared entries of the user's matrices, read as the reference reads them.

    The reference stacks M = [[qq, qg], [qg^T, gg]] and, after normalising, uses M^T; row i of
    M^T is [qq[:, i], qg[i, :]] for a query and [qg[:, i - Q], gg[:, i - Q]] for a gallery image.
    Squaring happens in the input's precision, then float32, as `np.power(M, 2).astype(float32)`.
    """

    def __init__(self, qg: torch.Tensor, qq: torch.Tensor, gg: torch.Tensor):
        self.qg, self.qq, self.gg = qg, qq, gg
        self.nq = qq.shape[0]
        self.n = self.nq + gg.shape[0]

    def rows(self, s: int, e: int) -> torch.Tensor:
        q = self.nq
        parts = []
        if s < q:
            a, b = s, min(e, q)
            parts.append(torch.cat([self.qq[:, a:b].T, self.qg[a:b]], dim=1))
        if e > q:
            a, b = max(s, q) - q, e - q
            parts.append(torch.cat([self.qg[:, a:b].T, self.gg[:, a:b].T], dim=1))
        return torch.cat(parts).square().to(torch.float32)

    def first_pass(self, num_q: int, k: int, block: int):
        return _row_pass(self, num_q, k, block)

    def pairs(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        q = self.nq
        out = torch.empty(i.numel(), dtype=torch.float32, device=i.device)
        iq, jq = i < q, j < q
        for mask, mat, r, c in (
            (iq & jq, self.qq, j, i),            # M[j, i] with both queries
            (iq & ~jq, self.qg, i, j - q),       # M[j, i] = qg^T[j - Q, i] = qg[i, j - Q]
            (~iq & jq, self.qg, j, i - q),       # M[j, i] = qg[j, i - Q]
            (~iq & ~jq, self.gg, j - q, i - q),  # M[j, i] = gg[j - Q, i - Q]
        ):
            out[mask] = mat[r[mask], c[mask]].square().to(torch.float32)
        return out


# ----------------------------------------------------------------------------------------------
# the algorithm


def _rerank(src, num_q, n, k1, k2, lambda_value, dev, block_rows):
    _check_params(k1, k2, lambda_value, block_rows)
    k_fwd = min(k1 + 1, n)
    k_half = min(int(round(k1 / 2)) + 1, n)  # Python's round, like np.around: halves to even
    k_qe = min(k2, n)
    k_all = max(k_fwd, k_qe)
    with torch.inference_mode():
        out, nn, nn_d, rowmax = src.first_pass(num_q, k_all, block_rows)
        _check_rowmax(rowmax)
        v = _encode(src, nn, nn_d, rowmax, k_fwd, k_half)
        if k2 != 1:
            v = _expand(v, nn[:, :k_qe], n)
        _jaccard_into(out, v, num_q, n, lambda_value)
    return out


def rerank_args(rerank: dict) -> dict:
    """The re-ranking parameters of a config-style dict, every one present (unset: RERANK_DEFAULTS).

    rerank: keys among k1, k2, lambda_value; the config's `lambda` is accepted for lambda_value.
    Raises ValueError on a non-dict, an unknown key, or both `lambda` and `lambda_value`. The
    values are checked where they are used (k1, k2 positive integers, lambda_value in [0, 1]).
    """
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
    return {**RERANK_DEFAULTS, **args}


def _check_params(k1, k2, lambda_value, block_rows):
    for name, val in (("k1", k1), ("k2", k2), ("block_rows", block_rows)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{name}={val!r}: expected a positive integer")
    if not (isinstance(lambda_value, (int, float, np.floating)) and 0.0 <= float(lambda_value) <= 1.0):
        raise ValueError(f"lambda_value={lambda_value!r}: expected a number in [0, 1]")


def _check_rowmax(rowmax):
    if bool((rowmax <= 0).any()):
        bad = int(torch.nonzero(rowmax <= 0)[0])
        raise ValueError(f"image {bad}: all its distances are zero (duplicated features?)")


def _row_pass(src, num_q, k, block_rows):
    """Pass 1 over blocks of whole rows: the normalised query x gallery block, the k nearest of
    every row in (value, index) order with their normalised distances, and the row maxima."""
    n = src.n
    dev = src.qg.device
    nn = torch.empty((n, k), dtype=torch.int64, device=dev)
    nn_d = torch.empty((n, k), dtype=torch.float32, device=dev)
    rowmax = torch.empty(n, dtype=torch.float32, device=dev)
    out = torch.empty((num_q, n - num_q), dtype=torch.float32, device=dev)
    for s in range(0, n, block_rows):
        e = min(s + block_rows, n)
        blk = src.rows(s, e)
        mx = blk.max(dim=1).values
        _check_rowmax(mx)  # before dividing by it
        blk.div_(mx[:, None])
        rowmax[s:e] = mx
        vals, idx = torch.topk(blk, min(k + 1, n), dim=1, largest=False)
        nn[s:e], nn_d[s:e] = _stable_from_candidates(vals, idx, k, lambda r: blk[r])
        if s < num_q:
            out[s:min(e, num_q)] = blk[: min(e, num_q) - s, num_q:]
    return out, nn, nn_d, rowmax


def _stable_from_candidates(vals, idx, k, full_rows):
    """The k nearest (indices, values) in (value, index) order, from the k + 1 smallest candidates.

    topk's order among equal values is unspecified: the candidates are re-sorted by index, then
    stably by value. When the k-th and (k + 1)-th values tie, topk may have dropped any of the tied
    entries, so those rows are redone from their whole row (`full_rows(row_indices)`).
    """
    idx, perm = torch.sort(idx, dim=1)
    vals = vals.gather(1, perm)
    order = torch.sort(vals, dim=1, stable=True).indices
    idx, vals = idx.gather(1, order), vals.gather(1, order)
    if vals.shape[1] > k:
        ties = torch.nonzero(vals[:, k] == vals[:, k - 1]).flatten()
        if ties.numel():
            vals[ties, :k], idx[ties, :k] = _first_k_stable(full_rows(ties), k)
    return idx[:, :k].contiguous(), vals[:, :k].contiguous()


def _first_k_stable(rows: torch.Tensor, k: int):
    """(values, indices) of the first k entries of each row's stable sort (by value, then index),
    in that order, without sorting whole rows: everything below the k-th smallest value, plus as
    many entries equal to it as are needed, the lowest indices first."""
    w = torch.kthvalue(rows, k, dim=1).values[:, None]
    below = rows < w
    equal = rows == w
    need = k - below.sum(1, keepdim=True)
    keep = below | (equal & (torch.cumsum(equal, dim=1) <= need))
    r, c = torch.nonzero(keep, as_tuple=True)  # row-major: k per row, in index order
    c = c.view(-1, k)
    v = rows[r, c.flatten()].view(-1, k)
    order = torch.sort(v, dim=1, stable=True).indices
    return v.gather(1, order), c.gather(1, order)


def _reciprocal(nn: torch.Tensor, k: int) -> torch.Tensor:
    """mask[i, p]: is i among the k nearest of its p-th nearest neighbour nn[i, p] (p < k)?"""
    fwd = nn[:, :k]
    me = torch.arange(nn.shape[0], device=nn.device)[:, None, None]
    return (fwd[fwd] == me).any(-1)


def _encode(src, nn, nn_d, rowmax, k_fwd, k_half, chunk=1024):
    """The sparse k-reciprocal feature V as CSR (crow, col, val).

    The distances d(i, j) for j in R*(i) are mostly already known from i's nearest-neighbour list
    (`nn_d`); only the others are computed.
    """
    n = nn.shape[0]
    dev = nn.device
    fwd, half = nn[:, :k_fwd], nn[:, :k_half]
    recip, recip_half = _reciprocal(nn, k_fwd), _reciprocal(nn, k_half)
    counts, cols, vals = [], [], []
    chunk = max(1, min(chunk, (1 << 25) // n))  # the membership marks below: at most 32 MiB
    mark = torch.zeros((min(chunk, n), n), dtype=torch.bool, device=dev)  # mark[i, j]: j in R(i)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        cand, in_r = fwd[s:e], recip[s:e]                  # R(i): cand where in_r
        h_ids, h_in = half[cand], recip_half[cand]          # R(c, k1/2) of each candidate c
        r_row, r_pos = torch.nonzero(in_r, as_tuple=True)
        r_col = cand[r_row, r_pos]
        mark[r_row, r_col] = True
        inside = mark[:e - s].gather(1, h_ids.reshape(e - s, -1)).view(h_ids.shape)  # h_ids in R(i)?
        mark[r_row, r_col] = False
        n_inside = (inside & h_in).sum(-1).to(torch.float64)
        size = h_in.sum(-1).to(torch.float64)
        accept = in_r & (n_inside > (2.0 / 3.0) * size)    # same float64 test as the reference
        members = torch.cat([torch.where(in_r, cand, -1),
                             torch.where(accept[..., None] & h_in, h_ids, -1).flatten(1)], dim=1)
        members = torch.sort(members, dim=1).values
        keep = members >= 0
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]    # unique
        rows, pos = torch.nonzero(keep, as_tuple=True)
        j = members[rows, pos]
        i = rows + s
        hit = nn[i] == j[:, None]
        found = hit.any(1)
        d = torch.where(hit, nn_d[i], 0.0).sum(1)
        miss = torch.nonzero(~found).flatten()
        if miss.numel():
            d[miss] = src.pairs(i[miss], j[miss]) / rowmax[i[miss]]
        w = torch.exp(-d)
        wsum = torch.zeros(e - s, dtype=torch.float32, device=dev).index_add_(0, rows, w)
        counts.append(keep.sum(1))
        cols.append(j)
        vals.append(w / wsum[rows])
    crow = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    crow[1:] = torch.cumsum(torch.cat(counts), 0)
    return crow, torch.cat(cols), torch.cat(vals)


def _expand(v, nbrs, n, chunk=2048):
    """Local query expansion: row i <- mean of the rows nbrs[i] (sparse in, sparse out)."""
    crow, col, val = v
    dev = crow.device
    k = nbrs.shape[1]
    lens = crow[1:] - crow[:-1]
    counts, cols, vals = [], [], []
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        src_rows = nbrs[s:e].flatten()
        seg = lens[src_rows]
        dst = torch.arange(s, e, device=dev).repeat_interleave(k).repeat_interleave(seg)
        pos = _segment_positions(crow[src_rows], seg)
        key = dst * n + col[pos]
        uniq, inv = torch.unique(key, sorted=True, return_inverse=True)
        summed = torch.zeros(uniq.numel(), dtype=torch.float32, device=dev).index_add_(0, inv, val[pos])
        rows = uniq // n
        counts.append(torch.bincount(rows - s, minlength=e - s))
        cols.append(uniq % n)
        vals.append(summed / k)
    new_crow = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    new_crow[1:] = torch.cumsum(torch.cat(counts), 0)
    return new_crow, torch.cat(cols), torch.cat(vals)


def _segment_positions(starts: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Concatenation of arange(starts[t], starts[t] + lens[t]) over t."""
    total = int(lens.sum())
    offs = torch.cumsum(lens, 0) - lens
    return torch.arange(total, device=lens.device) - torch.repeat_interleave(offs - starts, lens)


class _InvertedGallery:
    """Inverted index over the gallery rows of V: for each column j, the gallery rows g with
    V[g, j] != 0 (`rows`, gallery indices, ascending) and those values (`vals`)."""

    def __init__(self, v, num_q, n):
        crow, col, val = v
        dev = crow.device
        self.num_g = n - num_q
        g_start = int(crow[num_q])
        g_rows = torch.repeat_interleave(torch.arange(self.num_g, device=dev), crow[num_q + 1:] - crow[num_q:-1])
        g_cols, g_vals = col[g_start:], val[g_start:]
        by_col = torch.sort(g_cols, stable=True).indices
        self.rows, self.vals = g_rows[by_col], g_vals[by_col]
        self.col_len = torch.bincount(g_cols, minlength=n)
        self.col_start = torch.cumsum(self.col_len, 0) - self.col_len


def _jaccard_into(out, v, num_q, n, lambda_value, chunk=256):
    """out[q, g] <- (1 - lambda) * Jaccard(q, g) + lambda * out[q, g] (out holds d(q, g))."""
    _jaccard_rows(out, v, 0, _InvertedGallery(v, num_q, n), lambda_value, chunk)


def _jaccard_rows(out, v, q0, inv, lambda_value, chunk=256):
    """The same for the query rows q0 .. q0 + len(out) - 1 (out holds their d(q, g)).

    Each (q, g) sum runs over q's entries of V in column order whatever the chunking, so a block
    of queries gets exactly the values it gets among all queries.
    """
    crow, col, val = v
    dev = crow.device
    num_g = inv.num_g
    # two working buffers reused by every chunk, and arithmetic in place: the same operations in
    # the same order as 1 - t / (2 - t), then jaccard * (1 - lambda) + d * lambda
    buf = torch.empty(min(chunk, out.shape[0]) * num_g, dtype=torch.float32, device=dev)
    den = torch.empty_like(buf)
    for s in range(0, out.shape[0], chunk):
        e = min(s + chunk, out.shape[0])
        qs, qe = q0 + s, q0 + e
        a, b = int(crow[qs]), int(crow[qe])
        q_local = torch.repeat_interleave(torch.arange(e - s, device=dev), crow[qs + 1:qe + 1] - crow[qs:qe])
        j, vq = col[a:b], val[a:b]
        seg = inv.col_len[j]
        pos = _segment_positions(inv.col_start[j], seg)
        target = q_local.repeat_interleave(seg).mul_(num_g).add_(inv.rows.index_select(0, pos))
        contrib = torch.minimum(vq.repeat_interleave(seg), inv.vals.index_select(0, pos))
        n = (e - s) * num_g
        t = buf[:n].zero_().index_add_(0, target, contrib).view(e - s, num_g)
        d = torch.neg(t, out=den[:n].view(e - s, num_g)).add_(2.0)  # 2 - t
        t.div_(d).neg_().add_(1.0).mul_(1 - lambda_value)  # the Jaccard distance, times 1 - lambda
        out[s:e].mul_(lambda_value).add_(t)


def _array(x, name):
    return x if _inputs.is_tensor(x) else _inputs.to_numpy(x, name)


def _shape2(x, name):
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name}: empty matrix, shape {shape}")
    return int(shape[0]), int(shape[1])


def _as_float(x, name, dev):
    """A torch tensor on `dev`: float64 kept as float64 (squared before the cast, as the reference),
    anything else (float16, bfloat16, integers) as float32: a float16 distance above 255.9 would
    overflow when squared."""
    if _inputs.is_tensor(x):
        t = x.detach()
    else:
        t = torch.from_numpy(np.ascontiguousarray(_inputs.to_numpy(x, name)))
    return _inputs.at_least_float32(t).to(dev)
