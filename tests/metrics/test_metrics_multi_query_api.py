"""Multi-query pooling, the distance helper, and the metrics.json entries of evaluate_protocols."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.metrics import (evaluate, evaluate_protocols, euclidean_distance, flat_metrics, keys, l2_normalize,
                          pool_multi_query, re_ranking_features)
from reid.metrics import distance as distance_mod


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


def test_l2_normalize_scales_rows_and_leaves_unit_rows_as_they_are():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((400, 64)).astype(np.float32) * 3.0)
    x[0] = 0.0
    unit_rows = torch.nn.functional.normalize(x[1:200], dim=1)  # as `reid extract` writes them
    x[1:200] = unit_rows
    once = l2_normalize(x)
    # rows of any length: scaled by their float32 norm, exactly as x / |x| (zeros stay zeros)
    np.testing.assert_array_equal(once[200:], x[200:] / x[200:].norm(dim=1, keepdim=True))
    assert torch.equal(once[0], torch.zeros(64))
    # unit rows: as given, although dividing them again would move the last bits of many
    assert torch.equal(once[1:200], unit_rows)
    assert not torch.equal(unit_rows / unit_rows.norm(dim=1, keepdim=True), unit_rows)
    # so normalising is idempotent, and the result is never an alias of the input
    assert torch.equal(l2_normalize(once), once)
    same = l2_normalize(unit_rows)
    same[0, 0] = 7.0
    assert unit_rows[0, 0] != 7.0
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(x.numpy())[1:], axis=1), 1.0, atol=distance_mod.UNIT_NORM_TOLERANCE)


def test_euclidean_distance_is_the_rerank_arithmetic_per_column_span(monkeypatch):
    # the same bits whatever the block of rows, computed per span of SPAN columns: a narrow last
    # span is computed as its own product, as re-ranking computes it
    monkeypatch.setattr(distance_mod, "SPAN", 8)
    rng = np.random.default_rng(4)
    a, b = torch.from_numpy(rng.standard_normal((40, 32)).astype(np.float32)), \
        torch.from_numpy(rng.standard_normal((35, 32)).astype(np.float32))
    sa, sb = (a * a).sum(1), (b * b).sum(1)
    expected = torch.cat([torch.addmm(sb[None, c:c + 8], a, b[c:c + 8].T, alpha=-2.0) for c in range(0, 35, 8)], 1)
    expected = (expected + sa[:, None]).clamp_(min=0).sqrt_()
    for block_rows in (40, 16, 7):
        assert torch.equal(euclidean_distance(a, b, block_rows=block_rows), expected)


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


def test_flat_metrics_keys_and_values():
    (qf, qp, qc), (gf, gp, gc), _ = toy(np.random.default_rng(3))
    out = flat_metrics(evaluate_protocols(qf, gf, qp, gp, qc, gc, max_rank=50))
    full = evaluate(euclidean_distance(qf, gf), qp, gp, qc, gc, max_rank=50)
    assert set(out) == {*keys.METRICS, "cmc"}  # the single-query protocol: bare names
    assert out["mAP"] == pytest.approx(full["mAP"])
    assert out["mAP_trapezoid"] == pytest.approx(full["mAP_trapezoid"])
    assert out["mINP"] == pytest.approx(full["mINP"])
    assert out["cmc"] == pytest.approx(list(full["cmc"]))
    for k in keys.REPORTED_RANKS:
        assert out[f"rank{k}"] == pytest.approx(full["cmc"][k - 1])
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mAP_trapezoid", "mINP"):
        assert 0.0 <= out[key] <= 1.0 and isinstance(out[key], float)


def test_a_small_gallery_clamps_the_cmc_only():
    (qf, qp, qc), (gf, gp, gc), _ = toy(np.random.default_rng(4), ng=15)
    out = flat_metrics(evaluate_protocols(qf, gf, qp, gp, qc, gc, max_rank=50))
    assert len(out["cmc"]) == 15
    assert out["rank20"] == out["cmc"][-1]  # every true match lies within the 15 gallery images


def test_rerank_protocol_keys():
    (qf, qp, qc), (gf, gp, gc), _ = toy(np.random.default_rng(5))
    out = flat_metrics(evaluate_protocols(qf, gf, qp, gp, qc, gc, rerank={"k1": 8, "k2": 3, "lambda_value": 0.3}))
    full = evaluate(re_ranking_features(qf, gf, 8, 3, 0.3), qp, gp, qc, gc, max_rank=50)
    assert out["rerank/mAP"] == pytest.approx(full["mAP"])
    assert set(out) == {keys.key(p, m) for p in ("single", "rerank") for m in (*keys.METRICS, "cmc")}
    with pytest.raises(ValueError, match="unknown keys"):
        evaluate_protocols(qf, gf, qp, gp, qc, gc, rerank={"k": 8})


def test_multi_query_pools_then_evaluates():
    (qf, qp, qc), (gf, gp, gc), (mf, mp, mc) = toy(np.random.default_rng(6))
    out = evaluate_protocols(qf, gf, qp, gp, qc, gc, multi_query=(mf, mp, mc), poolings=("max",), single=False)
    assert list(out) == ["multi_query_max"]
    out = flat_metrics(out)
    pooled = pool_multi_query(qp, qc, mf, mp, mc, pooling="max", q_feats=qf)
    expected = flat_metrics(evaluate_protocols(pooled, unit(gf), qp, gp, qc, gc))
    assert out.pop("multi_query_max/cmc") == pytest.approx(expected.pop("cmc"))
    assert {k: out[keys.key("multi_query_max", k)] for k in expected} == pytest.approx(expected)
