"""The whole workflow on a tiny synthetic config, through Snakemake, in a scratch working directory."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_config import TINY_PIPELINE  # tests/ is on sys.path (conftest.py)

pytestmark = pytest.mark.slow  # tiny pipelines through Snakemake, built once per module
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

TINY = TINY_PIPELINE


def snakemake(workdir, *args, env=None):
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args, "--configfile", str(workdir / "tiny.yaml")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'results' / 'mlflow.db'}",  # where the default store is
           "PYTHONPATH": str(ROOT)}
    proc = snakemake(workdir, "results/tables/table2.md", env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return workdir, env


def test_table2_names_the_synthetic_dataset_and_both_models(pipeline):
    workdir, _ = pipeline
    text = (workdir / "results/tables/table2.md").read_text()
    assert "synthetic" in text.lower()
    assert "mutual" in text.lower() and "baseline" in text.lower()
    assert "flip test" in text


def test_metrics_json_has_every_protocol_as_fractions(pipeline):
    workdir, _ = pipeline
    for model in ("baseline", "mutual"):
        m = json.loads((workdir / f"results/synthetic/{model}/seed0/metrics.json").read_text())
        for prefix in ("", "rerank/", "multi_query_mean/", "multi_query_max/", "multi_query_mean/rerank/"):
            for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mAP_trapezoid"):
                assert 0.0 <= m[prefix + key] <= 1.0, prefix + key
        assert m["rank1"] <= m["rank5"] <= m["rank10"] <= m["rank20"]
        assert m["model"] == model and m["dataset"] == "synthetic" and m["mlflow_run_id"]
        info = json.loads((workdir / f"results/synthetic/{model}/seed0/run.json").read_text())
        assert info["mlflow_run_id"] == m["mlflow_run_id"] and info["tracking"] == "mlflow"
        assert info["logged_model_id"] == m["logged_model_id"] and info["git_commit"] == m["git_commit"]
        assert m["flip_test"] is True  # config.yaml's evaluate.flip, recorded with the numbers
    report = json.loads((workdir / "results/synthetic/dataset.json").read_text())
    assert report["ok"]


def test_per_query_rows_give_metrics_json_exactly_and_tables_show_intervals(pipeline):
    import csv

    import numpy as np

    workdir, _ = pipeline
    for model in ("baseline", "mutual"):
        run = workdir / f"results/synthetic/{model}/seed0"
        m = json.loads((run / "metrics.json").read_text())
        with open(run / "per_query.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        protocols = list(dict.fromkeys(r["protocol"] for r in rows))
        assert len(protocols) == 6
        for protocol in protocols:
            valid = [r for r in rows if r["protocol"] == protocol and r["first_match_rank"]]
            prefix = "" if protocol == "single" else protocol + "/"
            ranks = np.array([int(r["first_match_rank"]) for r in valid])
            assert m[prefix + "rank1"] == np.mean(ranks <= 1) and m[prefix + "rank20"] == np.mean(ranks <= 20)
            assert m[prefix + "mAP"] == np.mean([float(r["ap"]) for r in valid])
            assert m[prefix + "mINP"] == np.mean([float(r["inp"]) for r in valid])
            low, high = m["ci95"][prefix + "mAP"]
            assert low <= m[prefix + "mAP"] <= high
    comparisons = json.loads((workdir / "results/synthetic/comparisons.json").read_text())
    assert [(p["a"], p["b"]) for p in comparisons["pairs"]] == [("baseline", "mutual")]
    text = (workdir / "results/tables/table2.md").read_text()
    assert "Paired comparisons" in text and "query identities" in text
    assert re.search(r"\| \d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\] \|", text)


def test_mlflow_holds_a_training_run_a_logged_model_and_an_evaluation_per_model(pipeline):
    workdir, env = pipeline
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("reid-synthetic")
    train = client.search_runs([exp.experiment_id], "tags.rule = 'train'")
    evals = client.search_runs([exp.experiment_id], "tags.rule = 'evaluate'")
    assert sorted(r.info.run_name for r in train) == ["baseline-seed0-train-try1", "mutual-seed0-train-try1"]
    assert sorted(r.data.tags["model"] for r in evals) == ["baseline", "mutual"]
    for r in train:
        assert r.info.status == "FINISHED"
        assert {"train/loss_id", "train/loss_verif"} <= set(r.data.metrics)
        assert len(client.get_metric_history(r.info.run_id, "train/loss_total")) == 2  # per epoch
        assert not any(k.startswith(("rank", "mAP", "cmc")) for k in r.data.metrics)
        assert r.data.tags["config_hash"] and r.data.tags["mlflow.source.git.commit"]
    for r in evals:
        assert r.info.status == "FINISHED"
        assert {"rank1", "mAP", "rerank/rank1", "single_query/mINP", "single_query/rank1_ci95_low",
                "single_query/rank1_ci95_high", "rerank/mAP_ci95_low"} <= set(r.data.metrics)
        assert sorted(r.data.metrics, key=str.lower)[:2] == ["mAP", "rank1"]  # what the compare view lists first
        assert r.data.params["eval.bootstrap.resamples"]
        assert "cmc" not in r.data.metrics and r.data.params["eval.flip"] == "True"
        m = json.loads((workdir / f"results/synthetic/{r.data.tags['model']}/seed0/metrics.json").read_text())
        assert r.data.metrics["rank1"] == m["rank1"] and r.data.tags["training_run_id"] == m["mlflow_run_id"]
    # one LoggedModel per trained model and seed, with its Rank-1 and mAP linked to it
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert sorted(m.name for m in models) == ["baseline-seed0", "mutual-seed0"]
    for m in models:
        assert {"rank1", "mAP"} <= {x.key for x in m.metrics}
        assert {x.dataset_name for x in m.metrics} == {"synthetic/test"}
        assert m.artifact_location.startswith((workdir / "results" / "mlruns").as_uri())
    # every artifact under results/, nothing in the working directory's mlruns/
    assert not (workdir / "mlruns").exists() and not (workdir / "mlflow.db").exists()
    assert list((workdir / "results" / "mlruns").rglob("model.pth"))


def test_the_null_tracker_runs_the_pipeline_without_mlflow_and_changes_no_number(pipeline, tmp_path):
    """mlflow.enabled: false: the baseline model's chain with no store written and mlflow never imported
    (a stand-in `mlflow` package that refuses to import comes first on every job's PYTHONPATH), and the
    same numbers as the tracked run of the same config."""
    tracked, _ = pipeline
    workdir = tmp_path / "untracked"
    workdir.mkdir()
    (workdir / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "models": ["baseline"], "mlflow": {"enabled": False}}))
    blocker = tmp_path / "no-mlflow" / "mlflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("mlflow imported although mlflow.enabled is false")\n')
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": f"{blocker.parent}{os.pathsep}{ROOT}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'results' / 'mlflow.db'}"}
    # the tracked run trained two models at once: the same threads per job here (torch's sums depend on them)
    threads = max(1, min(8, (os.cpu_count() or 1) // 2))
    run_dir = "results/synthetic/baseline/seed0"
    proc = snakemake(workdir, f"{run_dir}/metrics.json", "results/synthetic/comparisons.json", "--set-threads",
                     *(f"{rule}={threads}" for rule in ("train", "extract", "evaluate")), env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # no store anywhere, and the default target does not ask for the MLflow upload
    assert not [p for p in workdir.rglob("*") if p.name in ("mlflow.db", "mlruns")]
    dry = snakemake(workdir, "-n", env=env)
    assert dry.returncode == 0 and "report_mlflow" not in dry.stdout + dry.stderr
    info = json.loads((workdir / run_dir / "run.json").read_text())
    assert info["tracking"] == "none" and "mlflow_run_id" not in info and info["model"] == "baseline"
    mine = json.loads((workdir / run_dir / "metrics.json").read_text())
    theirs = json.loads((tracked / run_dir / "metrics.json").read_text())
    assert "mlflow_run_id" not in mine and mine["config_hash"] == theirs["config_hash"] == info["config_hash"]
    numbers = {k for k, v in theirs.items() if isinstance(v, float) or k.endswith("cmc") or k in ("ci95", "counts")}
    assert len(numbers) > 30 and {k: mine[k] for k in numbers} == {k: theirs[k] for k in numbers}
    # the report reads an untracked metrics.json (no run id) as any other
    comparisons = json.loads((workdir / "results/synthetic/comparisons.json").read_text())
    assert list(comparisons["models"]) == ["baseline"] and comparisons["pairs"] == []


def test_every_train_extract_and_evaluate_job_records_its_cost_and_the_report_shows_it(pipeline):
    """Each job's benchmark file (wall time, peak memory), their table, and that table in `snakemake --report`."""
    workdir, env = pipeline
    for stage in ("train", "extract", "evaluate"):
        for model in ("baseline", "mutual"):
            bench = workdir / f"results/benchmarks/{stage}/synthetic/{model}-seed0.tsv"
            header, values = (line.split("\t") for line in bench.read_text().splitlines()[:2])
            assert float(values[header.index("s")]) > 0, bench
    proc = snakemake(workdir, "results/tables/benchmarks.md", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in (workdir / "results/tables/benchmarks.md").read_text().splitlines()
            if re.match(r"\| (train|extract|evaluate) \| synthetic/(baseline|mutual)-seed0 \| [\d,.]+ \| ([\d,]+|–) \|",
                        line)]
    assert len(rows) == 6, rows
    proc = snakemake(workdir, "--report", str(workdir / "report.html"), "results/tables/benchmarks.md", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "benchmarks.html" in (workdir / "report.html").read_text()
    # runs made before benchmarks were recorded: the table is rebuilt, nothing is trained again
    (workdir / "results/benchmarks/train/synthetic/mutual-seed0.tsv").unlink()
    (workdir / "results/tables/benchmarks.md").unlink()
    dry = snakemake(workdir, "-n", "results/tables/benchmarks.md", env=env)
    planned = re.findall(r"^(?:local)?rule (\w+):", dry.stdout, re.M)
    assert dry.returncode == 0 and planned == ["table_benchmarks"], dry.stdout[-3000:]


def test_rerun_with_nothing_changed_does_nothing(pipeline):
    workdir, env = pipeline
    proc = snakemake(workdir, "-n", "results/tables/table2.md", env=env)
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_lint_is_clean(tmp_path):
    proc = subprocess.run([str(BIN / "snakemake"), "--lint", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


# ------------------------------------------------- what reruns (docs/reruns.md, reid.config.RUNTIME_KEYS)


def _merged(base: dict, change: dict) -> dict:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def scheduled_after(pipeline, change: dict, target: str = "results/tables/table2.md") -> tuple[set[str], str]:
    """The rules `snakemake -n` would run after the finished pipeline, with ``change`` merged into its config."""
    workdir, env = pipeline
    name = f"changed-{abs(hash(json.dumps(change, sort_keys=True)))}.yaml"
    (workdir / name).write_text(yaml.safe_dump(_merged(TINY, change)))
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "-n", target, "--configfile", str(workdir / name)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    return set(re.findall(r"^(?:local)?rule (\w+):", text, re.M)), text


def test_runtime_keys_rerun_nothing(pipeline):
    rules, text = scheduled_after(pipeline, {
        "train": {"workers": 1, "device": "cpu"}, "evaluate": {"batch_size": 7},
        "mlflow": {"experiment_prefix": "elsewhere", "tracking_uri": "sqlite:///elsewhere.db"}})
    assert rules == set() and "Nothing to be done" in text, text[-3000:]


@pytest.mark.parametrize("change, reruns, keeps", [
    ({"train": {"lr": 0.02}}, {"train", "extract", "evaluate", "table2"}, {"synthesize", "verify_dataset"}),
    ({"train": {"epochs": 3}}, {"train", "extract", "evaluate", "table2"}, {"synthesize", "verify_dataset"}),
    ({"evaluate": {"rerank": {"k1": 5}}}, {"evaluate", "table2"}, {"train", "extract"}),
    ({"evaluate": {"flip": False}}, {"extract", "evaluate", "table2"}, {"train"}),
    ({"synthetic": {"junk": 5}}, {"synthesize", "verify_dataset", "train", "evaluate"}, set()),
])
def test_a_result_key_reruns_what_it_changes(pipeline, change, reruns, keeps):
    rules, text = scheduled_after(pipeline, change)
    assert reruns <= rules and not keeps & rules, (rules, text[-3000:])
    assert "Params have changed" in text or "params" in text.lower()


# ------------------------------------------------- cross-domain (config.yaml's synthetic -> synthetic_b pair)
# The tiny workflow above, continued as a user would: `snakemake results/tables/cross_domain.md` adds
# config.yaml's second synthetic dataset (its `synthetic:` keys merged over TINY's) and evaluates the
# two models trained on `synthetic` on it; nothing of Table 2 is redone.

PAIR = "results/cross_domain/synthetic_to_synthetic_b/baseline/seed0"


@pytest.fixture(scope="module")
def cross_domain(pipeline):
    workdir, env = pipeline
    proc = snakemake(workdir, "results/tables/cross_domain.md", env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = proc.stdout + proc.stderr
    ran = set(re.findall(r"^(?:local)?rule (\w+):", text, re.M))
    assert ran == {"synthesize", "verify_dataset", "extract_cross_domain", "evaluate_cross_domain",
                   "table_cross_domain"}, ran
    assert re.findall(r"rule synthesize:\n\s+output: (\S+)", text) == ["data/synthetic_b.manifest.json"]
    return workdir, env


def test_cross_domain_metrics_have_the_in_domain_keys_and_name_both_datasets(cross_domain):
    workdir, _ = cross_domain
    in_domain = json.loads((workdir / "results/synthetic/baseline/seed0/metrics.json").read_text())
    cross = json.loads((workdir / PAIR / "metrics.json").read_text())
    assert set(cross) == set(in_domain) | {"train_dataset"} and "train_dataset" not in in_domain
    assert set(cross["ci95"]) == set(in_domain["ci95"]) and "multi_query_mean/rerank/mAP" in cross["ci95"]
    assert (cross["dataset"], cross["train_dataset"]) == ("synthetic_b", "synthetic")
    assert cross["mlflow_run_id"] == in_domain["mlflow_run_id"]  # the model trained on synthetic
    report = json.loads((workdir / "results/synthetic_b/dataset.json").read_text())
    assert cross["counts"]["query"] == report["splits"]["query"]["images"]
    # the per-query file as in-domain: one row per protocol and query of the test set
    with open(workdir / PAIR / "per_query.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    valid = [int(r["first_match_rank"]) for r in rows if r["protocol"] == "single" and r["first_match_rank"]]
    assert cross["rank1"] == np.mean(np.array(valid) <= 1)
    assert len({r["protocol"] for r in rows}) == 6


def test_cross_domain_features_are_the_training_sets_model_and_mean_image_on_the_test_images(cross_domain, tmp_path):
    import torch

    workdir, _ = cross_domain
    rule = torch.load(workdir / PAIR / "features.pt", weights_only=True)
    assert all(Path(p).parts[:2] == ("data", "synthetic_b") for p in rule["query_paths"] + rule["gallery_paths"])
    assert len(rule["mq_feats"]) > 0  # synthetic_b has gt_bbox images: multi-query too
    # the same extraction by hand, with synthetic's model and synthetic's mean image, gives the same bits
    from reid.cli import main

    by_hand = tmp_path / "features.pt"
    assert main(["extract", "--model-file", str(workdir / "results/synthetic/baseline/seed0/model.pt"),
                 "--data", str(workdir / "data/synthetic_b"), "--mean-image",
                 str(workdir / "results/synthetic/mean_image.pt"), "--flip", "--out", str(by_hand)]) == 0
    hand = torch.load(by_hand, weights_only=True)
    for key in ("query_feats", "gallery_feats", "mq_feats"):
        assert torch.equal(hand[key], rule[key]), key


def test_cross_domain_metrics_equal_evaluate_features_on_the_same_features(cross_domain, tmp_path):
    import torch

    workdir, _ = cross_domain
    feats = torch.load(workdir / PAIR / "features.pt", weights_only=True)
    npz = tmp_path / "features.npz"  # the features as another tool hands them over (reid/external.py's keys)
    np.savez(npz, **{f"{ours}_{what}": feats[f"{prefix}_{key}"].numpy()
                     for ours, prefix in (("query", "query"), ("gallery", "gallery"), ("multi_query", "mq"))
                     for what, key in (("features", "feats"), ("pids", "pids"), ("camids", "camids"))})
    from reid.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate-features", str(npz), "--out", str(out)]) == 0  # config.yaml's settings = the defaults
    ours = json.loads((workdir / PAIR / "metrics.json").read_text())
    theirs = json.loads((out / "metrics.json").read_text())
    scalars = [k for k, v in ours.items() if isinstance(v, float)]
    assert len(scalars) > 30
    assert {k: ours[k] for k in scalars} == {k: theirs[k] for k in scalars}
    assert ours["ci95"] == theirs["ci95"]
    curves = [k for k in ours if k.endswith("cmc")]
    assert len(curves) == 6 and {k: ours[k] for k in curves} == {k: theirs[k] for k in curves}


def test_cross_domain_table_has_the_in_domain_diagonal_and_the_test_set_column(cross_domain):
    workdir, _ = cross_domain
    text = (workdir / "results/tables/cross_domain.md").read_text()
    assert "Pairs: trained on synthetic, tested on synthetic_b." in text
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Method", "Trained on", "synthetic: Rank-1 (%)", "synthetic: mAP (%)",
        "synthetic_b: Rank-1 (%)", "synthetic_b: mAP (%)"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ResNet")]
    assert [(r[0].split()[1], r[1]) for r in rows] == [("baseline", "synthetic"), ("+", "synthetic")]

    def cell(path, key):
        m = json.loads((workdir / path).read_text())
        low, high = m["ci95"][key]
        return f"{100 * m[key]:.2f} [{100 * low:.2f}, {100 * high:.2f}]"

    for row, model in zip(rows, ("baseline", "mutual")):
        in_domain = f"results/synthetic/{model}/seed0/metrics.json"
        cross = f"results/cross_domain/synthetic_to_synthetic_b/{model}/seed0/metrics.json"
        assert row[2:] == [cell(in_domain, "rank1"), cell(in_domain, "mAP"), cell(cross, "rank1"), cell(cross, "mAP")]
    assert "synthetic → synthetic_b" in text and "synthetic (in-domain)" in text  # run ids, per cell


def test_mlflow_holds_a_cross_domain_evaluation_of_the_training_sets_model(cross_domain):
    workdir, env = cross_domain
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("reid-synthetic")
    runs = client.search_runs([exp.experiment_id], "tags.rule = 'evaluate_cross_domain' and tags.model = 'baseline'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["test_dataset"] == "synthetic_b"
    assert re.fullmatch(r"baseline-seed0-on-synthetic_b-eval-[0-9a-f]{8}-try1", run.info.run_name)
    metrics = json.loads((workdir / PAIR / "metrics.json").read_text())
    assert run.data.metrics["rank1"] == metrics["rank1"]
    assert run.data.tags["training_run_id"] == metrics["mlflow_run_id"]
    # linked to synthetic's LoggedModel, on the test set synthetic_b, beside its in-domain numbers
    model = client.get_logged_model(run.data.tags["logged_model_id"])
    assert model.name == "baseline-seed0"
    assert {m.dataset_name for m in model.metrics if m.key == "rank1"} == {"synthetic/test", "synthetic_b/test"}
    in_domain = client.search_runs([exp.experiment_id], "tags.rule = 'evaluate' and tags.model = 'baseline'")
    assert [r.info.run_name.startswith("baseline-seed0-eval-") for r in in_domain] == [True]


def test_a_datasets_synthetic_keys_rebuild_only_that_dataset(cross_domain):
    rules, text = scheduled_after(cross_domain, {"dataset": {"synthetic_b": {"synthetic": {"difficulty": {"blur_prob": 0.5}}}}},
                                  target="results/tables/cross_domain.md")
    assert rules == {"synthesize", "verify_dataset", "extract_cross_domain", "evaluate_cross_domain",
                     "table_cross_domain"}, text[-3000:]
    assert re.findall(r"rule synthesize:\n\s+output: (\S+)", text) == ["data/synthetic_b.manifest.json"]
    rules, text = scheduled_after(cross_domain, {"dataset": {"synthetic_b": {"synthetic": {"seed": 5}}}})
    assert rules == set() and "Nothing to be done" in text  # Table 2 (synthetic) is untouched


def test_without_pairs_the_cross_domain_table_is_refused_by_name(cross_domain):
    workdir, env = cross_domain
    (workdir / "none.yaml").write_text(yaml.safe_dump({**TINY, "cross_domain": []}))
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "-n",
           "results/tables/cross_domain.md", "--configfile", str(workdir / "none.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    assert proc.returncode != 0
    assert "cross_domain.md is not built: config `cross_domain` is empty" in proc.stdout + proc.stderr
