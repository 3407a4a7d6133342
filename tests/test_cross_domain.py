"""Cross-domain evaluation: the configuration (per-dataset `synthetic:` keys, `cross_domain` pairs) and
the table. The chain itself runs through Snakemake in tests/test_pipeline.py (its tiny workflow)."""

import copy
from pathlib import Path

import pytest
import yaml

from reid import config as cfg
from reid import config_checks as checks

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- configuration (no Snakemake)


def _config(**changes):
    config = checks.load(ROOT / "config.yaml")
    config.update(copy.deepcopy(changes))
    return config


def test_a_datasets_synthetic_keys_merge_over_the_top_level_section():
    config = _config()
    config["dataset"]["other"] = {"source": "synthetic",
                                  "synthetic": {"seed": 9, "cameras_per_id": [3, 3], "difficulty": {"blur_prob": 0.5}}}
    merged = cfg.effective_synthetic(config, "other")
    top = config["synthetic"]
    assert merged["seed"] == 9 and merged["cameras_per_id"] == [3, 3]          # replaced, lists whole
    assert merged["difficulty"] == {**top["difficulty"], "blur_prob": 0.5}     # nested keys merged
    assert {k: v for k, v in merged.items() if k not in ("seed", "cameras_per_id", "difficulty")} == \
        {k: v for k, v in top.items() if k not in ("seed", "cameras_per_id", "difficulty")}
    assert top["seed"] == 1501 and "blur_prob" in top["difficulty"] and top["difficulty"]["blur_prob"] == 0.15
    assert cfg.effective_synthetic(config, "synthetic") == top                  # no keys of its own: unchanged
    merged["difficulty"]["blur_prob"] = 0.0
    assert cfg.effective_synthetic(config, "other")["difficulty"]["blur_prob"] == 0.5  # nothing shared


@pytest.mark.parametrize("override, message", [
    ({"seeed": 2}, "dataset.other.synthetic (merged over the top-level 'synthetic:' section): invalid\n  seeed: unexpected key"),
    ({"cameras": 1}, "dataset.other.synthetic (merged over the top-level 'synthetic:' section): invalid\n  cameras: 1 is less"),
    ({"difficulty": {"camera_cast": -1}}, "difficulty.camera_cast: -1 is less than the minimum"),
])
def test_a_bad_synthetic_override_names_the_dataset_and_key(override, message):
    config = _config()
    config["dataset"]["other"] = {"source": "synthetic", "synthetic": override}
    with pytest.raises(cfg.ConfigError) as e:
        checks.check_references(config, "my.yaml")
    assert message in str(e.value) and str(e.value).startswith("my.yaml: ")


def test_synthetic_keys_on_a_dataset_that_is_not_synthetic_are_refused():
    config = _config()
    config["dataset"]["mine"] = {"source": "folder", "path": "/x", "synthetic": {"seed": 2}}
    with pytest.raises(cfg.ConfigError, match=r"dataset\.mine\.synthetic: only a dataset with source: synthetic"):
        checks.check_references(config)


@pytest.mark.parametrize("pairs, message", [
    ([{"train": "synthetic", "test": "nowhere"}],
     r"cross_domain\[0\] \(train: synthetic, test: nowhere\): test dataset 'nowhere' is not defined"),
    ([{"train": "nowhere", "test": "synthetic"}], r"cross_domain\[0\] .*train dataset 'nowhere' is not defined"),
    ([{"train": "synthetic", "test": "synthetic"}], r"cross_domain\[0\] .*train and test are the same dataset"),
    ([{"train": "synthetic", "test": "synthetic_b"}, {"train": "synthetic", "test": "synthetic_b"}],
     r"cross_domain\[1\] .*the pair is listed twice \(first as cross_domain\[0\]\)"),
])
def test_bad_cross_domain_entries_are_named(pairs, message):
    config = _config(cross_domain=pairs)
    with pytest.raises(cfg.ConfigError, match=message):
        checks.check_references(config)


def test_two_pairs_with_one_folder_name_are_refused():
    config = _config()
    for name in ("a", "b", "a_to_b", "b_to_c", "c"):
        config["dataset"][name] = {"source": "synthetic"}
    config["cross_domain"] = [{"train": "a_to_b", "test": "c"}, {"train": "a", "test": "b_to_c"}]
    with pytest.raises(cfg.ConfigError, match=r"cross_domain\[1\] .*results/cross_domain/a_to_b_to_c/ is also that of "
                                              r"cross_domain\[0\]"):
        checks.check_references(config)


def test_the_schema_rejects_a_pair_without_test():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["cross_domain"] = [{"train": "synthetic"}]
    with pytest.raises(cfg.ConfigError, match=r"cross_domain\.0: 'test' is a required property"):
        checks.validate(config)


# ---------------------------------------------------------------- the table (reid.report.tables)


def _run(train, test, model, seed, rank1, mAP):
    from reid.report.runs import Run

    info = {"ci95": {"rank1": [rank1 - 0.1, rank1 + 0.05], "mAP": [mAP - 0.1, mAP + 0.05]},
            "bootstrap": {"resamples": 100, "seed": 0, "identities": 50}, "flip_test": True}
    if train != test:
        info["train_dataset"] = train
    return Run(path=Path(f"results/{train}_{test}/{model}/seed{seed}/metrics.json"), dataset=test, model=model,
               seed=seed, run_id=f"{train}-{model}-{seed}", metrics={"rank1": rank1, "mAP": mAP}, info=info)


def _infos(*names):
    from reid.report.paper import describe_dataset

    return {n: describe_dataset(n, {"source": "synthetic"}) for n in names}


def test_the_table_puts_each_training_sets_runs_in_its_row_and_dashes_unconfigured_pairs():
    from reid.report.tables import cross_domain_table

    pairs = [("a", "b"), ("b", "a"), ("a", "c")]
    in_domain = [_run("a", "a", "baseline", 0, 0.50, 0.40), _run("b", "b", "baseline", 0, 0.60, 0.45)]
    cross = [_run("a", "b", "baseline", 0, 0.20, 0.15), _run("b", "a", "baseline", 0, 0.25, 0.18),
             _run("a", "c", "baseline", 0, 0.10, 0.05)]
    doc = cross_domain_table(in_domain, cross, pairs, _infos("a", "b", "c"), "resnet18")
    table = doc.table.set_index("Trained on")
    assert list(table.columns) == ["Method", "a: Rank-1 (%)", "a: mAP (%)", "b: Rank-1 (%)", "b: mAP (%)",
                                   "c: Rank-1 (%)", "c: mAP (%)"]
    assert table.loc["a", "a: Rank-1 (%)"] == "50.00 [40.00, 55.00]"      # in-domain diagonal
    assert table.loc["a", "b: mAP (%)"] == "15.00 [5.00, 20.00]"
    assert table.loc["b", "a: Rank-1 (%)"] == "25.00 [15.00, 30.00]"
    assert table.loc["b", "b: mAP (%)"] == "45.00 [35.00, 50.00]"
    assert table.loc["b", "c: Rank-1 (%)"] == "–"                          # b -> c is not configured
    assert "trained on a, tested on b; trained on b, tested on a; trained on a, tested on c" in doc.caption
    assert list(doc.runs["Dataset"]) == ["a (in-domain)", "a → b", "a → c", "b → a", "b (in-domain)"]


def test_the_table_shows_mean_and_std_over_seeds_like_the_other_tables():
    from reid.report.tables import cross_domain_table

    in_domain = [_run("a", "a", "mutual", s, r, 0.4) for s, r in ((0, 0.50), (1, 0.54))]
    cross = [_run("a", "b", "mutual", s, r, 0.1) for s, r in ((0, 0.20), (1, 0.30))]
    doc = cross_domain_table(in_domain, cross, [("a", "b")], _infos("a", "b"), "resnet18")
    row = doc.table.iloc[0]
    assert row["a: Rank-1 (%)"] == "52.00 ± 2.83" and row["b: Rank-1 (%)"] == "25.00 ± 7.07"
    assert any("mean ± sample standard deviation over 2 seeds" in n for n in doc.notes)


@pytest.mark.parametrize("in_domain, cross, message", [
    ([], [_run("a", "b", "baseline", 0, 0.2, 0.1)], "no metrics.json of baseline in-domain on 'a'"),
    ([_run("a", "a", "baseline", 0, 0.5, 0.4)], [_run("c", "b", "baseline", 0, 0.2, 0.1)],
     r"trained on 'c', tested on 'b'\) is not one of the configured pairs a -> b"),
    ([_run("a", "a", "baseline", 0, 0.5, 0.4), _run("b", "b", "baseline", 0, 0.5, 0.4)],
     [_run("a", "b", "baseline", 0, 0.2, 0.1)], "is not an in-domain run of a training set"),
])
def test_the_table_refuses_inputs_that_do_not_match_the_pairs(in_domain, cross, message):
    from reid.report.runs import ReportInputError
    from reid.report.tables import cross_domain_table

    with pytest.raises(ReportInputError, match=message):
        cross_domain_table(in_domain, cross, [("a", "b")], _infos("a", "b"), "resnet18")


def test_in_domain_tables_refuse_a_cross_domain_file():
    from reid.report.runs import ReportInputError
    from reid.report.tables import table2

    with pytest.raises(ReportInputError, match="is a cross-domain evaluation"):
        table2([_run("a", "b", "baseline", 0, 0.2, 0.1)], _infos("b")["b"], "resnet18")


def test_a_synthetic_dataset_with_its_own_keys_says_so_in_the_tables():
    from reid.report.paper import describe_dataset

    plain = describe_dataset("synthetic", {"source": "synthetic"})
    own = describe_dataset("synthetic_b", {"source": "synthetic",
                                           "synthetic": {"seed": 2, "difficulty": {"camera_cast": 0.9}}})
    assert plain.label == "synthetic data ('synthetic': procedurally generated images in Market-1501 layout)"
    assert own.label.endswith("layout; its own settings over the `synthetic:` section: seed 2, "
                              "difficulty.camera_cast 0.9)")
