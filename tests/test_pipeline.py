"""The whole workflow on a tiny synthetic config, through Snakemake, in a scratch working directory."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

TINY = {
    "synthetic": {"train_ids": 8, "test_ids": 8, "cameras": 3, "cameras_per_id": [2, 3],
                  "images_per_camera": [2, 2], "distractors": 6, "junk": 4, "multi_query_images": [2, 2],
                  "height": 32, "width": 16},
    "model": {"embedding_dim": 32},
    "train": {"height": 32, "width": 16, "epochs": 2, "batch_pairs": 8, "lr_step": 1},
    "evaluate": {"batch_size": 64},
}


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


def test_rerun_with_nothing_changed_does_nothing(pipeline):
    workdir, env = pipeline
    proc = snakemake(workdir, "-n", "results/tables/table2.md", env=env)
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_lint_is_clean():
    proc = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


# ------------------------------------------------- what reruns (docs/reruns.md, reid.config.RUNTIME_KEYS)


def _merged(base: dict, change: dict) -> dict:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def scheduled_after(pipeline, change: dict) -> tuple[set[str], str]:
    """The rules `snakemake -n` would run after the finished pipeline, with ``change`` merged into its config."""
    workdir, env = pipeline
    name = f"changed-{abs(hash(json.dumps(change, sort_keys=True)))}.yaml"
    (workdir / name).write_text(yaml.safe_dump(_merged(TINY, change)))
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "-n", "results/tables/table2.md", "--configfile", str(workdir / name)]
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
