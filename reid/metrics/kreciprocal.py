"""The steps of k-reciprocal re-ranking (Zhong et al., CVPR 2017) that both of its drivers share:
`rerank.py` (whole distance matrices, or features, at once; its module docstring states the
algorithm) and `stream.py` (the evaluate stage: blocks of queries, the gallery-side work shared).

Nearest-neighbour lists merged over blocks (`RunningNearest`, `transposed`, `stable_from_candidates`),
the sparse k-reciprocal features V (`encode`) and their local query expansion (`expand`), and the
Jaccard distances through an inverted index over the gallery rows of V (`InvertedGallery`,
`jaccard_rows`); `check_params` and `check_rowmax` refuse what the algorithm cannot take. Every
function computes exactly what it computed inside rerank.py before it moved here (same arithmetic,
same order), so the two drivers still agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

_GROUP = 16  # columns per group in the running nearest-neighbour selection
_MAX_GROUPS = 6  # more candidate groups than this in a row: topk that row instead


def transposed(p, sq_rows, sq_cols):
    """The p-values of the transposed block: (p^T - |rows|^2) + |cols|^2, for p holding
    |cols|^2 - 2 S (p's columns are the new rows). A contiguous copy of p^T first (the transpose
    kernel is about twice as fast as subtracting through the transposed view), then in place;
    p itself is left as it was."""
    return p.T.clone(memory_format=torch.contiguous_format).sub_(sq_rows[:, None]).add_(sq_cols[None, :])


class RunningNearest:
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


def check_params(k1, k2, lambda_value, block_rows):
    """ValueError unless k1, k2 and block_rows are positive integers and lambda_value is in [0, 1]."""
    for name, val in (("k1", k1), ("k2", k2), ("block_rows", block_rows)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{name}={val!r}: expected a positive integer")
    if not (isinstance(lambda_value, (int, float, np.floating)) and 0.0 <= float(lambda_value) <= 1.0):
        raise ValueError(f"lambda_value={lambda_value!r}: expected a number in [0, 1]")


def check_rowmax(rowmax):
    """ValueError naming the first image whose largest distance (rowmax, (N,) float32) is not positive."""
    if bool((rowmax <= 0).any()):
        bad = int(torch.nonzero(rowmax <= 0)[0])
        raise ValueError(f"image {bad}: all its distances are zero (duplicated features?)")


def stable_from_candidates(vals, idx, k, full_rows):
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


def encode(src, nn, nn_d, rowmax, k_fwd, k_half, chunk=1024):
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


def expand(v, nbrs, n, chunk=2048):
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


class InvertedGallery:
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


def jaccard_rows(out, v, q0, inv, lambda_value, chunk=256):
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
