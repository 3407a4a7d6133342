"""comparisons.json and the interval cells / paired-comparison sections of Tables 1-3."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reid.metrics import keys
from reid.metrics import uncertainty as U
from reid.report import comparisons, tables
from reid.cli import main as reid_main
from reid.report.paper import describe_dataset
from reid.report.runs import ReportInputError, load_runs

SYNTH = describe_dataset("synthetic", {"source": "synthetic"})
BOOT = {"resamples": 400, "seed": 0}
N_IDS = 60


def base_table(seed=0, protocols=("single", "rerank", "multi_query_mean")):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(1, N_IDS + 1), 3)
    n = len(pids)
    pq = {}
    for p in protocols:
        fmr = np.where(rng.random(n) < 0.5, 1, rng.integers(2, 30, n))
        ap = 1.0 / fmr
        pq[p] = {"first_match_rank": fmr, "ap": ap, "ap_trapezoid": ap * 0.98, "inp": ap / 2}
    return U.per_query_table(pq, [f"query/{i:04d}.jpg" for i in range(n)], pids, np.arange(n) % 6 + 1)


def improved(table, share, seed):
    """The same queries with the first match moved to rank 1 for `share` of them."""
    rng = np.random.default_rng(seed)
    res = {}
    for p, cols in table.results.items():
        up = rng.random(len(table.pids)) < share
        fmr = np.where(up, 1, cols["first_match_rank"])
        ap = 1.0 / fmr
        res[p] = {"first_match_rank": fmr, "ap": ap, "ap_trapezoid": ap * 0.98, "inp": ap / 2}
    return U.per_query_table(res, table.queries, table.pids, table.camids)


def write_run(root, model, seed, table):
    """metrics.json + per_query.csv as the evaluate stage writes them."""
    d = root / "results" / "synthetic" / model / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "per_query.csv").write_text(U.per_query_csv(table))
    est = U.estimates(table)
    record = {"dataset": "synthetic", "model": model, "seed": seed, "mlflow_run_id": f"run-{model}-{seed}", **est,
              "ci95": U.model_intervals(table, **BOOT)["ci95"],
              "bootstrap": {**BOOT, "over": "query identities", "identities": N_IDS}}
    (d / "metrics.json").write_text(json.dumps(record))
    return d / "metrics.json", d / "per_query.csv"


def build(tmp_path, runs):
    paths = [write_run(tmp_path, m, s, t) for m, s, t in runs]
    metrics, per_query = [p[0] for p in paths], [p[1] for p in paths]
    return comparisons.build(load_runs(metrics), per_query, "synthetic", **BOOT), metrics


def row_of(md, *starts):
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:len(starts)] == list(starts):
            return cells
    raise AssertionError(f"no row starting with {starts} in\n{md}")


def test_one_seed_cells_show_the_metrics_json_interval_and_the_pair_reads_no_difference(tmp_path):
    a = base_table()
    b = improved(a, 0.02, seed=1)  # a tiny change: the interval contains 0
    record, metrics = build(tmp_path, [("baseline", 0, a), ("mutual", 0, b)])
    # one seed: comparisons.json gives exactly the interval metrics.json has
    for model, path in zip(("baseline", "mutual"), metrics):
        assert record["models"][model]["ci95"] == json.loads(path.read_text())["ci95"]
    assert record["bootstrap"]["identities"] == N_IDS
    (pair,) = record["pairs"]
    assert (pair["a"], pair["b"], pair["seeds"]) == ("baseline", "mutual", [0])
    d = pair["differences"]["rank1"]
    assert d["ci95"][0] <= 0 <= d["ci95"][1] and not d["significant"]
    assert d == U.paired_difference(a, b, **BOOT)["rank1"]

    doc = tables.table2(load_runs(metrics), SYNTH, "resnet18", {"synthetic": record})
    md = doc.to_markdown()
    est, ci = U.estimates(b), record["models"]["mutual"]["ci95"]
    cells = row_of(md, "ResNet-18 + mutual attention")
    assert cells[2] == keys.format_interval("rank1", est["rank1"], *ci["rank1"])
    assert cells[3] == keys.format_interval("mAP", est["mAP"], *ci["mAP"])
    assert f"percentile bootstrap over the {N_IDS} query identities" in md and "400 resamples" in md
    r1 = row_of(md, "baseline", "mutual attention", "single query", "Rank-1")
    assert r1[4] == keys.format_interval("rank1", d["difference"], *d["ci95"], signed=True).replace("-", "−")
    assert r1[6] == "no significant difference at 95%"
    assert "Paired comparisons" in md and "same query-identity resamples for both models" in md
    # the HTML page carries the section too
    assert "no significant difference at 95%" in doc.to_html()


def test_a_real_improvement_is_significant_and_table3_compares_multi_query(tmp_path):
    a = base_table()
    b = improved(a, 0.4, seed=2)
    record, metrics = build(tmp_path, [("baseline", 0, a), ("mutual", 0, b)])
    md = tables.table3(load_runs(metrics), SYNTH, "resnet18", {"synthetic": record}).to_markdown()
    for protocol in ("single query (SQ)", "multi-query (MQ, mean)"):
        row = row_of(md, "baseline", "mutual attention", protocol, "Rank-1")
        assert row[6] == "mutual attention higher (significant at 95%)"
        assert row[5] == f"{2 / 401:.3f}"  # no replicate at or below 0: the floor 2/(B+1) of 400 resamples
    mq = record["models"]["mutual"]
    assert row_of(md, "ResNet-18 + mutual attention")[4] == keys.format_interval(
        "multi_query_mean/rank1", mq["estimate"]["multi_query_mean/rank1"], *mq["ci95"]["multi_query_mean/rank1"])


def test_several_seeds_combine_seeds_and_identities(tmp_path):
    runs = []
    for s in (0, 1, 2):
        a = base_table(seed=10 + s)
        a = U.per_query_table(a.results, base_table().queries, base_table().pids, base_table().camids)
        runs += [("baseline", s, a), ("mutual", s, improved(a, 0.1 * s, seed=s))]
    record, metrics = build(tmp_path, runs)
    m = record["models"]["mutual"]
    assert m["seeds"] == [0, 1, 2]
    seeds_r1 = [U.estimates(t)["rank1"] for mm, _, t in runs if mm == "mutual"]
    assert m["estimate"]["rank1"] == pytest.approx(np.mean(seeds_r1))
    # the interval is the seeds-then-identities bootstrap, wider than any one seed's identity interval
    tables_m = [t for mm, _, t in runs if mm == "mutual"]
    assert m["ci95"] == U.model_intervals(tables_m, **BOOT)["ci95"]
    one = U.model_intervals(tables_m[0], **BOOT)["ci95"]["rank1"]
    assert m["ci95"]["rank1"][1] - m["ci95"]["rank1"][0] > one[1] - one[0]
    md = tables.table2(load_runs(metrics), SYNTH, "resnet18", {"synthetic": record}).to_markdown()
    assert row_of(md, "ResNet-18 + mutual attention")[2] == keys.format_interval(
        "rank1", float(np.mean(seeds_r1)), *m["ci95"]["rank1"])
    assert "resamples the seeds, then the 60 query identities" in md
    assert "seed and query-identity resamples" in md


def test_cli_compare_writes_the_file_and_tables_refuse_a_stale_one(tmp_path, capsys):
    a = base_table()
    paths = [write_run(tmp_path, m, 0, t) for m, t in (("baseline", a), ("mutual", improved(a, 0.1, 3)))]
    out = tmp_path / "results" / "synthetic" / "comparisons.json"
    rc = reid_main(["compare", "--dataset", "synthetic", "--metrics", *(str(p[0]) for p in paths),
                      "--per-query", *(str(p[1]) for p in reversed(paths)), "--bootstrap", json.dumps(BOOT),
                      "--out", str(out)])
    assert rc == 0
    record = json.loads(out.read_text())
    assert record["models"]["baseline"]["ci95"] == json.loads(paths[0][0].read_text())["ci95"]
    # a second seed appears in the metrics but comparisons.json was built without it
    extra = write_run(tmp_path, "mutual", 1, improved(a, 0.2, 4))
    runs = load_runs([p[0] for p in paths] + [extra[0]])
    with pytest.raises(ReportInputError, match="has seeds \\[0\\] for 'mutual', the metrics files have \\[0, 1\\]"):
        tables.table2(runs, SYNTH, "resnet18", tables.load_comparisons([out]))
    # a per-query file missing beside a metrics.json is named
    with pytest.raises(ReportInputError, match="no per_query.csv given from its folder"):
        comparisons.build(load_runs([p[0] for p in paths]), [paths[0][1]], "synthetic", **BOOT)
    # --bootstrap is checked against the config schema: a misspelt key is named, nothing is written
    out.unlink()
    assert reid_main(["compare", "--dataset", "synthetic", "--metrics", *(str(p[0]) for p in paths),
                      "--per-query", *(str(p[1]) for p in paths), "--bootstrap", '{"resampels": 5}',
                      "--out", str(out)]) == 1
    assert "resampels: unexpected key" in capsys.readouterr().err and not out.exists()


def test_table1_has_a_paired_section_per_dataset(tmp_path):
    a = base_table()
    record, metrics = build(tmp_path, [("baseline", 0, a), ("mutual", 0, improved(a, 0.3, 5))])
    doc = tables.table1(load_runs(metrics), [SYNTH], {"synthetic": record})
    md = doc.to_markdown()
    row = row_of(md, "synthetic", "baseline", "mutual attention", "single query + re-ranking", "mAP")
    d = record["pairs"][0]["differences"]["rerank/mAP"]
    assert row[5] == keys.format_interval("rerank/mAP", d["difference"], *d["ci95"], signed=True).replace("-", "−")
    ci = record["models"]["mutual"]["ci95"]["rank1"]
    sq = doc.table[(doc.table.Protocol == "single query") & (doc.table.Metric == "Rank-1")].iloc[0]
    assert sq["synthetic: reproduced (%)"].endswith(f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]")
