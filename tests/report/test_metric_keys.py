"""The metric-key registry (reid.metrics.keys): keys built and parsed in one place, and a metric that is
not a fraction (a mean rank, milliseconds per query) read, checked and printed right by every table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reid.metrics import keys
from reid.report import tables
from reid.report.paper import describe_dataset
from reid.report.runs import ReportInputError, load_runs

SYNTH = describe_dataset("synthetic", {"source": "synthetic"})
FRACTIONS = {"rank1": 0.5, "rank5": 0.6, "rank10": 0.7, "rank20": 0.8, "mAP": 0.3, "mAP_trapezoid": 0.29, "mINP": 0.1}


def test_keys_are_built_and_parsed_back_for_every_protocol_and_metric():
    for protocol in keys.PROTOCOLS:
        for name in keys.METRICS:
            k = keys.key(protocol, name)
            assert keys.parse(k) == (protocol, name) and keys.is_metric(k) and not keys.is_curve(k)
        assert keys.is_curve(keys.curve_key(protocol))
    assert keys.key("single", "rank1") == "rank1"
    assert keys.key("multi_query_mean/rerank", "mAP") == "multi_query_mean/rerank/mAP"
    for other in ("seed", "config_hash", "counts", "ci95", "rerank/unknown", "nonsense/rank1"):
        assert keys.parse(other) is None and not keys.is_metric(other)
    with pytest.raises(ValueError, match="protocol 'multi_query_median' is unknown"):
        keys.key("multi_query_median", "rank1")
    with pytest.raises(ValueError, match="metric 'rank2' is not in"):
        keys.key("single", "rank2")


def test_protocol_names_come_from_pooling_and_rerank():
    from reid.metrics.multi_query import POOLINGS

    named = {keys.protocol(pooling, rerank) for pooling in (None, *POOLINGS) for rerank in (False, True)}
    assert named == set(keys.PROTOCOLS)
    assert keys.protocol() == "single" and keys.protocol(rerank=True) == "rerank"
    assert keys.protocol("max", rerank=True) == "multi_query_max/rerank"
    with pytest.raises(ValueError, match="no protocol for pooling='median'"):
        keys.protocol("median")
    # the protocol of any key, interval bounds included; which of them pool gt_bbox images
    assert keys.protocol_of("rank1_ci95_low") == "single"
    assert keys.protocol_of("multi_query_mean/rerank/mAP_ci95_high") == "multi_query_mean/rerank"
    assert keys.protocol_of("nonsense/rank1") is None
    assert [p for p in keys.PROTOCOLS if keys.is_multi_query(p)] == [
        keys.protocol(pooling, rerank) for pooling in POOLINGS for rerank in (False, True)]
    assert not keys.is_multi_query(None)


def test_mlflow_metric_names_leave_the_multi_query_protocols_to_metrics_json():
    from reid.tracking import mlflow_metrics

    record = {keys.key(p, m): 0.5 for p in keys.PROTOCOLS for m in ("rank1", "mAP", "mINP")}
    record.update({"rank1_ci95_low": 0.4, "multi_query_max/mAP_ci95_low": 0.3, "rerank/mAP_ci95_high": 0.6})
    assert sorted(mlflow_metrics(record)) == sorted([
        "rank1", "mAP", "single_query/mINP", "single_query/rank1_ci95_low",
        "rerank/rank1", "rerank/mAP", "rerank/mINP", "rerank/mAP_ci95_high"])


def test_every_key_evaluate_writes_is_a_registered_metric_or_curve():
    from reid.evaluate import compute_metrics
    from reid.typed_config import RerankConfig

    gen = torch.Generator().manual_seed(0)
    n_q, n_g = 6, 20
    feats = {"query_feats": torch.randn(n_q, 8, generator=gen), "gallery_feats": torch.randn(n_g, 8, generator=gen),
             "query_pids": torch.arange(1, n_q + 1), "gallery_pids": torch.arange(n_g) % n_q + 1,
             "query_camids": torch.zeros(n_q, dtype=torch.long), "gallery_camids": torch.ones(n_g, dtype=torch.long),
             "mq_feats": torch.randn(2 * n_q, 8, generator=gen), "mq_pids": torch.arange(1, n_q + 1).repeat(2),
             "mq_camids": torch.zeros(2 * n_q, dtype=torch.long)}
    out = compute_metrics(feats, max_rank=10, rerank=RerankConfig.from_dict({"k1": 4, "k2": 2}))
    written = [k for k in out if k not in ("counts", "per_query")]
    assert written and all(keys.is_metric(k) or keys.is_curve(k) for k in written), written
    assert {keys.parse(k)[0] for k in written} == set(keys.PROTOCOLS)
    assert set(out["counts"]["valid_queries"]) == {keys.prefix(p) or "single_query" for p in keys.PROTOCOLS}


def _write(tmp_path, model, seed, extra_values, ci=None):
    d = tmp_path / model / f"seed{seed}"
    d.mkdir(parents=True)
    m = {"dataset": "synthetic", "model": model, "seed": seed, "mlflow_run_id": f"id-{model}-{seed}"}
    for protocol in keys.PROTOCOLS:
        for name, value in {**FRACTIONS, **extra_values}.items():
            m[keys.key(protocol, name)] = value
    if ci is not None:
        m["ci95"] = ci
    (d / "metrics.json").write_text(json.dumps(m))
    return d / "metrics.json"


@pytest.fixture
def mean_rank(monkeypatch):
    """Two metrics that are not fractions, registered for the test only (the registry is restored after)."""
    monkeypatch.setattr(keys, "METRICS", dict(keys.METRICS))
    monkeypatch.setattr(keys, "COLUMNS", dict(keys.COLUMNS))
    timing = keys.Column("ms", lambda m: np.full(m.counts.shape, 12.5))  # a stand-in per-query time
    return [keys.register(keys.Metric("mean_rank", "mean first-match rank", "rank", True, "test",
                                      keys.FIRST_MATCH_RANK)),
            keys.register(keys.Metric("ms_per_query", "time per query", "ms", True, "test", timing))]


def test_a_metric_that_is_not_a_fraction_prints_as_itself_in_every_table(tmp_path, mean_rank):
    paths = [_write(tmp_path, "mutual", 0, {"mean_rank": 3.7, "ms_per_query": 12.5}),
             _write(tmp_path, "mutual", 1, {"mean_rank": 4.1, "ms_per_query": 11.5}),
             _write(tmp_path, "baseline", 0, {"mean_rank": 250.0, "ms_per_query": 9.0})]
    runs = load_runs(paths)  # 3.7 and 250 are not fractions, and are not refused as such
    df = tables.table1(runs, [SYNTH]).table
    row = df[(df.Protocol == "single query") & (df.Metric == "mean first-match rank (rank)")].iloc[0]
    assert row["synthetic: reproduced"] == "3.90 ± 0.28"  # mean and sample std of 3.7 and 4.1, not in percent
    assert row["synthetic: paper, Market-1501 (reference only)"] == "–"  # the paper has no such number
    ms = df[(df.Protocol == "single query + re-ranking") & (df.Metric == "time per query (ms)")].iloc[0]
    assert ms["synthetic: reproduced"] == "12.00 ± 0.71"
    r1 = df[(df.Protocol == "single query") & (df.Metric == "Rank-1 (%)")].iloc[0]
    assert r1["synthetic: reproduced"] == "50.00 ± 0.00"  # fractions stay percentages beside them
    for table in (tables.table2, tables.table3):  # fixed columns: built, their cells unaffected
        md = table(runs, SYNTH, "resnet18").to_markdown()
        assert "50.00" in md and "390" not in md


def test_an_interval_of_a_metric_that_is_not_a_fraction_prints_in_its_unit(tmp_path, mean_rank):
    ci = {k: [0.4, 0.6] for k in (keys.key(p, m) for p in keys.PROTOCOLS for m in FRACTIONS)}
    ci["mean_rank"] = [2.9, 4.5]
    runs = load_runs([_write(tmp_path, "mutual", 0, {"mean_rank": 3.7, "ms_per_query": 10.0}, ci=ci)])
    df = tables.table1(runs, [SYNTH]).table
    row = df[(df.Protocol == "single query") & (df.Metric == "mean first-match rank (rank)")].iloc[0]
    assert row["synthetic: reproduced"] == "3.70 [2.90, 4.50]"
    r1 = df[(df.Protocol == "single query") & (df.Metric == "Rank-1 (%)")].iloc[0]
    assert r1["synthetic: reproduced"] == "50.00 [40.00, 60.00]"


def test_each_metric_is_checked_against_its_own_unit(tmp_path, mean_rank):
    with pytest.raises(ReportInputError, match=r"mean_rank = 0.5 is not a rank in \[1.0, inf\]"):
        load_runs([_write(tmp_path / "a", "mutual", 0, {"mean_rank": 0.5, "ms_per_query": 1.0})])
    with pytest.raises(ReportInputError, match=r"metrics.json: mAP = 1.5 is not a fraction in \[0, 1\]"):
        load_runs([_write(tmp_path / "b", "mutual", 0, {"mAP": 1.5, "mean_rank": 2.0, "ms_per_query": 1.0})])
    assert keys.format_value("rank1", 0.3727) == "37.27" and keys.format_value("mean_rank", 3.7) == "3.70"
    assert keys.format_value("ms_per_query", np.float64(0.5)) == "0.50"


def test_a_column_name_is_one_column_and_an_unregistered_column_is_refused_when_read(tmp_path, mean_rank):
    other = keys.Column("first_match_rank", lambda m: m.first, integer=True)  # a second column, same name
    with pytest.raises(ValueError, match="another per-query column is already named 'first_match_rank'"):
        keys.register(keys.Metric("first_rank_0", "first rank, 0-based", "rank", False, "test", other))
    with pytest.raises(ValueError, match="metric name 'mAP' is already a metric"):
        keys.register(keys.Metric("mAP", "mAP", "fraction", True, "test", keys.AP))
    from reid.metrics import uncertainty as U

    path = tmp_path / "per_query.csv"
    path.write_text("protocol,query,pid,camid,first_match_rank,ap,r_precision\nsingle,query/a.jpg,1,1,2,0.5,0.5\n")
    with pytest.raises(ValueError, match=r"per_query.csv: header: per-query column\(s\) \['r_precision'\] are not "
                                         r"registered .*load the plugin"):
        U.read_per_query_csv(path)
    # a file without a registered column has no keys of its metrics, and those it has are computed
    path.write_text("protocol,query,pid,camid,first_match_rank,ap\nsingle,query/a.jpg,1,1,2,0.5\n"
                    "single,query/b.jpg,2,1,,\n")
    assert U.estimates(U.read_per_query_csv(path)) == {
        "rank1": 0.0, "rank5": 1.0, "rank10": 1.0, "rank20": 1.0, "mAP": 0.5, "mean_rank": 2.0}
