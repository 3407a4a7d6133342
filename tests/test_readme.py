"""The README's guide sections exist and their commands that need no GPU work as written."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def section(title: str) -> str:
    m = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert m, f"README has no section '{title}'"
    return m.group(1)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_quick_start_is_two_commands_and_the_guide_sections_exist():
    quick = blocks(section("Quick start"), "bash")[0]
    assert [line for line in quick.splitlines() if line.strip()] == [
        "./venv-run snakemake --cores 8 results/tables/table2.md", "./venv-run pytest"]
    for title in ("Quick start target versus default target", "Where training progress, logs and artifacts go",
                  "Which config keys restart training", "Comparing runs in the MLflow UI",
                  "Running on a workstation: GPUs and memory", "GPU hours and memory for the paper preset"):
        section(title)
    ui = section("Comparing runs in the MLflow UI")
    assert "tags.model = 'mutual'" in ui and "Compare" in ui and "Model training" in ui


def test_ci_runs_the_quick_start_as_written_then_the_cluster_test():
    """.ci/run proves what a newcomer does: the README's two commands, in order, in one checkout."""
    quick = [line for line in blocks(section("Quick start"), "bash")[0].splitlines() if line.strip()]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    commands = [line for line in ci if line.startswith("./venv-run") or line.startswith("bash tests/")]
    assert commands == [*quick, "bash tests/cluster/run.sh"], commands


def test_after_a_killed_run_says_unlock():
    text = section("After a killed run")
    assert "snakemake --unlock" in text and "Directory cannot be locked" in text and "set_terminated" in text
    assert "snakemake --unlock" in (ROOT / "docs" / "cluster.md").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def store_with_models(tmp_path, monkeypatch):
    """A pipeline-shaped store: a training run with its logged model and an evaluation, per model."""
    import torch

    from reid import tracking

    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.init_store(uri, ["reid-synthetic"])
    store = tracking.MlflowStore(uri)
    for model, r1 in (("baseline", 0.25), ("mutual", 0.5)):
        run = store.start_run("reid-synthetic", f"{model}-seed0-train", {},
                                 {"dataset": "synthetic", "model": model, "seed": 0, "rule": "train"})
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 2, 3))
        store.log_trained_model(run, net, torch.randn(2, 3, 4, 2), name=f"{model}-seed0", params={}, tags={})
        store.finish_run(run)
        store.log_evaluation(run, {"rank1": r1, "mAP": r1 / 2}, {"flip": True},
                                test_data={"name": "synthetic/test", "digest": "d1", "source": str(tmp_path)})
    return tmp_path


def test_search_logged_models_snippet_lists_each_model_with_rank1_and_map(store_with_models):
    code = blocks(section("Comparing runs in the MLflow UI"), "python")[0]
    assert 'mlflow.set_tracking_uri("sqlite:///results/mlflow.db")' in code  # relative: run from the repo root
    proc = subprocess.run([sys.executable, "-c", code], cwd=store_with_models, capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = sorted(proc.stdout.splitlines())
    assert len(lines) == 2, proc.stdout
    assert lines[0].startswith("baseline-seed0 m-") and "'rank1': 0.25" in lines[0] and "'mAP': 0.125" in lines[0]
    assert lines[1].startswith("mutual-seed0 m-") and "'rank1': 0.5" in lines[1]


def test_light_mlflow_server_command_serves_the_store(store_with_models):
    line = next(line for line in blocks(section("Comparing runs in the MLflow UI"), "bash")[0].splitlines()
                if "mlflow server" in line)
    port = _free_port()
    args = shlex.split(line.replace("$PWD", str(store_with_models)).replace("--port 5000", f"--port {port}"))
    env = dict(os.environ)
    while "=" in args[0]:  # leading VAR=value assignments
        k, v = args.pop(0).split("=", 1)
        env[k] = v
    assert args[:3] == ["./venv-run", "mlflow", "server"]
    server = subprocess.Popen([str(BIN / "mlflow"), *args[2:]], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=reid-synthetic"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    assert b"custom_model_development" in r.read()  # opens in the "Model training" view
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the README's mlflow server command did not serve the store")
                time.sleep(0.5)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_paper_cost_estimate_runs_on_a_small_preset(tmp_path):
    """The estimate script of the README's GPU-hours section, on a tiny ResNet-18 preset (seconds)."""
    preset = tmp_path / "small.yaml"
    preset.write_text(yaml.safe_dump({
        "datasets": ["market1501"], "models": ["baseline", "mutual"],
        "dataset": {"market1501": {"source": "archive", "kind": "market1501", "archive": "m.zip"}},
        "model": {"backbone": "resnet18", "embedding_dim": 32}, "train": {"height": 32, "width": 16, "epochs": 2,
                                                                         "batch_pairs": 4}}))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "estimate_paper_cost.py"), "--preset", str(preset),
                           "--measure-pairs", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("market1501")]
    assert [r[1] for r in rows] == ["baseline", "mutual"]
    # steps = epochs x (12,936 training images // 4 pairs); mutual costs more FLOPs per image than baseline
    assert int(rows[0][3]) == 2 * (12936 // 4) and float(rows[1][4]) > float(rows[0][4]) > 0
