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


def test_artifacts_live_beside_the_sqlite_store(mlflow_store, tmp_path):
    run_id = tracking.start_run("reid-tiny", "baseline-seed0-train", {}, {"model": "baseline", "seed": 0})
    art = tmp_path / "history.csv"
    art.write_text("epoch\n1\n")
    tracking.log_artifacts([run_id], [art], artifact_path="training")
    assert tracking.artifact_root(mlflow_store) == tmp_path / "mlruns"
    assert [p.name for p in (tmp_path / "mlruns").rglob("history.csv")] == ["history.csv"]
    assert tracking.artifact_root("http://host:5000") is None


def test_evaluations_are_runs_linked_to_the_logged_model_and_dataset(mlflow_store, tmp_path):
    """Two evaluation settings, one repeated: three runs, each metric once per run, all on the model."""
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    train_id = tracking.start_run("reid-tiny", "mutual-seed0-train", {"model": {"test_embedding": "single"}},
                                  {"dataset": "tiny", "model": "mutual", "seed": 0, "rule": "train"})
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 4, 6))
    model_id = tracking.log_trained_model(train_id, net, torch.randn(2, 3, 8, 4), name="mutual-seed0",
                                          params={"backbone": "tiny"}, tags={"model": "mutual"})
    tracking.finish_run(train_id)
    assert client.get_run(train_id).data.tags["logged_model_id"] == model_id

    test = {"name": "tiny/test", "digest": "0123abcd", "source": str(tmp_path / "data")}
    plain = {"flip": False, "max_rank": 50, "test_embedding": "single", "rerank": {"k1": 20, "k2": 6, "lambda": 0.3}}
    other = {**plain, "rerank": {"k1": 10, "k2": 3, "lambda": 0.5}}
    first = tracking.log_evaluation(train_id, {"rank1": 0.5, "mAP": 0.4}, plain, test_data=test,
                                    curves={"cmc": [0.5, 0.7]})
    second = tracking.log_evaluation(train_id, {"rank1": 0.5, "mAP": 0.4, "rerank/mAP": 0.45}, other, test_data=test)
    again = tracking.log_evaluation(train_id, {"rank1": 0.5, "mAP": 0.4}, plain, test_data=test)

    runs = {r: client.get_run(r) for r in (first, second, again)}
    names = [runs[r].info.run_name for r in (first, second, again)]
    h1, h2 = tracking.settings_hash(plain), tracking.settings_hash(other)
    assert h1 != h2
    assert names == [f"mutual-seed0-eval-{h1}-try1", f"mutual-seed0-eval-{h2}-try1", f"mutual-seed0-eval-{h1}-try2"]
    assert runs[again].data.tags["retry_of"] == first
    assert runs[second].data.params["eval.rerank.k1"] == "10" and runs[first].data.params["eval.rerank.k1"] == "20"
    assert runs[first].data.params["eval.flip"] == "False" and runs[first].data.params["training_run_id"] == train_id
    for r in runs.values():
        assert r.info.status == "FINISHED" and r.data.tags["rule"] == "evaluate"
        assert r.data.tags["mlflow.source.name"] == "python -m reid evaluate"
        for key in r.data.metrics:  # never two values of one metric at one step of one run
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert len(steps) == len(set(steps)) == 1, (key, steps)
        assert [i.dataset.name for i in r.inputs.dataset_inputs] == ["tiny/test"]
    assert "cmc" not in runs[first].data.metrics  # the curve is an artifact, not a score-like metric
    assert [a.path for a in client.list_artifacts(first, "evaluation")] == ["evaluation/cmc.json"]

    # the Models page's source: the model, its run, and every evaluation's metrics linked to it
    found = mlflow.search_logged_models(experiment_ids=[runs[first].info.experiment_id], output_format="list")
    assert [(m.model_id, m.name, m.source_run_id) for m in found] == [(model_id, "mutual-seed0", train_id)]
    linked = [(m.key, m.run_id, m.dataset_name, m.dataset_digest) for m in found[0].metrics]
    assert sorted(linked) == sorted(
        [(k, run, "tiny/test", "0123abcd") for run in (first, again) for k in ("rank1", "mAP")]
        + [(k, second, "tiny/test", "0123abcd") for k in ("rank1", "mAP", "rerank/mAP")])
    assert [m.model_id for m in tracking.logged_models(["reid-tiny"])] == [model_id]


def test_a_parameter_over_mlflows_limit_is_cut_visibly_and_kept_whole(mlflow_store, caplog):
    """MLflow keeps 6,000 characters of a parameter value: the cut is logged, marked in the value, and the
    full value is a run artifact (kind 8 of issue 11: nothing recorded is changed silently)."""
    import json

    from mlflow.tracking import MlflowClient

    long_value = "x" * 7000 + "END"
    with caplog.at_level("WARNING", logger="reid.tracking"):
        run_id = tracking.start_run("reid-test", "long", {"model": {"note": long_value, "lr": 0.1}}, {})
    run = tracking.get_run(run_id)
    shown = run.data.params["model.note"]
    assert len(shown) <= 6000 and "cut: 7003 characters" in shown and tracking.FULL_PARAMS_ARTIFACT in shown
    assert run.data.params["model.lr"] == "0.1"  # short values are untouched
    assert any("model.note" in r.getMessage() and "7003" in r.getMessage() for r in caplog.records)
    local = MlflowClient(mlflow_store).download_artifacts(run_id, tracking.FULL_PARAMS_ARTIFACT)
    assert json.loads(open(local).read()) == {"model.note": long_value}
