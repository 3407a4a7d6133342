"""Multi-query pooling, the distance helper and the pipeline-facing evaluate_features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.metrics import (evaluate, evaluate_features, evaluate_multi_query, euclidean_distance,
                          pool_multi_query, re_ranking_features)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def toy(rng, nq=12, ng=80, nmq=50, dim=6, ids=5, cams=3):
    centres = rng.standard_normal((ids + 1, dim))

    def make(n, pid_low):
        pids = rng.integers(pid_low, ids + 1, n)
        feats = centres[np.maximum(pids, 0)] + 0.7 * rng.standard_normal((n, dim))
        return feats.astype(np.float32), pids, rng.integers(1, cams + 1, n)

    return make(nq, 1), make(ng, -1), make(nmq, 1)


def test_euclidean_distance_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 5)), rng.standard_normal((9, 5))
    expected = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(euclidean_distance(a, b, block_rows=3), expected, atol=1e-5)
    t = euclidean_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(t, torch.Tensor)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooling_brute_force(pooling):
    rng = np.random.default_rng(1)
    (qf, qp, qc), _, (mf, mp, mc) = toy(rng)
    qp[0], qc[0] = 5, 3
    keep = ~((mp == 5) & (mc == 3))  # query 0 has no gt_bbox image of its pid and camera
    mf, mp, mc = mf[keep], mp[keep], mc[keep]
    got = pool_multi_query(qp, qc, mf, mp, mc, pooling=pooling, q_feats=qf)
    for i in range(len(qp)):
        group = unit(mf[(mp == qp[i]) & (mc == qc[i])].astype(np.float64))
        if len(group) == 0:
            expected = unit(qf[i].astype(np.float64))
        else:
            expected = unit(group.mean(0) if pooling == "mean" else group.max(0))
        np.testing.assert_allclose(got[i], expected, atol=1e-6)


def test_pooling_without_fallback_features_names_the_query():
    (qf, qp, qc), _, (mf, mp, mc) = toy(np.random.default_rng(2))
    qp[3], qc[3] = 4, 9
    with pytest.raises(ValueError, match="query 3 .pid 4, camera 9. has no gt_bbox image"):
        pool_multi_query(qp, qc, mf, mp, mc)
    with pytest.raises(ValueError, match="pooling='median'"):
        pool_multi_query(qp, qc, mf, mp, mc, pooling="median", q_feats=qf)


def test_evaluate_features_keys_and_values():
    (qf, qp, qc), (gf, gp, gc), _ = toy(np.random.default_rng(3))
    out = evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=50)
    full = evaluate(euclidean_distance(qf, gf), qp, gp, qc, gc, max_rank=50)
    assert out["mAP"] == pytest.approx(full["mAP"])
    assert out["mAP_trapezoid"] == pytest.approx(full["mAP_trapezoid"])
    assert out["mINP"] == pytest.approx(full["mINP"])
    assert out["cmc"] == pytest.approx(list(full["cmc"]))
    for k in (1, 5, 10, 20):
        assert out[f"rank{k}"] == pytest.approx(full["cmc"][k - 1])
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mAP_trapezoid", "mINP"):
        assert 0.0 <= out[key] <= 1.0 and isinstance(out[key], float)


def test_evaluate_features_small_gallery_clamps_the_cmc_only():
    (qf, qp, qc), (gf, gp, gc), _ = toy(np.random.default_rng(4), ng=15)
    out = evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=50)
    assert len(out["cmc"]) == 15
    assert out["rank20"] == out["cmc"][-1]  # every true match lies within the 15 gallery images


def test_evaluate_features_rerank():
    (qf, qp, qc), (gf, gp, gc), _ = toy(np.random.default_rng(5))
    out = evaluate_features(qf, gf, qp, gp, qc, gc, rerank={"k1": 8, "k2": 3, "lambda": 0.3})
    full = evaluate(re_ranking_features(qf, gf, 8, 3, 0.3), qp, gp, qc, gc, max_rank=50)
    assert out["mAP"] == pytest.approx(full["mAP"])
    with pytest.raises(ValueError, match="unknown keys"):
        evaluate_features(qf, gf, qp, gp, qc, gc, rerank={"k": 8})


def test_evaluate_multi_query_pools_then_evaluates():
    (qf, qp, qc), (gf, gp, gc), (mf, mp, mc) = toy(np.random.default_rng(6))
    out = evaluate_multi_query(qf, gf, qp, gp, qc, gc, mf, mp, mc, pooling="max")
    pooled = pool_multi_query(qp, qc, mf, mp, mc, pooling="max", q_feats=qf)
    expected = evaluate_features(pooled, unit(gf), qp, gp, qc, gc)
    assert out["cmc"] == pytest.approx(expected.pop("cmc"))
    assert {k: out[k] for k in expected} == pytest.approx(expected)
