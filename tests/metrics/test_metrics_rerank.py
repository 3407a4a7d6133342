"""k-reciprocal re-ranking against a plain dense restatement of the algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.metrics import euclidean_distance, re_ranking, re_ranking_features
from reid.metrics.reference import dense_re_ranking as dense_rerank

# The dense restatement runs in float64, the implementation in float32 (as the authors' code):
# differences are rounding only, a few 1e-7 on values in [0, 1].
TOL = 2e-6


def clustered(rng, nq, ng, dim=8, ids=6, spread=0.5):
    centres = rng.standard_normal((ids, dim))
    q = centres[rng.integers(0, ids, nq)] + spread * rng.standard_normal((nq, dim))
    g = centres[rng.integers(0, ids, ng)] + spread * rng.standard_normal((ng, dim))
    return q.astype(np.float32), g.astype(np.float32)


def dists(q, g):
    return euclidean_distance(q, g), euclidean_distance(q, q), euclidean_distance(g, g)


@pytest.mark.parametrize("nq, ng, k1, k2, lam, block", [
    (7, 30, 5, 3, 0.3, 4),     # odd k1: round(5 / 2) = 2 (halves to even, as np.around)
    (10, 50, 20, 6, 0.3, 16),  # the paper's parameters
    (6, 40, 7, 1, 0.5, 64),    # k2 = 1: no query expansion
    (12, 60, 3, 2, 0.0, 9),    # lambda 0: Jaccard only
    (4, 25, 30, 6, 1.0, 8),    # k1 + 1 > N is clamped (as the reference's slicing); lambda 1
])
def test_matches_dense_restatement(nq, ng, k1, k2, lam, block):
    q, g = clustered(np.random.default_rng(nq * ng), nq, ng)
    qg, qq, gg = dists(q, g)
    expected = dense_rerank(qg, qq, gg, k1, k2, lam)
    got_dense = re_ranking(qg, qq, gg, k1, k2, lam, block_rows=block)
    got_feats = re_ranking_features(q, g, k1, k2, lam, block_rows=block)
    assert got_dense.shape == got_feats.shape == (nq, ng)
    np.testing.assert_allclose(got_dense, expected, atol=TOL, rtol=0)
    np.testing.assert_allclose(got_feats, expected, atol=TOL, rtol=0)


def test_half_precision_port_differs_by_about_1e_3():
    # torchreid's copy of the reference stores V in float16; the authors' current code uses
    # float32, which is what we match (TOL above). Against the float16 port only ~1e-3 holds.
    q, g = clustered(np.random.default_rng(9), 8, 40)
    qg, qq, gg = dists(q, g)
    half = dense_rerank(qg, qq, gg, 20, 6, 0.3, v_dtype=np.float16)
    diff = np.abs(re_ranking(qg, qq, gg, 20, 6, 0.3) - half).max()
    assert 1e-5 < diff < 5e-3


def test_rerank_changes_the_ranking():
    # guards against a degenerate implementation that returns the original distances
    q, g = clustered(np.random.default_rng(1), 10, 60)
    qg, qq, gg = dists(q, g)
    out = re_ranking(qg, qq, gg, 20, 6, 0.3)
    assert not np.array_equal(np.argsort(out, 1), np.argsort(qg, 1))


def test_ties_follow_index_order():
    # integer distances: many exact ties, broken by index in both implementations
    rng = np.random.default_rng(2)
    n = 30
    full = rng.integers(1, 5, (n, n)).astype(np.float64)
    full = np.triu(full, 1) + np.triu(full, 1).T
    nq = 6
    qq, qg, gg = full[:nq, :nq], full[:nq, nq:], full[nq:, nq:]
    np.testing.assert_allclose(re_ranking(qg, qq, gg, 5, 3, 0.3, block_rows=7),
                               dense_rerank(qg, qq, gg, 5, 3, 0.3), atol=TOL, rtol=0)


def test_ties_from_features_follow_index_order():
    # small-integer features: every distance is an exact integer, so exact ties (and duplicated
    # images at distance 0) abound, across block boundaries too; the features path must break them
    # by index exactly as the dense restatement's stable argsort does
    rng = np.random.default_rng(12)
    q = rng.integers(0, 3, (9, 4)).astype(np.float32)
    g = rng.integers(0, 3, (40, 4)).astype(np.float32)
    g[5] = g[17] = q[2]  # duplicates of a query in the gallery
    expected = dense_rerank(*dists(q, g), 6, 3, 0.3)
    np.testing.assert_allclose(re_ranking_features(q, g, 6, 3, 0.3, block_rows=8), expected, atol=TOL, rtol=0)


def test_asymmetric_input_read_as_the_reference():
    # q_q / g_g not exactly symmetric: the reference uses column i of the stacked matrix for row i
    q, g = clustered(np.random.default_rng(3), 5, 20)
    qg, qq, gg = dists(q, g)
    rng = np.random.default_rng(4)
    qq = qq * (1 + 0.01 * rng.random(qq.shape))
    gg = gg * (1 + 0.01 * rng.random(gg.shape))
    np.testing.assert_allclose(re_ranking(qg, qq, gg, 6, 3, 0.3, block_rows=3),
                               dense_rerank(qg, qq, gg, 6, 3, 0.3), atol=TOL, rtol=0)


def test_features_equal_distances_on_larger_case():
    q, g = clustered(np.random.default_rng(5), 40, 300, dim=32, ids=30, spread=0.6)
    a = re_ranking(*dists(q, g), 20, 6, 0.3)
    b = re_ranking_features(q, g, 20, 6, 0.3, block_rows=64)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_torch_in_torch_out_and_deterministic():
    q, g = clustered(np.random.default_rng(6), 8, 40)
    a = re_ranking_features(torch.from_numpy(q), torch.from_numpy(g), 10, 4, 0.3)
    b = re_ranking_features(torch.from_numpy(q), torch.from_numpy(g), 10, 4, 0.3)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float32
    assert torch.equal(a, b)
    np.testing.assert_allclose(a.numpy(), re_ranking_features(q, g, 10, 4, 0.3), atol=0, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k1=0), "k1=0"),
    (dict(k2=1.5), "k2=1.5"),
    (dict(lambda_value=1.5), "lambda_value=1.5"),
])
def test_bad_parameters(kwargs, message):
    q, g = clustered(np.random.default_rng(7), 3, 10)
    with pytest.raises(ValueError, match=message):
        re_ranking_features(q, g, **kwargs)


def test_bad_matrices():
    q, g = clustered(np.random.default_rng(8), 3, 10)
    qg, qq, gg = dists(q, g)
    with pytest.raises(ValueError, match="g_g_dist: 9 rows, expected 10"):
        re_ranking(qg, qq, gg[:9])
    qg = qg.copy()
    qg[0, 0] = np.nan
    with pytest.raises(ValueError, match="q_g_dist: contains NaN"):
        re_ranking(qg, qq, gg)
    with pytest.raises(ValueError, match="feature size"):
        re_ranking_features(q, g[:, :4])
    with pytest.raises(ValueError, match="all its distances are zero"):
        re_ranking_features(np.ones((2, 3)), np.ones((4, 3)))
