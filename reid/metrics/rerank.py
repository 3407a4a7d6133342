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
blocks instead, and shares everything after the neighbour lists. The steps both drivers share
(neighbour lists, the k-reciprocal features V, query expansion, Jaccard) are in `kreciprocal.py`.

Numerics: everything is float32 like the authors' current code (their repository replaced the
original float16 storage of V by float32; torchreid's copy still stores V in float16, which moves
final distances by up to about 1e-3). Sums run in a different order than numpy's, so results agree
with a float32 dense implementation to about 1e-6, not bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _inputs
from . import kreciprocal as kr
from .distance import SPAN

# The published parameters (Zhong et al., CVPR 2017, section 4.2: k1 = 20, k2 = 6, lambda = 0.3).
RERANK_DEFAULTS = {"k1": 20, "k2": 6, "lambda_value": 0.3}
RERANK_KEYS = tuple(RERANK_DEFAULTS)

_PAIR_CHUNK = 1 << 13  # (i, j) pairs per gathered dot-product batch


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
        best = kr.RunningNearest(n, kk, dev)
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
                    best.absorb(c, a, kr.transposed(p, sq[c:d], sq[a:b]))  # |f_a|^2 - 2 S^T
        rowmax = (best.top + sq).clamp_(min=0)
        out.clamp_(min=0).div_(rowmax[:num_q, None])
        vals = (best.vals + sq[:, None]).clamp_(min=0) / rowmax[:, None]
        nn, nn_d = kr.stable_from_candidates(vals, best.idx, k, lambda r: self.full_rows(r) / rowmax[r, None])
        return out, nn, nn_d, rowmax


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
    kr.check_params(k1, k2, lambda_value, block_rows)
    k_fwd = min(k1 + 1, n)
    k_half = min(int(round(k1 / 2)) + 1, n)  # Python's round, like np.around: halves to even
    k_qe = min(k2, n)
    k_all = max(k_fwd, k_qe)
    with torch.inference_mode():
        out, nn, nn_d, rowmax = src.first_pass(num_q, k_all, block_rows)
        kr.check_rowmax(rowmax)
        v = kr.encode(src, nn, nn_d, rowmax, k_fwd, k_half)
        if k2 != 1:
            v = kr.expand(v, nn[:, :k_qe], n)
        _jaccard_into(out, v, num_q, n, lambda_value)
    return out


def rerank_args(rerank: dict) -> dict:
    """The re-ranking parameters of a config-style dict, every one present (unset: RERANK_DEFAULTS).

    rerank: keys among k1, k2, lambda_value. ``lambda`` (config.yaml's spelling of the key) is still
    read as lambda_value, with a DeprecationWarning: in code the parameter is ``lambda_value``
    (reid.typed_config.RerankConfig.lambda_value holds the config's ``lambda``).
    Raises ValueError on a non-dict, an unknown key, or both `lambda` and `lambda_value`. The
    values are checked where they are used (k1, k2 positive integers, lambda_value in [0, 1]).
    """
    if not isinstance(rerank, dict):
        raise ValueError(f"rerank={rerank!r}: expected None or a dict with keys {RERANK_KEYS}")
    args = dict(rerank)
    if "lambda" in args:
        if "lambda_value" in args:
            raise ValueError("rerank: give either 'lambda' or 'lambda_value', not both")
        import warnings

        warnings.warn("rerank: 'lambda' is config.yaml's key; pass 'lambda_value' (the parameter's name) "
                      "in code", DeprecationWarning, stacklevel=3)
        args["lambda_value"] = args.pop("lambda")
    unknown = set(args) - set(RERANK_KEYS)
    if unknown:
        raise ValueError(f"rerank: unknown keys {sorted(unknown)}, expected {RERANK_KEYS}")
    return {**RERANK_DEFAULTS, **args}


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
        kr.check_rowmax(mx)  # before dividing by it
        blk.div_(mx[:, None])
        rowmax[s:e] = mx
        vals, idx = torch.topk(blk, min(k + 1, n), dim=1, largest=False)
        nn[s:e], nn_d[s:e] = kr.stable_from_candidates(vals, idx, k, lambda r: blk[r])
        if s < num_q:
            out[s:min(e, num_q)] = blk[: min(e, num_q) - s, num_q:]
    return out, nn, nn_d, rowmax


def _jaccard_into(out, v, num_q, n, lambda_value, chunk=256):
    """out[q, g] <- (1 - lambda) * Jaccard(q, g) + lambda * out[q, g] (out holds d(q, g))."""
    kr.jaccard_rows(out, v, 0, kr.InvertedGallery(v, num_q, n), lambda_value, chunk)


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
