"""Tables 1-3 from hand-made metrics.json files: values, seeds, captions, paper rows, run ids."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from reid.report import tables
from reid.cli import main as reid_main
from reid.data.kinds import REGISTRY
from reid.report.paper import describe_dataset, paper_numbers
from reid.report.runs import ReportInputError, load_runs

SYNTH = describe_dataset("synthetic", {"source": "synthetic"})
DUKE = describe_dataset("duke", {"source": "archive", "kind": "dukemtmcreid", "archive": "x.zip"},
                        REGISTRY["dukemtmcreid"])
MARKET = describe_dataset("market", {"source": "archive", "kind": "market1501", "archive": "x.zip"},
                          REGISTRY["market1501"])
PREFIXES = ("", "rerank/", "multi_query_mean/", "multi_query_max/", "multi_query_mean/rerank/")


def write_metrics(root, dataset, model, seed, values, multi_query=True, **extra):
    """A metrics.json as the evaluate stage writes it; ``values`` maps metric -> fraction for every prefix."""
    d = root / "results" / dataset / model / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    m = {"dataset": dataset, "model": model, "seed": seed, "config_hash": "cafe01",
         "mlflow_run_id": f"id-{dataset}-{model}-{seed}", "git_commit": "0123abc"}
    for prefix in PREFIXES:
        if prefix.startswith("multi_query") and not multi_query:
            continue
        for k, v in values.items():
            m[prefix + k] = v
        m[prefix + "cmc"] = [min(1.0, values["rank1"] + 0.01 * i) for i in range(50)]
    m.update(extra)
    path = d / "metrics.json"
    path.write_text(json.dumps(m))
    return path


def vals(r1, map_, trap=None):
    return {"rank1": r1, "rank5": min(1, r1 + 0.05), "rank10": min(1, r1 + 0.08), "rank20": min(1, r1 + 0.1),
            "mAP": map_, "mAP_trapezoid": trap if trap is not None else map_ - 0.01, "mINP": 0.1}


def row_of(md: str, start: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == start:
            return cells
    raise AssertionError(f"no row starting with {start!r} in\n{md}")


def test_table2_single_seed_two_decimal_percentages_and_synthetic_caption(tmp_path):
    paths = [write_metrics(tmp_path, "synthetic", "baseline", 0, vals(0.123456, 0.0987)),
             write_metrics(tmp_path, "synthetic", "mutual", 0, vals(0.5, 0.33333, trap=0.32109))]
    md = tables.table2(load_runs(paths), SYNTH, "resnet18").to_markdown()
    base = row_of(md, "ResNet-18 baseline (Siamese, no attention)")
    assert base[1:] == ["reproduced here (synthetic)", "12.35", "9.87", "8.87"]
    mutual = row_of(md, "ResNet-18 + mutual attention")
    assert mutual[2:] == ["50.00", "33.33", "32.11"]
    # plain wording: the data is synthetic and not comparable; never claims DukeMTMC-reID data for our rows
    assert "synthetic data" in md and "NOT comparable" in md
    assert "reproduced here (DukeMTMC" not in md
    assert "one training run (seed 0)" in md and "±" not in md.split("MLflow run ids")[0].split("\n|")[-1]


def test_table2_two_seeds_mean_and_sample_std(tmp_path):
    r1s, maps = (0.40, 0.46), (0.20, 0.25)
    paths = [write_metrics(tmp_path, "synthetic", "mutual", s, vals(r1s[s], maps[s])) for s in (0, 1)]
    paths += [write_metrics(tmp_path, "synthetic", "baseline", s, vals(0.3, 0.1)) for s in (0, 1)]
    md = tables.table2(load_runs(paths), SYNTH, "resnet50").to_markdown()
    cells = row_of(md, "ResNet-50 + mutual attention")
    # independent arithmetic: mean 43.00, sample std of (40, 46) = sqrt(18) = 4.2426
    assert cells[2] == "43.00 ± 4.24"
    assert cells[3] == f"{22.5:.2f} ± {statistics.stdev([20.0, 25.0]):.2f}" == "22.50 ± 3.54"
    assert row_of(md, "ResNet-50 baseline (Siamese, no attention)")[2] == "30.00 ± 0.00"
    assert "mean ± sample standard deviation over 2 seeds (0, 1)" in md


def test_table2_paper_rows_come_from_the_data_file_and_precede_ours(tmp_path):
    paths = [write_metrics(tmp_path, "synthetic", m, 0, vals(0.5, 0.3)) for m in ("mutual", "baseline")]
    md = tables.table2(load_runs(paths), SYNTH, "resnet18").to_markdown()
    data_rows = paper_numbers()["table2"]["rows"]
    assert len(data_rows) == 15  # as printed, the paper's duplicate GAN(R) row included
    assert [p["method"] for p in data_rows][6] == "GAN(R) [22]"
    assert "the paper's own duplicate" in data_rows[6]["note"]
    for p in data_rows:
        cells = row_of(md, p["method"] + (" (*)" if p.get("note") else ""))
        assert cells[1] == "reported by the paper (DukeMTMC-reID)"
        assert cells[2] == f"{p['rank1']:.2f}"
        assert cells[3] == ("–" if p["mAP"] is None else f"{p['mAP']:.2f}")
    assert row_of(md, "Ours (mutual attention)")[2:4] == ["80.83", "64.52"]
    assert row_of(md, "GOG [52]")[3] == "–"
    assert row_of(md, "GAN(R) [22] (*)")[2:4] == row_of(md, "GAN(R) [50]")[2:4] == ["67.68", "47.13"]
    assert "(*) GAN(R) [22]: the paper's own duplicate" in md and "first 15 rows" in md
    order = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")]
    assert order.index("Ours (mutual attention)") < order.index("ResNet-18 baseline (Siamese, no attention)")
    # baseline before mutual even though the inputs listed mutual first
    assert order.index("ResNet-18 baseline (Siamese, no attention)") < order.index("ResNet-18 + mutual attention")


def test_table2_lists_every_run_id(tmp_path):
    paths = [write_metrics(tmp_path, "synthetic", m, s, vals(0.5, 0.3)) for m in ("baseline", "mutual") for s in (0, 3)]
    md = tables.table2(load_runs(paths), SYNTH, "resnet18").to_markdown()
    tail = md.split("MLflow run ids")[1]
    for m in ("baseline", "mutual"):
        for s in (0, 3):
            assert f"id-synthetic-{m}-{s}" in tail
    assert md.rstrip().endswith("|")  # the table of run ids closes the document


def test_table2_on_the_papers_dataset_says_comparable(tmp_path):
    paths = [write_metrics(tmp_path, "duke", "mutual", 0, vals(0.8, 0.6))]
    md = tables.table2(load_runs(paths), DUKE, "resnet50").to_markdown()
    assert "NOT comparable" not in md and "synthetic" not in md
    assert row_of(md, "ResNet-50 + mutual attention")[1] == "reproduced here (duke)"


def test_table2_on_market_data_is_flagged_not_comparable(tmp_path):
    paths = [write_metrics(tmp_path, "market", "mutual", 0, vals(0.8, 0.6))]
    md = tables.table2(load_runs(paths), MARKET, "resnet50").to_markdown()
    assert "not on DukeMTMC-reID" in md and "NOT comparable" in md


def test_table3_single_and_multi_query(tmp_path):
    paths = [write_metrics(tmp_path, "synthetic", "mutual", 0, vals(0.5, 0.3)),
             write_metrics(tmp_path, "synthetic", "baseline", 0, vals(0.4, 0.2), multi_query=False)]
    md = tables.table3(load_runs(paths), SYNTH, "resnet18").to_markdown()
    assert row_of(md, "Ours with MA")[2:6] == ["90.74", "76.92", "93.82", "83.55"]
    assert row_of(md, "PUL")[2:6] == ["45.50", "–", "–", "–"]
    assert row_of(md, "ResNet-18 + mutual attention")[2:8] == ["50.00", "30.00", "50.00", "30.00", "29.00", "29.00"]
    assert row_of(md, "ResNet-18 baseline (Siamese, no attention)")[4:6] == ["–", "–"]
    assert "not on Market-1501" in md


def test_table1_differences_only_where_comparable(tmp_path):
    paths = [write_metrics(tmp_path, "market", "mutual", 0, vals(0.9, 0.8)),
             write_metrics(tmp_path, "synthetic", "mutual", 0, vals(0.5, 0.3)),
             write_metrics(tmp_path, "synthetic", "baseline", 0, vals(0.1, 0.1))]
    doc = tables.table1(load_runs(paths), [MARKET, SYNTH])
    df = doc.table
    sq_r1 = df[(df.Protocol == "single query") & (df.Metric == "Rank-1")].iloc[0]
    assert sq_r1["market: reproduced (%)"] == "90.00"
    assert sq_r1["market: paper, Market-1501 (%)"] == "90.74"
    assert sq_r1["market: difference (pp)"] == "−0.74"
    assert sq_r1["synthetic: reproduced (%)"] == "50.00"  # the mutual run, not the baseline
    assert sq_r1["synthetic: difference (pp)"] == "n/c"
    rr_map = df[(df.Protocol == "single query + re-ranking") & (df.Metric == "mAP")].iloc[0]
    assert rr_map["market: difference (pp)"] == f"{80.0 - 87.30:+.2f}".replace("-", "−")
    r5 = df[(df.Protocol == "single query") & (df.Metric == "Rank-5")].iloc[0]
    assert r5["market: paper, Market-1501 (%)"] == "90.36 (sic)"
    # re-ranked Rank-10 and Rank-20 below the single-query ones: flagged, in the cell and the caption
    rr = df[df.Protocol == "single query + re-ranking"].set_index("Metric")["market: paper, Market-1501 (%)"]
    assert (rr["Rank-10"], rr["Rank-20"], rr["Rank-1"]) == ("96.70 (?)", "98.07 (?)", "91.77")
    assert "Market-1501 rerank Rank-10 (?)" in doc.caption
    # the paper's rows first, in its order, then the project's extra rows
    order = list(dict.fromkeys(df.Protocol))
    assert order[:3] == ["single query", "multi-query (mean pooling)", "single query + re-ranking"], order
    assert set(order[3:]) == {"multi-query (max pooling)", "multi-query (mean) + re-ranking"}, order
    assert sq_r1["synthetic: paper, Market-1501 (reference only) (%)"] == "90.74"
    md = doc.to_markdown()
    assert "'synthetic' is not one of the paper's datasets" in md and "id-synthetic-mutual-0" in md


def test_table1_two_non_paper_datasets_keep_their_own_columns(tmp_path):
    paths = [write_metrics(tmp_path, "synthetic", "mutual", 0, vals(0.5, 0.3)),
             write_metrics(tmp_path, "synthetic_b", "mutual", 0, vals(0.2, 0.1))]
    other = describe_dataset("synthetic_b", {"source": "synthetic"})
    df = tables.table1(load_runs(paths), [SYNTH, other]).table
    assert len(df.columns) == 2 + 2 * 3
    sq_r1 = df[(df.Protocol == "single query") & (df.Metric == "Rank-1")].iloc[0]
    assert (sq_r1["synthetic: reproduced (%)"], sq_r1["synthetic_b: reproduced (%)"]) == ("50.00", "20.00")


def test_table1_without_gt_bbox_leaves_multi_query_empty(tmp_path):
    paths = [write_metrics(tmp_path, "duke", "mutual", 0, vals(0.8, 0.6), multi_query=False)]
    df = tables.table1(load_runs(paths), [DUKE]).table
    mq = df[df.Protocol.str.startswith("multi-query")]
    assert set(mq["duke: reproduced (%)"]) == {"–"}
    assert set(mq["duke: paper, DukeMTMC-reID (%)"]) == {"–"}
    sq = df[(df.Protocol == "single query") & (df.Metric == "mAP")].iloc[0]
    assert sq["duke: difference (pp)"] == "−4.52"


def test_bad_inputs_name_the_file_and_key(tmp_path):
    bad = write_metrics(tmp_path, "synthetic", "mutual", 0, vals(0.5, 0.3), mAP=63.2)  # percent, not fraction
    with pytest.raises(ReportInputError, match=r"metrics.json: mAP = 63.2 is not a fraction"):
        load_runs([bad])
    other = write_metrics(tmp_path, "market", "mutual", 0, vals(0.5, 0.3))
    with pytest.raises(ReportInputError, match="is for dataset 'market'"):
        tables.table2(load_runs([other]), SYNTH, "resnet18")
    p0 = write_metrics(tmp_path, "synthetic", "baseline", 0, vals(0.5, 0.3))
    p1 = write_metrics(tmp_path, "synthetic", "baseline", 1, vals(0.5, 0.3))
    m = json.loads(p1.read_text())
    del m["mAP_trapezoid"]
    p1.write_text(json.dumps(m))
    with pytest.raises(ReportInputError, match="mAP_trapezoid is missing from .*seed1"):
        tables.table2(load_runs([p0, p1]), SYNTH, "resnet18")
    with pytest.raises(ReportInputError, match="missing key"):
        (tmp_path / "x.json").write_text("{}")
        load_runs([tmp_path / "x.json"])


def test_cli_writes_markdown_and_html(tmp_path, capsys):
    paths = [write_metrics(tmp_path, "synthetic", m, 0, vals(0.5, 0.3)) for m in ("baseline", "mutual")]
    out = tmp_path / "tables" / "table2.md"
    rc = reid_main(["table2", "--metrics", *map(str, paths), "--dataset", "synthetic",
                      "--dataset-specs", json.dumps({"synthetic": {"source": "synthetic"}}),
                      "--backbone", "resnet18", "--out", str(out), "--html-out", str(out.with_suffix(".html"))])
    assert rc == 0
    assert row_of(out.read_text(), "ResNet-18 + mutual attention")[2] == "50.00"
    page = out.with_suffix(".html").read_text()
    assert "<table" in page and "NOT comparable" in page and "id-synthetic-mutual-0" in page
    assert re.search(r"<td>ResNet-18 \+ mutual attention</td>", page)
    assert reid_main(["table2", "--metrics", *map(str, paths), "--dataset", "nope",
                      "--dataset-specs", "{}", "--backbone", "resnet18", "--out", str(out)]) == 1
    assert "no entry for dataset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("flips, expected", [
    ((False, False), "no flip test"),
    ((True, True), "mirror image (flip test"),
    ((True, False), "Only these runs used a flip test (`evaluate.flip`): synthetic/baseline."),
])
def test_tables_say_whether_test_features_used_a_flip_test(tmp_path, flips, expected):
    paths = [write_metrics(tmp_path, "synthetic", model, 0, vals(0.3, 0.2), flip_test=flip)
             for model, flip in zip(("baseline", "mutual"), flips)]
    runs = load_runs(paths)
    for doc in (tables.table2(runs, SYNTH, "resnet18"), tables.table3(runs, SYNTH, "resnet18")):
        assert expected in doc.to_markdown()


def test_table1_flags_dukes_rank10_printed_twice(tmp_path):
    paths = [write_metrics(tmp_path, "duke", "mutual", 0, vals(0.8, 0.6), multi_query=False)]
    doc = tables.table1(load_runs(paths), [DUKE])
    df = doc.table.set_index(["Protocol", "Metric"])["duke: paper, DukeMTMC-reID (%)"]
    assert df[("single query", "Rank-10")] == df[("single query + re-ranking", "Rank-10")] == "93.49 (?)"
    assert df[("single query", "Rank-20")] == "94.74"  # only the flagged cells carry a mark
    md = doc.to_markdown()
    assert "possibly copied" in md and "DukeMTMC-reID single query Rank-10 (?)" in md


def test_the_strong_baselines_published_rows_appear_with_bot_and_its_difference_on_the_published_dataset(tmp_path):
    duke = [write_metrics(tmp_path, "duke", m, 0, vals(r1, ap)) for m, r1, ap in (("baseline", 0.76, 0.57),
                                                                                     ("bot", 0.85, 0.75))]
    md = tables.table2(load_runs(duke), DUKE, "resnet50", recipe_notes={"bot": "epochs 60 (published 120)"}).to_markdown()
    published = row_of(md, "BoT: ResNet-50, all tricks + center loss")
    assert published[1:4] == ["published for the strong baseline (Luo et al. 2019)", "86.40", "76.40"]
    assert row_of(md, "fast-reid BoT(R50)")[2:4] == ["87.20", "77.00"]
    assert row_of(md, "ResNet-50 strong baseline (BoT)")[1] == "reproduced here (duke)"
    # reproduced minus published, in points: 85.00 - 86.4 and 75.00 - 76.4
    assert "Rank-1 / mAP 85.00 / 75.00, published 86.4 / 76.4" in md and "difference -1.40 / -1.40 points" in md
    assert "The 'bot' row was trained with the strong baseline's recipe, changed in: epochs 60 (published 120)." in md
    market = [write_metrics(tmp_path, "market", "bot", 0, vals(0.9, 0.8))]
    md3 = tables.table3(load_runs(market), MARKET, "resnet50").to_markdown()
    assert row_of(md3, "BoT: ResNet-50, all tricks + center loss")[2:4] == ["94.50", "85.90"]
    assert row_of(md3, "BoT: standard baseline (no tricks)")[2:4] == ["87.70", "74.00"]
    # without bot the paper's tables are as they were
    md_paper = tables.table2(load_runs(duke[:1]), DUKE, "resnet50").to_markdown()
    assert "BoT" not in md_paper and "strong baseline" not in md_paper


def test_departures_name_each_key_a_run_changed_of_the_published_settings():
    from reid.config import departures

    assert departures("bot", {"epochs": 30, "lr_milestones": [20, 26], "lr": 0.00035}) == [
        "epochs 30 (published 120)", "lr_milestones [20, 26] (published [40, 70])"]
