"""The MLflow UI, served from a store shaped like the pipeline's, shows the runs and models in a real browser.

A temporary SQLite store gets, through reid.tracking as the pipeline writes them, a training run
(``baseline-seed0-train-try1``, ``mutual-seed0-...``) with its LoggedModel and an evaluation run
whose Rank-1 and mAP are linked to the model and the test set, plus a report artifact logged
through reid.report.publish; then ``mlflow server`` serves it on 127.0.0.1 and headless Chromium
renders the experiment's runs page (chart view), the compare view of the two evaluation runs and
the experiment's Models page. The DOM must name both runs, both models and their Rank-1; the
screenshots are kept under results/test-artifacts/ (or $REID_TEST_ARTIFACTS). Skips, saying why,
where Chromium is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
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


R1 = {"baseline": 0.4123, "mutual": 0.5711}
MAP = {"baseline": 0.3012, "mutual": 0.4807}
EVAL_SETTINGS = {"flip": True, "max_rank": 50, "test_embedding": "single", "rerank": {"k1": 20, "k2": 6, "lambda": 0.3}}


def populate(store: Path, report_file: Path, monkeypatch) -> tuple[str, dict[str, str], dict[str, str]]:
    """(experiment id, {model: training run id}, {model: evaluation run id}) of a pipeline-shaped store."""
    import torch
    from mlflow.tracking import MlflowClient

    from reid import tracking

    uri = f"sqlite:///{store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # reid.tracking honours it
    tracking.init_store(uri, ["reid-synthetic"])  # a model-training experiment, artifacts beside the store
    client = MlflowClient(tracking_uri=uri)
    backend = tracking.MlflowStore(uri)
    exp_id = client.get_experiment_by_name("reid-synthetic").experiment_id
    runs, evals = {}, {}
    for model, r1 in R1.items():
        tags = {"dataset": "synthetic", "model": model, "seed": 0, "rule": "train"}
        run_id = backend.start_run("reid-synthetic", f"{model}-seed0-train", {"variant": model}, tags)
        for step, loss in enumerate((2.0, 1.2, 0.9), start=1):
            backend.log_metrics(run_id, {"train/loss_id": loss}, step=step)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 4, 4))
        backend.log_trained_model(run_id, net, torch.randn(2, 3, 8, 4), name=f"{model}-seed0",
                                   params={"variant": model}, tags={"model": model})
        backend.finish_run(run_id)
        runs[model] = run_id
        evals[model] = backend.log_evaluation(
            run_id, {"rank1": r1, "mAP": MAP[model], "rerank/rank1": r1 + 0.05}, EVAL_SETTINGS,
            test_data={"name": "synthetic/test", "digest": "feedc0de1234", "source": str(store.parent / "data")})

    from reid.report.publish import log_report_artifacts

    info_files = []
    for model, rid in runs.items():
        f = store.parent / f"{model}_run.json"  # what reid train writes beside model.pt
        f.write_text(json.dumps({"dataset": "synthetic", "model": model, "seed": 0, "config_hash": "c0ffee",
                                 "tracking": "mlflow", "mlflow_run_id": rid}))
        info_files.append(f)
    log_report_artifacts(info_files, [report_file], store.parent / "done.json")
    for rid in runs.values():
        assert [a.path for a in client.list_artifacts(rid, "report")] == [f"report/{report_file.name}"]
    return exp_id, runs, evals


def chromium(*args: str, profile: Path, budget_ms: int = 30000, timeout: float = 180,
             size: str = "1600,1000") -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", f"--window-size={size}"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=timeout)


def render(url: str, shot: Path, wanted: list[str], tmp_path: Path, size: tuple[int, int] = (1600, 1000)) -> str:
    """Dump the DOM of ``url`` and screenshot it until every ``wanted`` string is in the DOM."""
    # Charts and tables load lazily, and on a busy machine the page may need more than one budget
    for attempt, budget in enumerate((30000, 60000, 120000)):
        res = chromium("--dump-dom", f"--screenshot={shot}", url, profile=tmp_path / f"profile-{shot.stem}{attempt}",
                       budget_ms=budget, size=f"{size[0]},{size[1]}")
        assert res.returncode == 0, res.stderr[-2000:]
        missing = [w for w in wanted if w not in res.stdout]
        if not missing:
            break
    assert not missing, f"not on the page {url} after {budget} ms: {missing}"
    assert shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == size
        # a rendered page, not a blank one: more than a handful of distinct colours
        assert len(im.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 50
    keep = Path(os.environ.get("REID_TEST_ARTIFACTS", REPO / "results" / "test-artifacts"))
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / shot.name)
    print(f"screenshot of {url}: {keep / shot.name}")
    return res.stdout


def grid_rows(dom: str) -> dict[str, list[str]]:
    """The text cells of each row of an ag-grid table, by row id (pinned and scrolling parts joined)."""
    rows: dict[str, list[str]] = {}
    for part in re.split(r'(?=<div[^>]*role="row")', dom):
        m = re.match(r'<div[^>]*row-id="([^"]+)"', part)
        if m:
            rows.setdefault(m.group(1), []).extend(c.strip() for c in re.sub(r"<[^>]+>", "|", part).split("|")
                                                   if c.strip())
    return rows


def test_mlflow_ui_lists_runs_compares_them_and_lists_the_models(tmp_path, monkeypatch):
    report_file = tmp_path / "table2.md"
    report_file.write_text("# Table 2\n")
    exp_id, runs, evals = populate(tmp_path / "mlflow.db", report_file, monkeypatch)
    assert not (tmp_path / "artifacts").exists()  # everything went beside the store, under mlruns/
    assert list((tmp_path / "mlruns").rglob("MLmodel"))

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
        # per metric, in sections by prefix, unprefixed ones ("Model metrics") last: a tall window
        # renders them all. (The table view renders metric columns only once chosen under "Columns".)
        render(f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning&compareRunsMode=CHART",
               tmp_path / "mlflow_runs.png",
               ["baseline-seed0-train-try1", "mutual-seed0-eval-", ">rank1<", ">mAP<", ">0.41<", ">0.57<"], tmp_path,
               size=(1600, 2400))

        # The compare view of the two evaluation runs: their parameters and metrics side by side
        ids = [evals["baseline"], evals["mutual"]]
        query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp_id])})
        dom = render(f"{base}/#/compare-runs?{query}", tmp_path / "mlflow_compare.png",
                     ["baseline-seed0-eval-", "mutual-seed0-eval-", ">eval.rerank.k1<", ">rerank/rank1<"], tmp_path,
                     size=(1600, 1800))
        # the metrics table lists mAP and rank1 first, each run's value beside them
        metrics = re.sub(r"<[^>]+>", "|", dom[dom.index(">Metrics<"):])
        cells = [c.strip() for c in metrics.split("|") if c.strip()]
        assert cells[cells.index("mAP"):cells.index("mAP") + 3] == ["mAP", "rank1", "rerank/rank1"], cells[:20]
        assert {"0.412", "0.571", "0.301", "0.481"} <= set(cells), cells[:20]  # 3 digits in the compare view

        # The Models page, in the model-training view: each LoggedModel with the Rank-1 linked to it, per dataset.
        # Wide: the metric columns come after the model's attributes (and the assistant panel takes 600 px).
        dom = render(f"{base}/#/experiments/{exp_id}/models?workflowType=machine_learning",
                     tmp_path / "mlflow_models.png", ["baseline-seed0", "mutual-seed0", ">rank1<", "synthetic/test"],
                     tmp_path, size=(3000, 1000))
        rows = grid_rows(dom)
        for model, r1 in R1.items():
            row = next((cells for cells in rows.values() if f"{model}-seed0" in cells), None)
            assert row is not None, f"no row for {model}-seed0 on the Models page: {list(rows.values())}"
            assert str(r1) in row and str(MAP[model]) in row, f"{model}'s Rank-1 and mAP not in its row: {row}"
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
