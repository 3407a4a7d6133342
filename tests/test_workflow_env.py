"""Every configured value reaches every job, under the interpreter of the Snakemake that launched it
(issue 11, kind 6), through `snakemake` as a user runs it."""

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
    "models": ["baseline"],
    "synthetic": {"train_ids": 6, "test_ids": 6, "cameras": 3, "cameras_per_id": [2, 3],
                  "images_per_camera": [2, 2], "distractors": 4, "junk": 2, "multi_query_images": [2, 2],
                  "height": 32, "width": 16},
    "model": {"embedding_dim": 16},
    "train": {"height": 32, "width": 16, "epochs": 1, "batch_pairs": 8, "lr_step": 1},
    "evaluate": {"batch_size": 64, "max_rank": 5, "rerank": {"k1": 4, "k2": 2}},
}


def snakemake(workdir: Path, *args: str, env: dict):
    return subprocess.run([str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
                           "--cores", "2", *args], capture_output=True, text=True, env=env, cwd=workdir)


@pytest.mark.parametrize("given, expected", [
    ({"seeds": ["0", "1", "2"]}, {"seeds": [0, 1, 2]}),
    ({"train": {"lr": "0.5", "device": "cpu"}, "mlflow": {"tracking_uri": "null"}},
     {"train": {"lr": 0.5, "device": "cpu"}, "mlflow": {"tracking_uri": None}}),
    ({"models": ["baseline", "mutual"], "evaluate": {"flip": "true"}, "epochs": 3},
     {"models": ["baseline", "mutual"], "evaluate": {"flip": True}, "epochs": 3}),
    ({"mlflow": {"tracking_uri": "http://host:5000"}}, {"mlflow": {"tracking_uri": "http://host:5000"}}),
])
def test_command_line_values_are_read_as_yaml(given, expected):
    from reid.config import typed_overrides

    assert typed_overrides(given) == expected


def test_a_list_given_with_config_reaches_the_jobs(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = snakemake(tmp_path, "-n", "results/tables/table2.md", "--configfile", str(tmp_path / "tiny.yaml"),
                     "--config", "seeds=[0,1,2]", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seeds = set(re.findall(r"--seed (\d+)", proc.stdout))
    assert seeds == {"0", "1", "2"}


def test_jobs_run_under_snakemakes_interpreter_and_log_to_the_configured_store(tmp_path):
    """`.venv/bin/snakemake` with the venv not on PATH (no ./venv-run), `mlflow.tracking_uri` set in
    a config file and no MLFLOW_TRACKING_URI: every job runs, and its run is in the configured store."""
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'configured.db'}"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "seeds": [1], "mlflow": {"tracking_uri": store}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV"))}
    env.update(PATH="/usr/bin:/bin", PYTHONPATH=str(ROOT))  # no `python` with the project's packages on PATH
    target = "results/synthetic/baseline/seed1/metrics.json"
    proc = snakemake(tmp_path, target, "--configfile", str(tmp_path / "tiny.yaml"), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / target).exists()
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("reid-synthetic")
    runs = client.search_runs([exp.experiment_id])
    assert runs and all(r.info.status == "FINISHED" and r.data.tags["seed"] == "1" for r in runs)
    metrics = set().union(*(r.data.metrics for r in runs))
    assert {"train/loss_total", "rank1", "mAP"} <= metrics  # the training run and the evaluation's
