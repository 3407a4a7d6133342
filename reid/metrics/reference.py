"""The dense reference k-reciprocal re-ranking, for tests and benchmarks only (never the pipeline).

A plain restatement of the algorithm of Zhong et al. (CVPR 2017) with the structure of the
authors' released numpy code: the N x N matrices of distances, ranks and k-reciprocal features
(N = queries + gallery), an argsort of every row and loops over rows. It shares nothing with the
sparse implementation in `rerank.py`, which the tests check against it, and it holds about
24 bytes x N^2 in float32 (8.2 GiB at Market-1501 scale), which the benchmarks measure.
"""

from __future__ import annotations

import numpy as np


def dense_re_ranking(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3, *, dtype=np.float64, v_dtype=None,
                     argsort_kind="stable"):
    """Re-ranked queries x gallery distances from plain Euclidean distance matrices (numpy).

    q_g (Q x G), q_q (Q x Q), g_g (G x G): any float dtype; half precision is widened to float32
        before squaring (a float16 distance above 255.9 overflows when squared).
    dtype: precision of the distances and of every computation: float64 (the tests' exact
        reference) or float32 (the authors' code).
    v_dtype: storage of the k-reciprocal features V, their expansion and the Jaccard sums (default:
        dtype); np.float16 reproduces the first public port, which torchreid's copy still follows.
    argsort_kind: "stable" breaks ties by index (as reid.metrics); the authors' code uses numpy's
        default "quicksort", which leaves the order of tied distances unspecified.

    Returns a Q x G array of `dtype`. Raises ValueError when the result is not finite.
    """
    v_dtype = dtype if v_dtype is None else v_dtype
    mats = []
    for m in (q_g, q_q, g_g):
        m = np.asarray(m)
        mats.append(m.astype(np.float32) if m.dtype == np.float16 else m)
    q_g, q_q, g_g = mats
    nq = q_g.shape[0]
    d = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(dtype) ** 2
    d = np.transpose(d / np.max(d, axis=0))  # the reference normalises columns, then transposes
    n = d.shape[0]
    rank = np.argsort(d, axis=1, kind=argsort_kind).astype(np.int32)
    half = int(np.around(k1 / 2.0))  # halves to even

    def reciprocal(i, k):  # R(i, k): the k + 1 nearest of i that have i among their k + 1 nearest
        fwd = rank[i, :k + 1]
        return fwd[np.nonzero(rank[fwd, :k + 1] == i)[0]]

    v = np.zeros((n, n), dtype=v_dtype)
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = r
        for c in r:
            rc = reciprocal(c, half)
            if len(np.intersect1d(rc, r)) > 2.0 / 3.0 * len(rc):
                expanded = np.append(expanded, rc)
        expanded = np.unique(expanded)
        w = np.exp(-d[i, expanded])
        v[i, expanded] = w / np.sum(w)
    d = d[:nq]
    if k2 != 1:  # local query expansion over the k2 nearest (self included)
        vq = np.zeros_like(v)
        for i in range(n):
            vq[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = vq
        del vq
    del rank
    inverted = [np.nonzero(v[:, j])[0] for j in range(n)]
    jaccard = np.zeros_like(d)
    for i in range(nq):
        t = np.zeros(n, dtype=v_dtype)  # summed in V's precision, column by column
        for j in np.nonzero(v[i])[0]:
            t[inverted[j]] += np.minimum(v[i, j], v[inverted[j], j])
        jaccard[i] = 1 - t / (2.0 - t)
    final = (jaccard * (1 - lambda_value) + d * lambda_value)[:, nq:]
    if not np.all(np.isfinite(final)):
        raise ValueError("dense_re_ranking: the result is not finite")
    return final
