import socket
import time

import pytest

from reid import tracking
from reid.config import REPO_ROOT


@pytest.fixture
def store(mlflow_store):
    return tracking.MlflowStore(mlflow_store)


def test_uri_precedence_and_absolute_sqlite(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{tracking.DEFAULT_STORE}"
    assert tracking.tracking_uri("sqlite:///rel/x.db") == f"sqlite:///{REPO_ROOT / 'rel/x.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri("sqlite:///rel/x.db") == "http://127.0.0.1:1"


def test_run_holds_params_metrics_artifacts_and_status(store, mlflow_store, tmp_path):
    run_id = store.start_run("reid-test", "mutual-seed0", {"train": {"lr": 0.01}, "seed": 0},
                             {"dataset": "synthetic", "model": "mutual"})
    for epoch in (1, 2):
        store.log_metrics(run_id, {"loss_total": 1.0 / epoch}, step=epoch)
    art = tmp_path / "a.txt"
    art.write_text("x")
    store.log_artifacts([run_id], [art], artifact_path="report")
    store.finish_run(run_id)
    run = store.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.01"
    assert run.data.tags["model"] == "mutual" and run.data.tags["git_commit"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    assert [m.value for m in client.get_metric_history(run_id, "loss_total")] == [1.0, 0.5]
    assert [f.path for f in client.list_artifacts(run_id, "report")] == ["report/a.txt"]


def test_the_mlflow_tracker_records_at_its_own_uri_whatever_the_environment_says(tmp_path, monkeypatch):
    """The tracker reads its URI once, when built: a later MLFLOW_TRACKING_URI changes nothing."""
    mine, other = tmp_path / "mine" / "mlflow.db", tmp_path / "other" / "mlflow.db"
    tracking.init_store(f"sqlite:///{mine}", ["p-tiny"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mine}")
    tracker = tracking.MlflowTracker("p")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    run = tracker.start_training(dataset="tiny", run_name="baseline-seed0-train", params={"seed": 0},
                                 tags={"dataset": "tiny", "model": "baseline", "seed": 0, "rule": "train"},
                                 key_tags=("dataset", "model", "seed", "rule"), entry_point="t", identity="i0")
    run.on_epoch_end({"epoch": 1, "loss_total": 2.0})
    run.finish("FINISHED")
    eval_id = tracker.log_evaluation(run.provenance(), {"rank1": 0.5}, {"flip": False},
                                     test_data={"name": "tiny/test", "digest": "d", "source": str(tmp_path)})
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{mine}")
    assert client.get_run(run.run_id).data.metrics == {"train/loss_total": 2.0}
    assert client.get_run(eval_id).data.metrics == {"rank1": 0.5}
    assert not other.parent.exists()


def test_a_tracker_that_leaves_out_a_method_cannot_be_built():
    class Forgetful(tracking.Tracker):
        kind = "forgetful"

        def start_training(self, **kw):
            return None

    with pytest.raises(TypeError, match="log_evaluation"):
        Forgetful()

    class HalfRun(tracking.TrainingRun):
        def on_epoch_end(self, row):
            pass

    with pytest.raises(TypeError, match="finish"):
        HalfRun()


def test_unreachable_server_fails_fast_with_a_clear_message():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    with pytest.raises(tracking.TrackingError, match=f"127.0.0.1:{port}.*cannot be reached"):
        tracking.check_server(f"http://127.0.0.1:{port}", timeout=2)
    assert time.time() - t0 < 5


def test_artifacts_live_beside_the_sqlite_store(store, mlflow_store, tmp_path):
    run_id = store.start_run("reid-tiny", "baseline-seed0-train", {}, {"model": "baseline", "seed": 0})
    art = tmp_path / "history.csv"
    art.write_text("epoch\n1\n")
    store.log_artifacts([run_id], [art], artifact_path="training")
    assert tracking.artifact_root(mlflow_store) == tmp_path / "mlruns"
    assert [p.name for p in (tmp_path / "mlruns").rglob("history.csv")] == ["history.csv"]
    assert tracking.artifact_root("http://host:5000") is None


def test_evaluations_are_runs_linked_to_the_logged_model_and_dataset(store, mlflow_store, tmp_path):
    """Two evaluation settings, one repeated with another result: three runs, each metric once per run, all on
    the model; the same evaluation with the same result recorded again is the run already there."""
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    train_id = store.start_run("reid-tiny", "mutual-seed0-train", {"model": {"test_embedding": "single"}},
                               {"dataset": "tiny", "model": "mutual", "seed": 0, "rule": "train"})
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 4, 6))
    model_id = store.log_trained_model(train_id, net, torch.randn(2, 3, 8, 4), name="mutual-seed0",
                                       params={"backbone": "tiny"}, tags={"model": "mutual"})
    store.finish_run(train_id)
    assert client.get_run(train_id).data.tags["logged_model_id"] == model_id

    test = {"name": "tiny/test", "digest": "0123abcd", "source": str(tmp_path / "data")}
    plain = {"flip": False, "max_rank": 50, "test_embedding": "single", "rerank": {"k1": 20, "k2": 6, "lambda": 0.3}}
    other = {**plain, "rerank": {"k1": 10, "k2": 3, "lambda": 0.5}}
    first = store.log_evaluation(train_id, {"rank1": 0.5, "mAP": 0.4}, plain, test_data=test, curves={"cmc": [0.5, 0.7]})
    second = store.log_evaluation(train_id, {"rank1": 0.5, "mAP": 0.4, "rerank/mAP": 0.45}, other, test_data=test)
    same = store.log_evaluation(train_id, {"rank1": 0.5, "mAP": 0.4}, plain, test_data=test)
    again = store.log_evaluation(train_id, {"rank1": 0.25, "mAP": 0.4}, plain, test_data=test)
    assert same == first  # nothing recorded twice

    runs = {r: client.get_run(r) for r in (first, second, again)}
    names = [runs[r].info.run_name for r in (first, second, again)]
    h1, h2 = tracking.mlflow_store.settings_hash(plain), tracking.mlflow_store.settings_hash(other)
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


def test_a_logged_model_is_reused_for_the_same_weights_and_replaced_for_others(store, mlflow_store):
    import mlflow
    import torch

    run_id = store.start_run("reid-tiny", "baseline-seed0-train", {}, {"dataset": "tiny", "model": "baseline"})
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 4, 6))
    example = torch.randn(2, 3, 8, 4)
    first = store.log_trained_model(run_id, net, example, name="baseline-seed0", params={}, tags={})
    copy = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 4, 6))
    copy.load_state_dict(net.state_dict())  # the same weights in another module object
    assert store.log_trained_model(run_id, copy, example, name="baseline-seed0", params={}, tags={}) == first
    exp = [store.get_run(run_id).info.experiment_id]
    assert [m.model_id for m in mlflow.search_logged_models(experiment_ids=exp, output_format="list")] == [first]
    with torch.no_grad():
        copy[1].bias.add_(1.0)
    replaced = store.log_trained_model(run_id, copy, example, name="baseline-seed0", params={}, tags={})
    assert replaced != first
    assert [m.model_id for m in mlflow.search_logged_models(experiment_ids=exp, output_format="list")] == [replaced]
    assert store.get_run(run_id).data.tags["logged_model_id"] == replaced


def _trained(store, dataset="tiny"):
    import torch

    train_id = store.start_run(f"reid-{dataset}", "baseline-seed0-train", {}, {"dataset": dataset, "model": "baseline",
                                                                           "seed": 0, "rule": "train"})
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 4, 6))
    model_id = store.log_trained_model(train_id, net, torch.randn(2, 3, 8, 4), name="baseline-seed0",
                                       params={}, tags={"model": "baseline"})
    store.finish_run(train_id)
    return train_id, model_id


def test_a_cross_domain_evaluation_is_its_own_run_of_the_training_sets_model(store, mlflow_store, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    train_id, model_id = _trained(store)
    settings = {"flip": True, "max_rank": 50}
    own = store.log_evaluation(train_id, {"rank1": 0.5}, settings,
                               test_data={"name": "tiny/test", "digest": "aa", "source": str(tmp_path / "a")})
    cross = store.log_evaluation(train_id, {"rank1": 0.2}, settings, test_dataset="other",
                                 test_data={"name": "other/test", "digest": "bb", "source": str(tmp_path / "b")})
    h = tracking.mlflow_store.settings_hash(settings)
    own, cross = client.get_run(own), client.get_run(cross)
    assert own.info.run_name == f"baseline-seed0-eval-{h}-try1" and own.data.tags["rule"] == "evaluate"
    assert "test_dataset" not in own.data.tags
    assert cross.info.run_name == f"baseline-seed0-on-other-eval-{h}-try1"
    assert (cross.data.tags["rule"], cross.data.tags["test_dataset"], cross.data.tags["dataset"]) == \
        ("evaluate_cross_domain", "other", "tiny")
    assert cross.info.experiment_id == own.info.experiment_id  # beside the model, in the training set's experiment
    linked = {(m.dataset_name, m.value) for m in client.get_logged_model(model_id).metrics}
    assert linked == {("tiny/test", 0.5), ("other/test", 0.2)}
    # the same in-domain setting with another result is the second attempt of the in-domain run, not of the cross one
    again = store.log_evaluation(train_id, {"rank1": 0.4}, settings,
                                 test_data={"name": "tiny/test", "digest": "aa", "source": str(tmp_path / "a")})
    assert client.get_run(again).info.run_name == f"baseline-seed0-eval-{h}-try2"


def test_an_evaluation_that_loses_the_race_to_register_its_test_set_retries(store, mlflow_store, tmp_path, monkeypatch):
    """Two jobs evaluating on one new test set at once: MLflow inserts the dataset row before the metrics,
    and the job that loses the insert gets a UNIQUE constraint error. Here the other job's insert happens
    just before this one's; the evaluation still logs every metric, linked to the model and the set."""
    import mlflow.tracking.fluent as fluent
    from mlflow.entities import Dataset, DatasetInput
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    train_id, model_id = _trained(store)
    other_job = store.start_run("reid-tiny", "other", {}, {"dataset": "tiny", "model": "x", "seed": 0, "rule": "r"})
    real = fluent._log_inputs_for_metrics_if_necessary
    calls = []

    def lose_the_race(run, metrics, datasets=None):
        calls.append(run.info.run_id)
        if len(calls) == 1:  # the other job registers the same test set first
            client.log_inputs(other_job, datasets=[DatasetInput(Dataset("shared/test", "cc", "local", "{}"))])
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")
        return real(run, metrics, datasets)

    monkeypatch.setattr(fluent, "_log_inputs_for_metrics_if_necessary", lose_the_race)
    run_id = store.log_evaluation(train_id, {"rank1": 0.3, "mAP": 0.2}, {"flip": False},
                                     test_data={"name": "shared/test", "digest": "cc", "source": str(tmp_path)})
    run = client.get_run(run_id)
    assert len(calls) == 2 and run.info.status == "FINISHED"
    assert run.data.metrics == {"rank1": 0.3, "mAP": 0.2}
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["shared/test"]
    assert {(m.key, m.dataset_name) for m in client.get_logged_model(model_id).metrics} == \
        {("rank1", "shared/test"), ("mAP", "shared/test")}


def test_a_parameter_over_mlflows_limit_is_cut_visibly_and_kept_whole(store, mlflow_store, caplog):
    """MLflow keeps 6,000 characters of a parameter value: the cut is logged, marked in the value, and the
    full value is a run artifact (kind 8 of issue 11: nothing recorded is changed silently)."""
    import json

    from mlflow.tracking import MlflowClient

    long_value = "x" * 7000 + "END"
    with caplog.at_level("WARNING", logger="reid.tracking"):
        run_id = store.start_run("reid-test", "long", {"model": {"note": long_value, "lr": 0.1}}, {})
    run = store.get_run(run_id)
    shown = run.data.params["model.note"]
    assert len(shown) <= 6000 and "cut: 7003 characters" in shown and tracking.mlflow_store.FULL_PARAMS_ARTIFACT in shown
    assert run.data.params["model.lr"] == "0.1"  # short values are untouched
    assert any("model.note" in r.getMessage() and "7003" in r.getMessage() for r in caplog.records)
    local = MlflowClient(mlflow_store).download_artifacts(run_id, tracking.mlflow_store.FULL_PARAMS_ARTIFACT)
    assert json.loads(open(local).read()) == {"model.note": long_value}


def test_make_tracker_chooses_by_argument_then_environment_then_mlflow(monkeypatch):
    monkeypatch.delenv(tracking.TRACKING_ENV, raising=False)
    monkeypatch.setenv("REID_EXPERIMENT_PREFIX", "pre")
    default = tracking.make_tracker()
    assert isinstance(default, tracking.MlflowTracker) and default.experiment_prefix == "pre"
    monkeypatch.setenv(tracking.TRACKING_ENV, "none")
    assert tracking.make_tracker().kind == "none"
    assert tracking.make_tracker("mlflow", "x").kind == "mlflow"
    with pytest.raises(ValueError, match="tracker 'wandb' is unknown; choose one of mlflow, none"):
        tracking.make_tracker("wandb")
    env = tracking.job_environment({"experiment_prefix": "p", "enabled": False}, "/v/bin/python", {})
    assert env[tracking.TRACKING_ENV] == "none"
    assert tracking.job_environment({"experiment_prefix": "p"}, "/v/bin/python", {})[tracking.TRACKING_ENV] == "mlflow"


def test_the_null_tracker_records_nothing_and_needs_no_store(tmp_path, monkeypatch):
    store = tmp_path / "never" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    tracker = tracking.NullTracker()
    run = tracker.start_training(dataset="d", run_name="r", params={"a": 1}, tags={}, key_tags=(), entry_point="t",
                                 identity="i")
    run.log_input_dataset("d/train", "abc", str(tmp_path))
    run.on_epoch_end({"epoch": 1, "loss_total": 1.0})
    built = []
    run.on_trained(tmp_path / "history.csv", lambda: built.append(1))
    run.finish("FINISHED")
    assert run.run_id is None and run.provenance() == {} and built == []  # no model is exported for it
    assert tracker.log_evaluation({"dataset": "d"}, {"rank1": 0.5}, {}, test_data={}) is None
    assert tracker.log_report([{"dataset": "d"}], [tmp_path / "x.md"]) == {}
    assert not store.parent.exists()


def test_mlflow_tracker_links_an_evaluation_to_the_training_run_of_run_json(mlflow_store, tmp_path, caplog):
    tracker = tracking.MlflowTracker("reid")
    run = tracker.start_training(dataset="tiny", run_name="baseline-seed0-train", params={"seed": 0},
                                 tags={"dataset": "tiny", "model": "baseline", "seed": 0, "rule": "train"},
                                 key_tags=("dataset", "model", "seed", "rule"), entry_point="python -m reid train",
                                 identity="i1")
    run.on_epoch_end({"epoch": 1, "loss_total": 2.0, "lr": 0.1})
    run.finish("FINISHED")
    info = {"dataset": "tiny", "model": "baseline", "seed": 0, "config_hash": "c", **run.provenance()}
    assert info["mlflow_run_id"] == run.run_id and info["mlflow_experiment"] == "reid-tiny"
    test = {"name": "tiny/test", "digest": "d1", "source": str(tmp_path)}
    eval_id = tracker.log_evaluation(info, {"rank1": 0.5, "mINP": 0.2}, {"flip": False}, test_data=test)
    got = tracker.store.get_run(eval_id)
    # the MLflow names of the metrics (tracking.mlflow_metrics), linked to the training run
    assert got.data.metrics == {"rank1": 0.5, "single_query/mINP": 0.2}
    assert got.data.tags["training_run_id"] == run.run_id and got.data.tags["model"] == "baseline"
    assert tracker.store.get_run(run.run_id).data.metrics["train/loss_total"] == 2.0
    # a model trained with the null tracker: said, not silently dropped, and nothing recorded
    caplog.set_level("WARNING")
    assert tracker.log_evaluation({"dataset": "tiny", "model": "mutual", "seed": 1}, {"rank1": 0.5}, {},
                                  test_data=test) is None
    assert "trained without MLflow" in caplog.text
    with pytest.raises(tracking.TrackingError, match="mutual seed 1: its run.json has no mlflow_run_id"):
        tracker.log_report([{"dataset": "tiny", "model": "mutual", "seed": 1}], [tmp_path / "t.md"])


def test_a_deferred_run_keeps_what_the_store_refused_and_sends_it_once_in_order():
    """While the store is down only the cheap probe runs (no wait through the client's retries); once it
    answers, the run opens and every kept call is sent, in order, once. A fault of the caller is not kept."""
    from pathlib import Path

    from reid.tracking.deferred import DeferredTrainingRun

    sent, state = [], {"down": True, "opens": 0, "probes": 0}

    class Run(tracking.TrainingRun):
        run_id = "r1"

        def _go(self, what):
            if state["down"]:
                raise tracking.TrackingError("store down")
            sent.append(what)

        def log_input_dataset(self, name, digest, source):
            self._go(("input", name))

        def on_epoch_end(self, row):
            if row["epoch"] < 0:
                raise ValueError("a bad row")
            self._go(("epoch", row["epoch"]))

        def on_trained(self, history_file, exported_model):
            self._go(("model", exported_model()))

        def provenance(self):
            return {"mlflow_run_id": self.run_id}

        def finish(self, status):
            self._go(("finish", status))

    def open_run():
        state["opens"] += 1
        if state["down"]:
            raise tracking.TrackingError("cannot be reached")
        return Run()

    def probe():
        state["probes"] += 1
        if state["down"]:
            raise tracking.TrackingError("cannot be reached")

    run = DeferredTrainingRun(open_run, probe, "store X")
    run.flush()
    run.log_input_dataset("d/train", "abc", "/data")
    run.on_epoch_end({"epoch": 1})
    assert (state["opens"], state["probes"]) == (1, 2) and sent == []
    assert run.run_id is None and run.missing() == ["the run itself", "the training input d/train", "epoch 1"]
    assert run.provenance() == {"tracking_missing": ["the run itself", "the training input d/train", "epoch 1"]}
    state["down"] = False
    run.on_epoch_end({"epoch": 2})
    assert sent == [("input", "d/train"), ("epoch", 1), ("epoch", 2)] and run.run_id == "r1"
    with pytest.raises(ValueError, match="a bad row"):
        run.on_epoch_end({"epoch": -1})
    assert run.missing() == []
    run.on_trained(Path("history.csv"), lambda: "net")
    assert run.provenance() == {"mlflow_run_id": "r1"}
    run.finish("FINISHED")
    assert sent[-2:] == [("model", "net"), ("finish", "FINISHED")] and len(sent) == 5
