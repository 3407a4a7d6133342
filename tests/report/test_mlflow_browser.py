"""The MLflow UI, served from a store shaped like the pipeline's, shows the runs in a real browser.

A temporary SQLite store gets two flat runs named like the pipeline's (``baseline-seed0``,
``mutual-seed0``) with metrics, and a report artifact logged through reid.report.publish; then
``mlflow server`` serves it on 127.0.0.1 and headless Chromium renders the experiment's runs page.
The DOM must name both runs and a metric; the screenshot is kept under results/test-artifacts/
(or $REID_TEST_ARTIFACTS). Skips, saying why, where Chromium is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install Debian's chromium "
                       f"(apt-get install -y chromium) to run the MLflow UI browser test"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def populate(store: Path, artifacts: Path, report_file: Path, monkeypatch) -> tuple[str, dict[str, str]]:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # reid.tracking honours it
    client = MlflowClient(tracking_uri=uri)
    # the experiment kind tag makes the UI treat it as model training (not GenAI), as the pipeline should
    exp_id = client.create_experiment("reid-synthetic", artifact_location=artifacts.as_uri(),
                                      tags={"mlflow.experimentKind": "custom_model_development"})
    runs = {}
    for model, r1 in (("baseline", 0.4123), ("mutual", 0.5711)):
        run = client.create_run(exp_id, run_name=f"{model}-seed0", tags={"model": model, "dataset": "synthetic"})
        for step, loss in enumerate((2.0, 1.2, 0.9), start=1):
            client.log_metric(run.info.run_id, "loss_id", loss, step=step)
        for key, value in (("rank1", r1), ("mAP", r1 - 0.1)):
            client.log_metric(run.info.run_id, key, value)
        client.log_param(run.info.run_id, "variant", model)
        client.set_terminated(run.info.run_id)
        runs[model] = run.info.run_id
    mlflow.set_tracking_uri(uri)

    from reid.report.publish import log_report_artifacts

    id_files = []
    for model, rid in runs.items():
        f = store.parent / f"{model}_run_id"
        f.write_text(rid + "\n")
        id_files.append(f)
    log_report_artifacts(id_files, [report_file], store.parent / "done.json")
    for rid in runs.values():
        assert [a.path for a in client.list_artifacts(rid, "report")] == [f"report/{report_file.name}"]
    return exp_id, runs


def chromium(*args: str, profile: Path, budget_ms: int = 30000, timeout: float = 180) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--window-size=1600,1000"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=timeout)


def test_mlflow_ui_lists_baseline_and_mutual_runs(tmp_path, monkeypatch):
    report_file = tmp_path / "table2.md"
    report_file.write_text("# Table 2\n")
    exp_id, runs = populate(tmp_path / "mlflow.db", tmp_path / "artifacts", report_file, monkeypatch)

    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--default-artifact-root", (tmp_path / "artifacts").as_uri(), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)

        # The runs page of a model-training experiment, in its chart view: the run list beside one chart
        # per metric. (The table view renders metric columns only once chosen under "Columns".)
        url = f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning&compareRunsMode=CHART"
        wanted = ["baseline-seed0", "mutual-seed0", ">rank1<", ">mAP<", ">0.41<", ">0.57<"]
        shot = tmp_path / "mlflow_runs.png"
        # One Chromium run dumps the DOM and takes the screenshot. Charts load lazily, and on a busy
        # machine the page may need more than one budget: retry with longer ones.
        for attempt, budget in enumerate((30000, 60000, 120000)):
            res = chromium("--dump-dom", f"--screenshot={shot}", url, profile=tmp_path / f"profile{attempt}",
                           budget_ms=budget)
            assert res.returncode == 0, res.stderr[-2000:]
            missing = [w for w in wanted if w not in res.stdout]
            if not missing:
                break
        # run names, a chart per metric, and the bar labels with both runs' values
        assert not missing, f"not on the runs page {url} after {budget} ms: {missing}"
        assert shot.is_file(), res.stderr[-2000:]
        keep = Path(os.environ.get("REID_TEST_ARTIFACTS", REPO / "results" / "test-artifacts"))
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / "mlflow_runs.png")
        print(f"screenshot of the MLflow runs page: {keep / 'mlflow_runs.png'}")
        from PIL import Image

        with Image.open(shot) as im:
            assert im.size == (1600, 1000)
            # a rendered page, not a blank one: more than a handful of distinct colours
            assert len(im.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 50
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
