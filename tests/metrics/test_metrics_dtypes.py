"""Every public numeric function of reid.metrics computes in at least float32 whatever the input's
dtype, and refuses to return NaN or inf.

Inputs are small integers (exact in float16 and bfloat16), so every dtype must give exactly the
float32 result; the scale of some inputs makes float16 arithmetic overflow (a squared distance
above 65,504), which is the fault these tests guard against.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.metrics import (euclidean_distance, evaluate, evaluate_protocols, flat_metrics,
                          evaluate_rank, l2_normalize, pool_multi_query, re_ranking,
                          re_ranking_features, squared_euclidean_distance)
from reid.metrics.reference import dense_re_ranking

DTYPES = [("numpy", np.float16), ("numpy", np.float32), ("numpy", np.float64), ("torch", torch.float16),
          ("torch", torch.bfloat16), ("torch", torch.float32), ("torch", torch.float64)]
IDS = ["np-f16", "np-f32", "np-f64", "t-f16", "t-bf16", "t-f32", "t-f64"]


def cast(x, lib, dtype):
    x = np.asarray(x, dtype=np.float64)
    return x.astype(dtype) if lib == "numpy" else torch.from_numpy(x).to(dtype)


def plain(x):
    return x.float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def quantised(a, b):
    """Euclidean distances rounded to multiples of 4 (exact in bfloat16 up to 1024)."""
    return np.round(np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)) / 4) * 4


def case():
    """Integer features scaled so that squared distances exceed float16's range."""
    rng = np.random.default_rng(0)
    ids, cams = rng.integers(1, 5, 14), rng.integers(1, 4, 14)
    centres = rng.integers(-3, 4, (6, 8)) * 32.0
    q = centres[ids[:6]] + rng.integers(-2, 3, (6, 8)) * 32
    g = centres[ids] + rng.integers(-2, 3, (14, 8)) * 32
    mq = centres[ids[:6].repeat(2)] + rng.integers(-2, 3, (12, 8)) * 32
    return q, g, ids[:6], ids, cams[:6], (cams % 3) + 1, mq, ids[:6].repeat(2), cams[:6].repeat(2)


@pytest.mark.parametrize("lib, dtype", DTYPES, ids=IDS)
def test_distances_and_normalisation(lib, dtype):
    q, g, *_ = case()
    assert (((q[:, None] - g[None]) ** 2).sum(-1) > 65504).any()  # overflows float16 if squared there
    f32 = np.float32 if lib == "numpy" else torch.float32  # numpy's sqrt and torch's may differ by an ulp
    for fn in (euclidean_distance, squared_euclidean_distance):
        ref = fn(cast(q, lib, f32), cast(g, lib, f32))
        got = fn(cast(q, lib, dtype), cast(g, lib, dtype))
        assert plain(got).dtype == np.float32
        np.testing.assert_array_equal(plain(got), plain(ref))
    np.testing.assert_array_equal(plain(l2_normalize(cast(q, lib, dtype))), plain(l2_normalize(cast(q, lib, f32))))


@pytest.mark.parametrize("lib, dtype", DTYPES, ids=IDS)
def test_ranking(lib, dtype):
    q, g, qp, gp, qc, gc, *_ = case()
    dist = quantised(q, g)
    ref = evaluate(dist.astype(np.float32), qp, gp, qc, gc, max_rank=10)
    got = evaluate(cast(dist, lib, dtype), qp, gp, qc, gc, max_rank=10)
    np.testing.assert_array_equal(got["cmc"], ref["cmc"])
    for key in ("ap", "ap_trapezoid", "inp", "first_match_rank"):
        np.testing.assert_array_equal(got["per_query"][key], ref["per_query"][key])
    cmc, m = evaluate_rank(cast(dist, lib, dtype), qp, gp, qc, gc, max_rank=10, ap="trapezoid")
    assert m == ref["mAP_trapezoid"] and np.isfinite(m)


@pytest.mark.parametrize("lib, dtype", DTYPES, ids=IDS)
def test_re_rankings(lib, dtype):
    q, g, *_ = case()
    q32, g32 = q.astype(np.float32), g.astype(np.float32)
    ref = re_ranking_features(q32, g32, 4, 2, 0.3)
    got = re_ranking_features(cast(q, lib, dtype), cast(g, lib, dtype), 4, 2, 0.3)
    np.testing.assert_array_equal(plain(got), ref)
    dists = [quantised(a, b) for a, b in ((q, g), (q, q), (g, g))]
    ref = re_ranking(*(d.astype(np.float32) for d in dists), 4, 2, 0.3)
    got = re_ranking(*(cast(d, lib, dtype) for d in dists), 4, 2, 0.3)
    assert np.isfinite(plain(got)).all()
    np.testing.assert_array_equal(plain(got), ref)
    if lib == "numpy":  # the dense reference reads numpy only
        np.testing.assert_allclose(dense_re_ranking(*(cast(d, lib, dtype) for d in dists), 4, 2, 0.3),
                                   ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("lib, dtype", DTYPES, ids=IDS)
def test_pooling_and_protocols(lib, dtype):
    q, g, qp, gp, qc, gc, mq, mp, mc = case()
    f32 = [x.astype(np.float32) for x in (q, g, mq)]
    ft = [cast(x, lib, dtype) for x in (q, g, mq)]
    np.testing.assert_array_equal(plain(pool_multi_query(qp, qc, ft[2], mp, mc, q_feats=ft[0])),
                                  pool_multi_query(qp, qc, f32[2], mp, mc, q_feats=f32[0]))
    rr = {"k1": 4, "k2": 2, "lambda_value": 0.3}
    got = evaluate_protocols(*ft[:2], qp, gp, qc, gc, rerank=rr, multi_query=(ft[2], mp, mc))
    ref = evaluate_protocols(*f32[:2], qp, gp, qc, gc, rerank=rr, multi_query=(f32[2], mp, mc))
    assert flat_metrics(got) == flat_metrics(ref)
    for protocol in ref:
        np.testing.assert_array_equal(got[protocol]["cmc"], ref[protocol]["cmc"])
        for key in ("ap", "first_match_rank"):
            np.testing.assert_array_equal(got[protocol]["per_query"][key], ref[protocol]["per_query"][key])


def test_float16_re_ranking_from_the_bug_report():
    # queries at 1-D positions 0 and 300, gallery at 10, 290 and 600: float16 distances; squared
    # in float16 they overflow (600^2 > 65,504) and the reference code returned all NaN
    q, g = np.array([0.0, 300.0]), np.array([10.0, 290.0, 600.0])

    def dist(a, b):
        return np.abs(a[:, None] - b[None, :]).astype(np.float16)

    expected = [[0.310860, 0.700358, 1.0], [0.863855, 0.215067, 1.0]]
    got = re_ranking(dist(q, g), dist(q, q), dist(g, g), k1=2, k2=1, lambda_value=0.3)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    got_t = re_ranking(*(torch.from_numpy(dist(a, b)) for a, b in ((q, g), (q, q), (g, g))), k1=2, k2=1,
                       lambda_value=0.3)
    np.testing.assert_array_equal(got_t.numpy(), got)
    # last column by hand: 0.7 x Jaccard 1 + 0.3 x 600^2 / 600^2
    np.testing.assert_allclose(dense_re_ranking(dist(q, g), dist(q, q), dist(g, g), 2, 1, 0.3), expected,
                               atol=1e-6, rtol=0)


def test_results_too_large_for_float32_are_an_error():
    big = np.array([[1e30, 0.0], [0.0, 1e30]])  # finite in float64, squares overflow float32
    with pytest.raises(ValueError, match="not finite"):
        euclidean_distance(big, big[::-1].copy())
    with pytest.raises(ValueError, match="not finite|contains infinite"):
        re_ranking_features(big, np.array([[1e30, 1e30], [0.0, 0.0], [2e30, 0.0]]))
