"""reid.metrics.uncertainty: identity-bootstrap intervals against a brute-force loop and scipy.stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from reid.metrics import keys
from reid.metrics import uncertainty as U

PROTOS = ("single", "rerank")


def make_table(rng, n_ids=40, per_id=(1, 5), protocols=PROTOS, hit=0.5, invalid=0.1, pids=None, camids=None):
    """A per-query table with a random number of queries per identity and some queries without a match."""
    if pids is None:
        sizes = rng.integers(per_id[0], per_id[1] + 1, n_ids)
        pids = np.repeat(np.arange(1, n_ids + 1) * 7, sizes)  # not 0..n-1: identities are looked up, not indexed
        camids = rng.integers(1, 7, len(pids))
    n = len(pids)
    valid = rng.random(n) > invalid
    pq = {}
    for p in protocols:
        fmr = np.where(rng.random(n) < hit, 1, rng.integers(2, 40, n))
        fmr = np.where(valid, fmr, 0)
        ap = np.where(valid, rng.random(n) / np.sqrt(fmr.clip(1)), np.nan)
        pq[p] = {"first_match_rank": fmr, "ap": ap, "ap_trapezoid": ap * 0.97, "inp": ap * 0.5}
    return U.per_query_table(pq, [f"query/{i:04d}.jpg" for i in range(n)], pids, camids)


def brute_force(tables, resamples, seed):
    """Replicates by an explicit loop: the drawn identities' queries, their metrics, averaged over drawn seeds."""
    ids = U.identities(tables[0])
    id_idx, seed_idx = U.resample_indices(len(ids), len(tables), resamples, seed)
    rows = {pid: np.flatnonzero(tables[0].pids == pid) for pid in ids}
    keys = list(U.estimates(tables[0]))
    reps = np.empty((resamples, len(keys)))
    for b in range(resamples):
        queries = np.concatenate([rows[ids[i]] for i in id_idx[b]])
        per_seed = []
        for t in tables:
            values = {}
            for p, cols in t.results.items():
                f = cols["first_match_rank"][queries]
                v = f > 0
                for k in (1, 5, 10, 20):
                    values[U.metric_key(p, f"rank{k}")] = np.mean(f[v] <= k)
                values[U.metric_key(p, "mAP")] = np.mean(cols["ap"][queries][v])
                values[U.metric_key(p, "mAP_trapezoid")] = np.mean(cols["ap_trapezoid"][queries][v])
                values[U.metric_key(p, "mINP")] = np.mean(cols["inp"][queries][v])
            per_seed.append(values)
        for j, key in enumerate(keys):
            total = 0.0
            for s in seed_idx[b]:
                total += per_seed[s][key]
            reps[b, j] = total / len(tables)
    return reps, keys


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_fast_intervals_equal_a_brute_force_loop_over_the_same_resamples(n_seeds):
    rng = np.random.default_rng(5)
    first = make_table(rng)
    tables = [first] + [make_table(rng, pids=first.pids, camids=first.camids) for _ in range(n_seeds - 1)]
    # same validity in every seed (it depends on the labels only); the AP columns follow it
    for t in tables[1:]:
        for p in PROTOS:
            v = first.results[p]["first_match_rank"] > 0
            t.results[p]["first_match_rank"][:] = np.where(v, t.results[p]["first_match_rank"].clip(1), 0)
            for c in ("ap", "ap_trapezoid", "inp"):
                t.results[p][c][:] = np.where(v, np.nan_to_num(t.results[p][c], nan=0.5), np.nan)
    resamples, seed = 300, 11
    reps, keys = brute_force(tables, resamples, seed)
    fast, fast_keys = U.Bootstrap(first, n_seeds, resamples, seed).replicates(tables)
    assert fast_keys == keys
    for j, key in enumerate(keys):
        if key.split("/")[-1].startswith("rank"):  # integer counts: the fast ratio of sums is the same float, bit for bit
            assert np.array_equal(fast[:, j], reps[:, j]), key
        else:  # sums of APs in another order: equal to rounding
            np.testing.assert_allclose(fast[:, j], reps[:, j], rtol=1e-12, atol=0)
    res = U.model_intervals(tables, resamples=resamples, seed=seed)
    lo, hi = np.quantile(reps, [0.025, 0.975], axis=0)
    for j, key in enumerate(keys):
        if key.split("/")[-1].startswith("rank"):
            assert res["ci95"][key] == [lo[j], hi[j]], key
        else:
            np.testing.assert_allclose(res["ci95"][key], [lo[j], hi[j]], rtol=1e-12)
    mean_of_seeds = np.mean([U.estimates(t)["rank1"] for t in tables])
    assert res["estimate"]["rank1"] == pytest.approx(mean_of_seeds, abs=1e-15)


def identity_arrays(table, protocol="single"):
    """Per identity: hits at rank 1 and valid queries (what scipy resamples as paired observations)."""
    fmr = table.results[protocol]["first_match_rank"]
    ids = U.identities(table)
    hits = np.array([np.sum((fmr > 0) & (fmr <= 1) & (table.pids == p)) for p in ids], float)
    valid = np.array([np.sum((fmr > 0) & (table.pids == p)) for p in ids], float)
    return hits, valid


def test_intervals_agree_with_scipy_bootstrap_over_identities_within_monte_carlo_error():
    rng = np.random.default_rng(0)
    table = make_table(rng, n_ids=150, per_id=(1, 8))
    hits, valid = identity_arrays(table)
    ref = stats.bootstrap((hits, valid), lambda h, v, axis=-1: h.sum(axis=axis) / v.sum(axis=axis), paired=True,
                          vectorized=True, n_resamples=10_000, method="percentile", rng=np.random.default_rng(99))
    ours = U.model_intervals(table, resamples=10_000, seed=0)["ci95"]["rank1"]
    reps, keys = U.Bootstrap(table, 1, 10_000, 0).replicates([table])
    sd = reps[:, keys.index("rank1")].std()
    # Monte Carlo error of a 2.5% / 97.5% quantile of 10,000 normal replicates: sd * sqrt(q(1-q)/B) / phi(1.96)
    mc = sd * math.sqrt(0.025 * 0.975 / 10_000) / stats.norm.pdf(1.96)
    tol = 4 * math.sqrt(2) * mc  # two independent estimates
    assert abs(ours[0] - ref.confidence_interval.low) < tol
    assert abs(ours[1] - ref.confidence_interval.high) < tol
    assert ours != [ref.confidence_interval.low, ref.confidence_interval.high]  # different draws, really


def test_identity_resampling_is_wider_than_query_resampling_when_queries_of_a_person_agree():
    # every person's 4 queries all hit or all miss: the effective sample is the 200 persons, not 800 queries
    rng = np.random.default_rng(3)
    person_hits = rng.random(200) < 0.5
    pids = np.repeat(np.arange(1, 201), 4)
    fmr = np.where(np.repeat(person_hits, 4), 1, 9)
    ap = 1.0 / fmr
    table = U.per_query_table({"single": {"first_match_rank": fmr, "ap": ap, "ap_trapezoid": ap, "inp": ap}},
                              [f"q{i}" for i in range(800)], pids, np.ones(800, int))
    lo, hi = U.model_intervals(table, resamples=5000, seed=1)["ci95"]["rank1"]
    per_query = stats.bootstrap(((fmr == 1).astype(float),), np.mean, n_resamples=5000, method="percentile",
                                rng=np.random.default_rng(1)).confidence_interval
    ratio = (hi - lo) / (per_query.high - per_query.low)
    assert 1.7 < ratio < 2.3  # sqrt(4 queries per person) = 2


def test_paired_difference_uses_the_same_resamples_for_both_models():
    rng = np.random.default_rng(8)
    a = make_table(rng, n_ids=120, protocols=U.PROTOCOLS)
    # B: A with the first match moved to rank 1 for a fifth of the valid queries: a small, real improvement
    res_b = {}
    for p, cols in a.results.items():
        improve = (cols["first_match_rank"] > 1) & (rng.random(len(a.pids)) < 0.2)
        res_b[p] = {**cols, "first_match_rank": np.where(improve, 1, cols["first_match_rank"])}
    b = U.per_query_table(res_b, a.queries, a.pids, a.camids)
    diff = U.paired_difference(a, b, resamples=4000, seed=2)
    r1 = diff["rank1"]
    assert r1["difference"] == pytest.approx(U.estimates(b)["rank1"] - U.estimates(a)["rank1"])
    assert r1["difference"] > 0 and r1["ci95"][0] > 0 and r1["significant"] and r1["p_value"] < 0.01
    # the APs did not change: no difference, the interval is exactly [0, 0], p = 1
    assert diff["mAP"] == {"difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0, "significant": False}
    # paired: far narrower than the difference of two independent estimates would be
    width = r1["ci95"][1] - r1["ci95"][0]
    own = [np.diff(U.model_intervals(t, resamples=4000, seed=2)["ci95"]["rank1"])[0] for t in (a, b)]
    assert width < 0.5 * math.hypot(*own)
    # brute force over the same draws: the difference interval and p-value
    ids = U.identities(a)
    id_idx, _ = U.resample_indices(len(ids), 1, 4000, 2)
    rows = {pid: np.flatnonzero(a.pids == pid) for pid in ids}
    d = []
    for b_ in range(4000):
        q = np.concatenate([rows[ids[i]] for i in id_idx[b_]])
        fa, fb = a.results["single"]["first_match_rank"][q], b.results["single"]["first_match_rank"][q]
        d.append(np.mean(fb[fb > 0] <= 1) - np.mean(fa[fa > 0] <= 1))
    d = np.array(d)
    np.testing.assert_allclose(r1["ci95"], np.quantile(d, [0.025, 0.975]), rtol=0, atol=1e-15)
    p = min(1.0, 2 * min((np.sum(d <= 0) + 1) / 4001, (np.sum(d >= 0) + 1) / 4001))
    assert r1["p_value"] == pytest.approx(p)
    # B - A is minus A - B
    rev = U.paired_difference(b, a, resamples=4000, seed=2)["rank1"]
    assert rev["difference"] == -r1["difference"]
    np.testing.assert_allclose(rev["ci95"], [-r1["ci95"][1], -r1["ci95"][0]], atol=1e-15)


def test_identical_models_show_no_significant_difference():
    rng = np.random.default_rng(4)
    a = make_table(rng)
    res = U.compare_models(a, a, resamples=500)
    for key, d in res.items():
        assert d == {"difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0, "significant": False}, key


def test_deterministic_for_a_seed_and_different_for_another():
    rng = np.random.default_rng(6)
    t = make_table(rng)
    assert U.model_intervals(t, resamples=200, seed=3) == U.model_intervals(t, resamples=200, seed=3)
    assert U.model_intervals(t, resamples=200, seed=3)["ci95"] != U.model_intervals(t, resamples=200, seed=4)["ci95"]


def test_one_seed_of_a_several_seed_bootstrap_draws_the_same_identities():
    rng = np.random.default_rng(7)
    t = make_table(rng)
    one = U.Bootstrap(t, 1, 300, 5)
    three = U.Bootstrap(t, 3, 300, 5)
    assert np.array_equal(one.weights, three.weights)  # identities first: a comparison over fewer seeds pairs up


def test_csv_round_trip_is_exact_and_estimates_are_the_rows_means(tmp_path):
    rng = np.random.default_rng(9)
    t = make_table(rng, protocols=U.PROTOCOLS)
    path = tmp_path / "per_query.csv"
    path.write_text(U.per_query_csv(t))
    back = U.read_per_query_csv(path)
    assert back.protocols == U.PROTOCOLS
    assert np.array_equal(back.pids, t.pids) and list(back.queries) == list(t.queries)
    for p in U.PROTOCOLS:
        for c in keys.COLUMNS:
            np.testing.assert_array_equal(back.results[p][c], t.results[p][c])
    lines = path.read_text().splitlines()
    assert lines[0] == "protocol,query,pid,camid,first_match_rank,ap,ap_trapezoid,inp"
    assert len(lines) == 1 + len(U.PROTOCOLS) * len(t.pids)
    no_match = next(line for line in lines[1:] if line.split(",")[4] == "")
    assert no_match.split(",")[5:] == ["", "", ""]
    est = U.estimates(back)
    f = t.results["rerank"]["first_match_rank"]
    assert est["rerank/rank5"] == np.mean(f[f > 0] <= 5)
    assert est["multi_query_max/rerank/mAP"] == np.mean(t.results["multi_query_max/rerank"]["ap"][f > 0])


def test_bad_per_query_files_name_the_file_and_the_fault(tmp_path):
    rng = np.random.default_rng(10)
    text = U.per_query_csv(make_table(rng))
    bad = tmp_path / "per_query.csv"
    bad.write_text(text.replace("protocol,", "proto,", 1))
    with pytest.raises(ValueError, match="per_query.csv: header"):
        U.read_per_query_csv(bad)
    bad.write_text(text.replace("\nrerank,", "\nreranked,", 1))
    with pytest.raises(ValueError, match=r"per_query.csv, line \d+: unknown protocol 'reranked'"):
        U.read_per_query_csv(bad)
    lines = text.splitlines()
    cells = lines[3].split(",")
    cells[5] = "" if cells[5] else "0.5"  # AP present without a match, or missing with one
    bad.write_text("\n".join(lines[:3] + [",".join(cells)] + lines[4:]) + "\n")
    with pytest.raises(ValueError, match="per_query.csv: .*column ap must be empty"):
        U.read_per_query_csv(bad)
    with pytest.raises(ValueError, match="not found"):
        U.read_per_query_csv(tmp_path / "missing.csv")


def test_tables_of_other_queries_are_refused():
    rng = np.random.default_rng(12)
    a = make_table(rng)
    b = make_table(rng)
    with pytest.raises(ValueError, match="other queries"):
        U.paired_difference(a, b, resamples=10)
