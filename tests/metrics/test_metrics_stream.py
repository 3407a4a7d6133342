"""Streamed evaluation (evaluate_protocols, compute_metrics) against the unstreamed path.

The unstreamed path is what the evaluate stage did before streaming: the whole queries x gallery
matrix from `euclidean_distance` or `re_ranking_features`, ranked by `evaluate`. The streamed path
must give the same per-query results bit for bit, for every protocol, whatever the block size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.evaluate import compute_metrics
from reid.typed_config import RerankConfig
from reid.metrics import (PROTOCOLS, euclidean_distance, evaluate, evaluate_protocols, keys, l2_normalize,
                          pool_multi_query, re_ranking_features)
from reid.metrics import distance as distance_mod
from reid.metrics import stream as stream_mod
from reid.metrics.kreciprocal import _first_k_stable

RR = {"k1": 6, "k2": 3, "lambda_value": 0.3}


def problem(seed, nq=70, ng=260, dim=12, ids=14, cams=4, integer=False):
    """Queries and gallery with junk (pid -1), distractors (pid 0), same-camera matches, queries
    without any cross-camera match, and gt_bbox images; `integer` features make exact ties and
    duplicated images (at distance 0)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids + 1, dim)) * (2.0 if integer else 1.0)
    qp = rng.integers(1, ids + 1, nq)
    qp[:3] = ids + 1  # pid seen by no gallery image
    gp = rng.integers(-1, ids + 1, ng)
    qc, gc = rng.integers(1, cams + 1, nq), rng.integers(1, cams + 1, ng)
    gp[:4], gc[:4] = qp[5], qc[5]  # query 5's pid appears in its own camera only ...
    gp[gp == qp[5]] = np.where(gc[gp == qp[5]] == qc[5], qp[5], 0)  # ... so it has no valid match

    def feats(pids):
        x = centres[np.clip(pids, 0, ids)] + 0.7 * rng.standard_normal((len(pids), dim))
        if integer:
            return np.round(x).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    q, g = feats(qp), feats(gp)
    if integer:
        g[10] = g[11] = q[7]  # duplicates of a query in the gallery
        q[8] = q[9]
    owner = rng.integers(0, nq, 2 * nq)
    keep = owner % 5 != 0  # some queries have no gt_bbox image of their own: they keep their feature
    owner = owner[keep]
    mq = (torch.from_numpy(feats(qp[owner])), torch.from_numpy(qp[owner]), torch.from_numpy(qc[owner]))
    return torch.from_numpy(q), torch.from_numpy(g), qp, gp, qc, gc, mq


def unstreamed(q, g, qp, gp, qc, gc, mq, max_rank=50):
    """Every protocol the way the evaluate stage computed it before streaming."""
    max_rank = min(max_rank, len(gp))
    out = {"single": evaluate(euclidean_distance(q, g), qp, gp, qc, gc, max_rank=max_rank),
           "rerank": evaluate(re_ranking_features(q, g, **RR), qp, gp, qc, gc, max_rank=max_rank)}
    for pooling in ("mean", "max"):
        pooled = pool_multi_query(qp, qc, *mq, pooling=pooling, q_feats=q)
        gn = l2_normalize(g)
        out[f"multi_query_{pooling}"] = evaluate(euclidean_distance(pooled, gn), qp, gp, qc, gc, max_rank=max_rank)
        out[f"multi_query_{pooling}/rerank"] = evaluate(re_ranking_features(pooled, gn, **RR), qp, gp, qc, gc,
                                                        max_rank=max_rank)
    return out


def assert_identical(got: dict, expected: dict):
    assert list(got) == list(expected)
    for protocol in expected:
        for key in ("num_matches", "cmc"):
            np.testing.assert_array_equal(got[protocol][key], expected[protocol][key],
                                          err_msg=f"{protocol} {key}")
        assert list(got[protocol]["per_query"]) == list(keys.COLUMNS)
        for key in keys.COLUMNS:
            np.testing.assert_array_equal(got[protocol]["per_query"][key], expected[protocol]["per_query"][key],
                                          err_msg=f"{protocol} {key}")
        for key in (*keys.METRICS, "num_valid_queries"):
            assert got[protocol][key] == expected[protocol][key], (protocol, key)


@pytest.mark.parametrize("integer", [False, True], ids=["real", "ties"])
@pytest.mark.parametrize("memory_gb, tile_rows", [(4.0, 256), (1e-9, 16), (1e-9, 23)],
                         ids=["one-block", "tiles-16", "tiles-23"])
def test_streamed_equals_unstreamed_bit_for_bit(integer, memory_gb, tile_rows):
    q, g, qp, gp, qc, gc, mq = problem(1 + integer, integer=integer)
    expected = unstreamed(q, g, qp, gp, qc, gc, mq)
    assert expected["single"]["num_valid_queries"] < len(qp)  # the problem has queries without a match
    got = evaluate_protocols(q, g, qp, gp, qc, gc, rerank=RR, multi_query=mq, memory_gb=memory_gb,
                             tile_rows=tile_rows)
    assert_identical(got, expected)


def test_tiny_memory_budget_forces_many_blocks_and_matches_one_block(monkeypatch):
    q, g, qp, gp, qc, gc, mq = problem(3, nq=150, ng=400, dim=16)
    one = evaluate_protocols(q, g, qp, gp, qc, gc, rerank=RR, multi_query=mq, memory_gb=8.0, tile_rows=16)
    blocks = []
    real_add = stream_mod._Ranks.add
    monkeypatch.setattr(stream_mod._Ranks, "add", lambda self, s, d, what: (blocks.append(d.shape[0]),
                                                                          real_add(self, s, d, what)))
    many = evaluate_protocols(q, g, qp, gp, qc, gc, rerank=RR, multi_query=mq, memory_gb=1e-9, tile_rows=16)
    assert len(blocks) == 6 * 9 and max(blocks) <= 31  # 9 tiles of 16 (the last 22) per protocol
    assert_identical(many, one)


def test_larger_than_one_span_of_queries(monkeypatch):
    # more queries and gallery images than one span (SPAN_ROWS, made small here): the query pairs
    # across spans are computed transposed, as in re_ranking_features with the same block_rows,
    # and the gallery's last span is narrow (5 columns): the plain protocol, made from the
    # re-ranking's products, still matches euclidean_distance with the same spans
    monkeypatch.setattr(stream_mod, "SPAN_ROWS", 32)
    monkeypatch.setattr(distance_mod, "SPAN", 32)
    q, g, qp, gp, qc, gc, mq = problem(4, nq=90, ng=133)
    for memory_gb in (1e-9, 4.0):  # pass 2 recomputes the distances, or keeps them from pass 1
        got = evaluate_protocols(q, g, qp, gp, qc, gc, rerank=RR, memory_gb=memory_gb, tile_rows=16)
        expected = {"single": evaluate(euclidean_distance(q, g), qp, gp, qc, gc, max_rank=50),
                    "rerank": evaluate(re_ranking_features(q, g, **RR, block_rows=32), qp, gp, qc, gc, max_rank=50)}
        assert_identical(got, expected)


def test_each_product_is_computed_once(monkeypatch):
    # one gallery-to-gallery product (unit-length features: the multi-query protocols share it),
    # and per protocol one queries x queries and one queries x gallery product, which the plain
    # protocol and its re-ranked form share
    q, g, qp, gp, qc, gc, mq = problem(8)
    nq, ng = len(q), len(g)
    entries = []
    real_addmm = torch.addmm

    def counting(c, a, b, **kw):
        if b.shape[1] != nq + ng:  # not a row redone whole because of a tie at the k-th place
            entries.append(a.shape[0] * b.shape[1])
        return real_addmm(c, a, b, **kw)

    monkeypatch.setattr(torch, "addmm", counting)
    evaluate_protocols(q, g, qp, gp, qc, gc, rerank=RR, multi_query=mq, memory_gb=4.0)
    assert sum(entries) == ng * ng + 3 * (nq * nq + nq * ng)


def test_gallery_search_done_once_per_gallery(monkeypatch):
    searches = []
    real_lists = stream_mod._Gallery.lists

    def spy(self, kk):
        if kk not in self._lists:
            searches.append(id(self))
        return real_lists(self, kk)

    monkeypatch.setattr(stream_mod._Gallery, "lists", spy)
    q, g, qp, gp, qc, gc, mq = problem(5)
    # features of any length: the multi-query protocols rank their L2-normalised copy
    evaluate_protocols(q, 1.5 * g, qp, gp, qc, gc, rerank=RR, multi_query=mq, memory_gb=1e-9, tile_rows=16)
    assert len(searches) == 2  # the gallery as given, and L2-normalised for multi-query
    searches.clear()
    # unit-length features (as `reid extract` writes them) share one search between the single-
    # and multi-query protocols, although dividing them by their float32 norm again would change
    # the last bits of some rows
    assert not torch.equal(g / g.norm(dim=1, keepdim=True), g)
    evaluate_protocols(q, g, qp, gp, qc, gc, rerank=RR, multi_query=mq, memory_gb=1e-9, tile_rows=16)
    assert len(searches) == 1


def test_compute_metrics_flat_keys_and_per_query_contract():
    q, g, qp, gp, qc, gc, mq = problem(6)
    feats = {"query_feats": q, "gallery_feats": g, "query_pids": torch.from_numpy(qp),
             "gallery_pids": torch.from_numpy(gp), "query_camids": torch.from_numpy(qc),
             "gallery_camids": torch.from_numpy(gc), "mq_feats": mq[0], "mq_pids": mq[1], "mq_camids": mq[2]}
    out = compute_metrics(feats, max_rank=50, rerank=RerankConfig.from_dict({"k1": 6, "k2": 3}), memory_gb=1e-9)
    expected = unstreamed(q, g, qp, gp, qc, gc, mq)
    per_query = out.pop("per_query")
    assert list(per_query) == list(PROTOCOLS)
    for protocol, full in expected.items():
        prefix = "" if protocol == "single" else protocol + "/"
        pq = per_query[protocol]
        assert set(pq) == {"first_match_rank", "ap", "ap_trapezoid", "inp"}
        no_match = full["num_matches"] == 0
        assert pq["first_match_rank"].dtype == np.int64 and len(pq["first_match_rank"]) == len(qp)
        np.testing.assert_array_equal(pq["first_match_rank"][no_match], 0)
        np.testing.assert_array_equal(pq["first_match_rank"], full["per_query"]["first_match_rank"])
        for key in ("ap", "ap_trapezoid", "inp"):
            assert pq[key].dtype == np.float64
            np.testing.assert_array_equal(pq[key], full["per_query"][key])
        assert np.isnan(pq["ap"][no_match]).all()
        assert out[f"{prefix}mAP"] == full["mAP"]
        assert out[f"{prefix}mAP"] == pytest.approx(np.nanmean(pq["ap"]), abs=1e-15)
        assert out[f"{prefix}rank1"] == np.mean(pq["first_match_rank"][~no_match] == 1)
        assert out[f"{prefix}cmc"] == [float(x) for x in full["cmc"]]
        key = prefix or "single_query"
        assert out["counts"]["valid_queries"][key] == full["num_valid_queries"]
    assert out["counts"]["query"] == len(qp) and out["counts"]["gallery"] == len(gp)


def test_first_k_stable_matches_a_stable_sort():
    rng = np.random.default_rng(7)
    rows = torch.from_numpy(rng.integers(0, 5, (40, 90)).astype(np.float32))  # many ties
    for k in (1, 3, 20, 90):
        v, i = _first_k_stable(rows, k)
        sv, si = torch.sort(rows, dim=1, stable=True)
        assert torch.equal(v, sv[:, :k]) and torch.equal(i, si[:, :k])


@pytest.mark.parametrize("kwargs, message", [
    (dict(memory_gb=0), "memory_gb=0"),
    (dict(tile_rows=8), "tile_rows=8"),
    (dict(rerank={"k1": 0, "k2": 3, "lambda_value": 0.3}), "k1=0"),
    (dict(rerank={"k1": 6, "k3": 3}), r"rerank: unknown keys \['k3'\]"),
    (dict(rerank={"lambda": 0.3, "lambda_value": 0.3}), "either 'lambda' or 'lambda_value'"),
    (dict(rerank=[20, 6, 0.3]), "expected None or a dict"),
])
def test_bad_arguments(kwargs, message):
    q, g, qp, gp, qc, gc, _ = problem(8)
    with pytest.raises(ValueError, match=message):
        evaluate_protocols(q, g, qp, gp, qc, gc, **kwargs)


def test_unset_rerank_parameters_are_the_published_ones():
    # Zhong et al. (CVPR 2017), section 4.2: k1 = 20, k2 = 6, lambda = 0.3
    q, g, qp, gp, qc, gc, _ = problem(10)
    partial = evaluate_protocols(q, g, qp, gp, qc, gc, rerank={"k2": 6})["rerank"]
    explicit = evaluate_protocols(q, g, qp, gp, qc, gc, rerank={"k1": 20, "k2": 6, "lambda_value": 0.3})["rerank"]
    other = evaluate_protocols(q, g, qp, gp, qc, gc, rerank={"k1": 5, "k2": 6, "lambda_value": 0.3})["rerank"]
    assert np.array_equal(partial["per_query"]["ap"], explicit["per_query"]["ap"], equal_nan=True)
    assert not np.array_equal(partial["per_query"]["ap"], other["per_query"]["ap"], equal_nan=True)


def test_non_finite_features_are_an_error():
    q, g, qp, gp, qc, gc, _ = problem(9)
    g = g.clone()
    g[4, 2] = float("nan")
    with pytest.raises(ValueError, match="g_feats: contains NaN"):
        evaluate_protocols(q, g, qp, gp, qc, gc)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_streamed_blocks_equal_one_block_and_cpu_ranks():
    q, g, qp, gp, qc, gc, mq = problem(10, nq=150, ng=400, dim=16, integer=True)
    cuda = [evaluate_protocols(q, g, qp, gp, qc, gc, rerank=RR, multi_query=mq, memory_gb=m, tile_rows=16,
                               device="cuda") for m in (8.0, 1e-9)]
    assert_identical(cuda[1], cuda[0])
    # integer features: every Euclidean distance is exact on either device, so the single-query
    # results agree with the CPU's exactly (re-ranking's exp() is not the same function on both)
    cpu = evaluate_protocols(q, g, qp, gp, qc, gc, tile_rows=16)
    for key in PER_QUERY:
        np.testing.assert_array_equal(cuda[0]["single"][key], cpu["single"][key])
