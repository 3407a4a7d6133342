import socket
import time

import pytest

from reid import tracking


def test_uri_precedence_and_absolute_sqlite(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tracking.DEFAULT_STORE}"
    assert tracking.tracking_uri("sqlite:///rel/x.db") == f"sqlite:///{tracking.REPO_ROOT / 'rel/x.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri("sqlite:///rel/x.db") == "http://127.0.0.1:1"


def test_run_holds_params_metrics_curves_and_status(mlflow_store, tmp_path):
    run_id = tracking.start_run("reid-test", "mutual-seed0", {"train": {"lr": 0.01}, "seed": 0},
                                {"dataset": "synthetic", "model": "mutual"})
    for epoch in (1, 2):
        tracking.log_metrics(run_id, {"loss_total": 1.0 / epoch}, step=epoch)
    tracking.finish_run(run_id)
    tracking.reopen_run(run_id)
    tracking.log_metrics(run_id, {"rank1": 0.5})
    tracking.log_metric_series(run_id, "cmc", [0.5, 0.7, 0.9])
    art = tmp_path / "a.txt"
    art.write_text("x")
    tracking.log_artifacts([run_id], [art], artifact_path="report")
    tracking.finish_run(run_id)
    run = tracking.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.01"
    assert run.data.tags["model"] == "mutual" and run.data.tags["git_commit"]
    assert run.data.metrics["rank1"] == 0.5
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    assert [m.value for m in client.get_metric_history(run_id, "loss_total")] == [1.0, 0.5]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "cmc")] == [(1, 0.5), (2, 0.7), (3, 0.9)]
    assert [f.path for f in client.list_artifacts(run_id, "report")] == ["report/a.txt"]


def test_unreachable_server_fails_fast_with_a_clear_message():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    with pytest.raises(tracking.TrackingError, match=f"127.0.0.1:{port}.*cannot be reached"):
        tracking.check_server(f"http://127.0.0.1:{port}", timeout=2)
    assert time.time() - t0 < 5
