"""CMC / mAP (both conventions) / mINP against hand-worked cases and a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.metrics import evaluate, evaluate_rank
from reid.metrics import rank as rank_mod


def brute_force(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Per-query loop, stable sort, the official Market-1501 trapezoid loop written out."""
    cmcs, aps, traps, inps = [], [], [], []
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")
        keep = [j for j in order if g_pids[j] != -1 and not (g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i])]
        hits = [q_pids[i] > 0 and g_pids[j] == q_pids[i] for j in keep]
        m = sum(hits)
        if m == 0:
            continue
        first = hits.index(True)
        cmcs.append([1.0 if first < k else 0.0 for k in range(1, max_rank + 1)])
        found, ap, trap, old_prec, last = 0, 0.0, 0.0, 1.0, 0
        for pos, h in enumerate(hits):
            if h:
                found += 1
                ap += found / (pos + 1)
                trap += (old_prec + found / (pos + 1)) / 2 / m
                last = pos
            old_prec = found / (pos + 1)
        aps.append(ap / m)
        traps.append(trap)
        inps.append(m / (last + 1))
    return np.mean(cmcs, axis=0), np.mean(aps), np.mean(traps), np.mean(inps)


def random_case(rng, nq=25, ng=120, npid=12, ncam=4, ties=False):
    q_pids = rng.integers(1, npid, nq)
    g_pids = rng.integers(-1, npid, ng)  # includes junk (-1) and distractors (0)
    q_cams = rng.integers(1, ncam + 1, nq)
    g_cams = rng.integers(1, ncam + 1, ng)
    if ties:
        dist = rng.integers(0, 6, (nq, ng)).astype(np.float32)  # many exact ties
    else:
        dist = rng.random((nq, ng)).astype(np.float32)
        dist -= 0.4 * (q_pids[:, None] == g_pids[None, :])  # realistic: matches tend to be closer
    return dist, q_pids, g_pids, q_cams, g_cams


def hand_case():
    # query 0: pid 1 camera 1. Gallery by distance: neg, GOOD, junk(-1), same-cam pid 1, neg, GOOD
    # -> kept ranking: neg, GOOD, neg, GOOD: matches at 0-based ranks 1 and 3.
    # query 1: pid 2 camera 2, kept ranking GOOD, distractor (pid 0), GOOD: ranks 0 and 2.
    g_pids = np.array([5, 1, -1, 1, 5, 1, 2, 0, 2])
    g_cams = np.array([1, 2, 3, 1, 1, 3, 1, 1, 3])
    d = np.full((2, 9), 9.0)
    d[0, :6] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    d[1, 6:] = [0.1, 0.2, 0.3]
    return d, np.array([1, 2]), g_pids, np.array([1, 2]), g_cams


def test_hand_worked_step_and_trapezoid():
    d, qp, gp, qc, gc = hand_case()
    out = evaluate(d, qp, gp, qc, gc, max_rank=3)
    # step:      q0 (1/2 + 2/4)/2 = 1/2;            q1 (1/1 + 2/3)/2 = 5/6
    # trapezoid: q0 ((0 + 1/2)/2 + (1/3 + 2/4)/2)/2 = 1/3; q1 ((1 + 1)/2 + (1/2 + 2/3)/2)/2 = 19/24
    np.testing.assert_allclose(out["per_query"]["ap"], [1 / 2, 5 / 6])
    np.testing.assert_allclose(out["per_query"]["ap_trapezoid"], [1 / 3, 19 / 24])
    np.testing.assert_allclose(out["per_query"]["inp"], [2 / 4, 2 / 3])
    np.testing.assert_array_equal(out["per_query"]["first_match_rank"], [2, 1])
    np.testing.assert_allclose(out["cmc"], [0.5, 1.0, 1.0])
    assert out["mAP"] == pytest.approx((1 / 2 + 5 / 6) / 2)
    assert out["mAP_trapezoid"] == pytest.approx((1 / 3 + 19 / 24) / 2)
    cmc, m = evaluate_rank(d, qp, gp, qc, gc, max_rank=3, ap="trapezoid")
    assert m == pytest.approx((1 / 3 + 19 / 24) / 2)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("max_entries", [1, 50, 1 << 22])  # rows ranked one by one / in groups / at once
def test_matches_brute_force(ties, max_entries, monkeypatch):
    real = rank_mod.match_ranks
    monkeypatch.setattr(rank_mod, "match_ranks", lambda *a, **k: real(*a, **k, max_entries=max_entries))
    rng = np.random.default_rng(3 + ties)
    for _ in range(3):
        d, qp, gp, qc, gc = random_case(rng, ties=ties)
        cmc, ap, trap, inp = brute_force(d, qp, gp, qc, gc, 20)
        out = evaluate(d, qp, gp, qc, gc, max_rank=20)
        np.testing.assert_allclose(out["cmc"], cmc, atol=1e-12)
        assert out["mAP"] == pytest.approx(ap, abs=1e-12)
        assert out["mAP_trapezoid"] == pytest.approx(trap, abs=1e-12)
        assert out["mINP"] == pytest.approx(inp, abs=1e-12)
        assert out["mAP_trapezoid"] <= out["mAP"] + 1e-12  # trapezoids never exceed the step sum


@pytest.mark.parametrize("ties", [False, True])
def test_device_path_matches_cpu(ties):
    # a CUDA distmat is ranked on the GPU by the same code; without CUDA this checks float64 input
    rng = np.random.default_rng(11)
    d, qp, gp, qc, gc = random_case(rng, ties=ties)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = evaluate(torch.from_numpy(d.astype(np.float64)).to(dev), qp, gp, qc, gc, max_rank=20)
    b = evaluate(d, qp, gp, qc, gc, max_rank=20)
    np.testing.assert_array_equal(a["cmc"], b["cmc"])
    for key in ("ap", "ap_trapezoid", "inp", "first_match_rank"):
        np.testing.assert_array_equal(a["per_query"][key], b["per_query"][key])


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(5)
    d, qp, gp, qc, gc = random_case(rng)
    a = evaluate_rank(d, qp, gp, qc, gc, max_rank=10)
    b = evaluate_rank(torch.from_numpy(d), torch.from_numpy(qp), torch.from_numpy(gp),
                      torch.from_numpy(qc), torch.from_numpy(gc), max_rank=10)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def test_query_without_match_is_skipped_and_distractors_are_negatives():
    d, qp, gp, qc, gc = hand_case()
    # a third query whose pid appears only in its own camera, and a pid-0 query: both skipped
    d = np.vstack([d, np.linspace(0, 1, 9), np.linspace(0, 1, 9)])
    qp, qc = np.append(qp, [5, 0]), np.append(qc, [1, 1])
    gp = gp.copy()
    gp[4] = 5  # pid 5 now only in camera 1 (gallery 0 and 4)
    out = evaluate(d, qp, gp, qc, gc, max_rank=3)
    assert out["num_valid_queries"] == 2
    assert np.isnan(out["per_query"]["ap"][2]) and np.isnan(out["per_query"]["ap"][3])
    assert list(out["per_query"]["first_match_rank"][2:]) == [0, 0]
    assert list(out["num_matches"]) == [2, 2, 0, 0]


def test_all_junk_gallery_is_an_error():
    d = np.random.default_rng(0).random((3, 5))
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(d, [1, 2, 3], [-1] * 5, [1, 1, 1], [2] * 5, max_rank=5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(g_pids=[1, 2]), "g_pids: length 2"),
    (dict(max_rank=6), "max_rank=6 is larger than the gallery"),
    (dict(ap="area"), "unknown AP convention"),
    (dict(max_rank=0), "positive integer"),
])
def test_bad_input(kwargs, message):
    args = dict(distmat=np.random.default_rng(0).random((2, 5)), q_pids=[1, 2], g_pids=[1, 2, 1, 2, 0],
                q_camids=[1, 1], g_camids=[2, 2, 2, 2, 2], max_rank=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate_rank(**args)


def test_nan_distance_is_an_error():
    d = np.random.default_rng(0).random((2, 5))
    d[1, 3] = np.nan
    with pytest.raises(ValueError, match="distmat: contains NaN"):
        evaluate_rank(d, [1, 2], [1, 2, 1, 2, 0], [1, 1], [2] * 5, max_rank=5)
