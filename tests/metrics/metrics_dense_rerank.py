"""A plain dense restatement of k-reciprocal re-ranking (Zhong et al. 2017), for tests only.

Written straight from the algorithm's description, with Python sets and loops and float64, so
that it shares nothing with the sparse implementation under test.
"""

from __future__ import annotations

import numpy as np


def dense_rerank(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3, storage=np.float64):
    """`storage=np.float16` stores V, its expansion and the Jaccard sums in half precision, as the
    first public Python port did (and torchreid's copy still does)."""
    nq = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    d = (full / full.max(axis=0)).T  # the reference normalises columns, then transposes
    n = d.shape[0]
    rank = np.argsort(d, axis=1, kind="stable")

    def reciprocal(i, k):
        return [j for j in rank[i, : k + 1] if i in rank[j, : k + 1]]

    v = np.zeros((n, n), dtype=storage)
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for c in r:
            rc = reciprocal(c, int(round(k1 / 2)))
            if len(set(rc) & set(r)) > 2.0 / 3.0 * len(rc):
                expanded |= set(rc)
        cols = sorted(expanded)
        w = np.exp(-d[i, cols])
        v[i, cols] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)]).astype(storage)
    jaccard = np.zeros((nq, n))
    for q in range(nq):
        for g in range(n):
            t = storage(0)
            for j in np.flatnonzero(np.minimum(v[q], v[g])):
                t = storage(t + min(v[q, j], v[g, j]))  # accumulated in the storage precision
            jaccard[q, g] = storage(1 - t / (storage(2) - t))
    final = (1 - lambda_value) * jaccard + lambda_value * d[:nq]
    return final[:, nq:]
