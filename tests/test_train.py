"""The training stage: outputs, MLflow run, bit-identical resume, failure marking."""

import csv
import json
import shutil
import socket
from pathlib import Path

import pytest
import torch

from reid import tracking
from reid.checkpoint import Checkpointer
from reid.models.runtime import load_trained_model
from reid.recipes.siamese import lr_at
from reid.train import TrainOutputs, train
from reid.typed_config import ModelConfig, TrainConfig

MODEL = dict(backbone="resnet18", pretrained=None, pretrained_sha256=None, pretrained_url=None, embedding_dim=32,
             dropout=0.5, attention_layers=[3, 4], test_embedding="single")
TRAIN = dict(height=32, width=16, epochs=2, batch_pairs=8, lr=0.01, lr_step=1, lr_gamma=0.1, momentum=0.9,
             weight_decay=5e-4, verification_weight=0.5, random_erasing=0.5, horizontal_flip=0.5, workers=0,
             device="cpu")


def run(tmp_path, tiny_dataset, name, variant="mutual", train_cfg=TRAIN, tracker=None):
    root, mean = tiny_dataset
    out = tmp_path / name
    outputs = TrainOutputs(out / "model.pt", out / "history.csv", out / "run.json")
    history = train(data_root=root, mean_image=mean, dataset="tiny", variant=variant, seed=3,
                    model_cfg=ModelConfig.from_dict(MODEL), train_cfg=TrainConfig.from_dict(train_cfg),
                    tracker=tracker or tracking.MlflowTracker("reid"), outputs=outputs, checkpoint_dir=out / "ckpt")
    return outputs, history


def run_id(outputs):
    return json.loads(outputs.run_info.read_text())["mlflow_run_id"]


class Killed(SystemExit):
    """What a SIGTERM from Snakemake or SLURM becomes inside train()."""


@pytest.fixture
def kill_after_epochs(monkeypatch):
    """kill_after_epochs(n): the training job is killed right after its n-th checkpoint is written."""
    def arm(n):
        saved = []
        original = Checkpointer.save

        def save(self, state):
            path = original(self, state)
            saved.append(state["epoch"])
            if len(saved) == n:
                raise Killed(f"killed after epoch {state['epoch'] + 1}")
            return path

        monkeypatch.setattr(Checkpointer, "save", save)
        return lambda: monkeypatch.setattr(Checkpointer, "save", original)
    return arm


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_dataset):
    """The reference: the mutual model trained TRAIN["epochs"] epochs in one uninterrupted job."""
    from reid import tracking as tr

    tmp = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        tr.init_store(uri, ["reid-tiny"])
        outputs, _ = run(tmp, tiny_dataset, "straight")
        return outputs, dict(run_tags(outputs))


def weights(outputs):
    return torch.load(outputs.model, weights_only=False)["state_dict"]


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def get_run(run_id):
    return tracking.MlflowStore().get_run(run_id)  # the store MLFLOW_TRACKING_URI names now


def run_tags(outputs):
    return get_run(run_id(outputs)).data.tags


def test_lr_schedule_steps_at_lr_step():
    cfg = TrainConfig.from_dict({**TRAIN, "lr_step": 2})
    assert [lr_at(e, cfg) for e in range(4)] == pytest.approx([0.01, 0.01, 0.001, 0.001])


def test_training_writes_outputs_and_one_complete_run(tmp_path, tiny_dataset, mlflow_store):
    outputs, history = run(tmp_path, tiny_dataset, "a")
    assert [r["epoch"] for r in history] == [1, 2]
    rows = list(csv.DictReader(open(outputs.history)))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.01, 0.001])
    assert all(float(r["loss_verif"]) > 0 for r in rows)
    model, meta = load_trained_model(outputs.model)
    assert meta["variant"] == "mutual" and (meta["height"], meta["width"]) == (32, 16)
    emb = model.embed(torch.zeros(2, 3, 32, 16))
    assert emb.shape == (2, 32)
    run_ = get_run(run_id(outputs))
    assert run_.info.status == "FINISHED"
    assert run_.data.tags["model"] == "mutual" and run_.data.params["train.epochs"] == "2"
    # training metrics under train/, none of the evaluation's names
    assert {f"train/{k}" for k in ("loss_id", "loss_verif", "loss_total", "acc_id", "acc_verif", "lr")} == {
        k for k in run_.data.metrics if k not in ("train/images_per_s", "train/seconds")}
    assert run_.info.run_name == "mutual-seed3-train-try1" and run_.data.tags["attempt"] == "1"
    tags = run_.data.tags
    assert tags["mlflow.source.name"] == "python -m reid train" and tags["mlflow.user"]
    assert tags["mlflow.source.git.commit"] == tags["git_commit"].removesuffix("-dirty")
    assert tags["torch_version"] == torch.__version__ and tags["host"] and tags["gpu_name"] == "none"

    # the trained model is an MLflow 3 LoggedModel of this run; its weights are not a run artifact
    import mlflow

    models = mlflow.search_logged_models(experiment_ids=[run_.info.experiment_id], output_format="list")
    assert [(m.name, m.source_run_id, m.model_id) for m in models] == [
        ("mutual-seed3", run_.info.run_id, tags["logged_model_id"])]
    client = mlflow.MlflowClient()
    assert [a.path for a in client.list_artifacts(run_.info.run_id, "training")] == ["training/history.csv"]
    assert not [a for a in client.list_artifacts(run_.info.run_id) if a.path.endswith((".pt", ".pth"))]
    store_dir = mlflow_store[len("sqlite:///"):].rsplit("/", 1)[0]
    assert models[0].artifact_location.startswith(f"file://{store_dir}/mlruns/reid-tiny/models/")
    # served: test images in, the same L2-normalised embeddings as the pipeline's model file out
    served = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}")
    x = torch.randn(3, 3, 32, 16)
    want = torch.nn.functional.normalize(model.embed(x), dim=1)
    assert torch.allclose(torch.from_numpy(served.predict(x.numpy())), want, atol=1e-5)
    spec = served.metadata.get_input_schema().inputs[0]
    assert spec.shape == (-1, 3, 32, 16)
    reqs = Path(models[0].artifact_location[len("file://"):]) / "requirements.txt"
    assert "torch==2.14.1" in reqs.read_text().split()  # this project's pins (pyproject.toml)


def test_run_json_records_the_provenance_and_the_mlflow_ids(straight):
    outputs, tags = straight  # tags: those of the MLflow run that run.json names (the fixture reads them so)
    info = json.loads(outputs.run_info.read_text())
    assert info == {"dataset": "tiny", "model": "mutual", "seed": 3, "config_hash": tags["config_hash"],
                    "git_commit": tags["git_commit"], "tracking": "mlflow", "mlflow_run_id": info["mlflow_run_id"],
                    "mlflow_experiment": "reid-tiny", "logged_model_id": tags["logged_model_id"]}


def test_the_null_tracker_trains_the_same_weights_and_writes_no_store(tmp_path, tiny_dataset, monkeypatch, straight):
    store = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    outputs, history = run(tmp_path, tiny_dataset, "null", tracker=tracking.NullTracker())
    assert [r["epoch"] for r in history] == [1, 2] and outputs.history.exists()
    assert_same_weights(straight[0], outputs)  # tracking changes no number
    info = json.loads(outputs.run_info.read_text())
    assert info["tracking"] == "none" and info["model"] == "mutual" and info["seed"] == 3
    assert info["config_hash"] == straight[1]["config_hash"]
    assert not {"mlflow_run_id", "logged_model_id", "mlflow_experiment"} & set(info)
    assert not store.parent.exists() and not (tmp_path / "null" / "mlruns").exists()
    assert "mlflow_run_id" not in torch.load(tmp_path / "null" / "ckpt" / "last.pt", weights_only=True)


def test_resume_is_bitwise_identical(tmp_path, tiny_dataset, mlflow_store, kill_after_epochs, straight):
    full, _ = straight
    # a job killed after its first epoch: the checkpoint is there, the outputs are not
    disarm = kill_after_epochs(1)
    with pytest.raises(Killed):
        run(tmp_path, tiny_dataset, "resumed")
    disarm()
    assert (tmp_path / "resumed" / "ckpt" / "last.pt").exists()
    assert not (tmp_path / "resumed" / "model.pt").exists()
    partial_id = torch.load(tmp_path / "resumed" / "ckpt" / "last.pt", weights_only=True)["mlflow_run_id"]
    resumed, hist = run(tmp_path, tiny_dataset, "resumed")
    assert [r["epoch"] for r in hist] == [1, 2]
    assert_same_weights(full, resumed)
    assert run_tags(resumed)["checkpoint"] == "resumed from last.pt after epoch 1"
    # the resumed job continues the killed job's run: one run, each epoch logged once
    from mlflow.tracking import MlflowClient

    rid = run_id(resumed)
    assert rid == partial_id
    client = MlflowClient(mlflow_store)
    steps = [m.step for m in client.get_metric_history(rid, "train/loss_total")]
    assert steps == [1, 2]
    run_ = client.get_run(rid)
    tags = run_.data.tags
    assert run_.info.status == "FINISHED" and len(client.search_runs([run_.info.experiment_id])) == 1
    assert tags["mlflow.runName"] == "mutual-seed3-train-try1" and tags["attempt"] == "2"
    assert tags["previous_attempt_status"] == "KILLED"
    assert tags["resumed_from_epoch"] == "1" and tags["resumed_from_run"] == partial_id


def test_raising_epochs_continues_the_run_bit_identically(tmp_path, tiny_dataset, mlflow_store, caplog, straight):
    """N epochs, then train.epochs raised to N + 1: the same weights as N + 1 epochs straight. Runtime
    keys (device, workers, the MLflow section) change on the way and do not invalidate the checkpoint."""
    straight, straight_tags = straight
    short, hist = run(tmp_path, tiny_dataset, "continued", train_cfg={**TRAIN, "epochs": 1})
    assert [r["epoch"] for r in hist] == [1]
    short_tags = run_tags(short)
    caplog.set_level("INFO")
    longer, hist = run(tmp_path, tiny_dataset, "continued", train_cfg={**TRAIN, "epochs": 2, "device": "auto"},
                       tracker=tracking.MlflowTracker("elsewhere"))
    assert [r["epoch"] for r in hist] == [1, 2]
    assert_same_weights(straight, longer)
    assert run_tags(longer)["checkpoint"] == "resumed from last.pt after epoch 1"
    assert "resumed from last.pt after epoch 1" in caplog.text
    # the recorded config hash leaves runtime keys out, and tells the two lengths apart
    assert run_tags(longer)["config_hash"] == straight_tags["config_hash"] != short_tags["config_hash"]


def test_a_result_key_change_sets_the_checkpoint_aside_and_starts_afresh(tmp_path, tiny_dataset, mlflow_store):
    run(tmp_path, tiny_dataset, "x", train_cfg={**TRAIN, "epochs": 1})
    outputs, hist = run(tmp_path, tiny_dataset, "x", train_cfg={**TRAIN, "epochs": 1, "lr": 0.02})
    tag = run_tags(outputs)["checkpoint"]
    assert tag.startswith("started afresh (last.pt made with other settings"), tag
    stale = sorted(p.name for p in (tmp_path / "x" / "ckpt").glob("stale-*"))
    assert len(stale) == 1 and stale[0].endswith("-last.pt-1.pt")  # kept, not deleted


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_last_checkpoint_is_set_aside_and_training_resumes_from_the_previous_one(
        tmp_path, tiny_dataset, mlflow_store, damage, caplog, straight):
    ckpt = tmp_path / "full" / "ckpt"
    shutil.copytree(straight[0].model.parent / "ckpt", ckpt)  # the checkpoints of a finished 2-epoch job
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt", "previous.pt"]  # the last two epochs
    last = (ckpt / "last.pt").read_bytes()
    (ckpt / "last.pt").write_bytes(b"" if damage == "empty" else last[: len(last) // 2])  # a node died mid-write
    caplog.set_level("INFO")
    retried, hist = run(tmp_path, tiny_dataset, "full")
    assert [r["epoch"] for r in hist] == [1, 2]
    tag = run_tags(retried)["checkpoint"]
    assert tag.startswith("resumed from previous.pt after epoch 1 (last.pt damaged: "), tag
    assert str(ckpt / "last.pt") in tag and "moved to damaged-last.pt-1.pt" in tag
    assert "resumed from previous.pt after epoch 1" in caplog.text
    damaged = ckpt / "damaged-last.pt-1.pt"
    assert damaged.read_bytes() == (b"" if damage == "empty" else last[: len(last) // 2])  # kept as it was
    assert_same_weights(straight[0], retried)


def test_with_both_checkpoints_damaged_training_starts_afresh(tmp_path, tiny_dataset, mlflow_store):
    first, _ = run(tmp_path, tiny_dataset, "a", variant="baseline", train_cfg={**TRAIN, "epochs": 1})
    ckpt = tmp_path / "a" / "ckpt"
    (ckpt / "previous.pt").write_bytes(b"PK\x03\x04 not a zip")
    (ckpt / "last.pt").write_bytes(b"")
    again, hist = run(tmp_path, tiny_dataset, "a", variant="baseline", train_cfg={**TRAIN, "epochs": 1})
    assert [r["epoch"] for r in hist] == [1]
    tag = run_tags(again)["checkpoint"]
    assert tag.startswith("started afresh (last.pt damaged: ") and "; previous.pt damaged: " in tag, tag
    assert sorted(p.name for p in ckpt.glob("damaged-*")) == ["damaged-last.pt-1.pt", "damaged-previous.pt-1.pt"]


def test_checkpoints_load_with_weights_only(tmp_path, tiny_dataset, mlflow_store):
    run(tmp_path, tiny_dataset, "w", variant="baseline", train_cfg={**TRAIN, "epochs": 1})
    state = torch.load(tmp_path / "w" / "ckpt" / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and isinstance(state["rng_cpu"], torch.Tensor)
    assert all(isinstance(v, (int, float)) for row in state["history"] for v in row.values())


def test_a_failed_job_marks_the_run_failed_and_a_retry_completes(tmp_path, tiny_dataset, mlflow_store,
                                                                 monkeypatch):
    def fail(self, state):
        raise RuntimeError("disk full")

    original = Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save", fail)
    cfg = {**TRAIN, "epochs": 1}
    with pytest.raises(RuntimeError, match="disk full"):
        run(tmp_path, tiny_dataset, "f", variant="baseline", train_cfg=cfg)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    exp = client.get_experiment_by_name("reid-tiny")
    statuses = [r.info.status for r in client.search_runs([exp.experiment_id])]
    assert statuses == ["FAILED"]
    monkeypatch.setattr(Checkpointer, "save", original)
    outputs, _ = run(tmp_path, tiny_dataset, "f", variant="baseline", train_cfg=cfg)
    # the retry continues the failed attempt's run, which ends as one complete run
    (retry,) = client.search_runs([exp.experiment_id])
    assert retry.info.status == "FINISHED" and retry.info.run_name == "baseline-seed3-train-try1"
    assert (retry.data.tags["attempt"], retry.data.tags["previous_attempt_status"]) == ("2", "FAILED")
    assert [m.step for m in client.get_metric_history(retry.info.run_id, "train/loss_total")] == [1]
    assert run_id(outputs) == retry.info.run_id and outputs.model.exists()


def test_bf16_autocast_on_cpu_is_refused_before_training(tmp_path, tiny_dataset, mlflow_store):
    """CPU bf16 autocast gives garbage weight gradients (tests/test_contracts.py reproduces it with
    PyTorch alone): refused before any work, naming the key; bf16 stays for CUDA."""
    from reid.config import ConfigError

    with pytest.raises(ConfigError, match="train.precision: bf16 is refused on the CPU"):
        run(tmp_path, tiny_dataset, "bf16", train_cfg={**TRAIN, "precision": "bf16"})
    assert not (tmp_path / "bf16" / "model.pt").exists() and not (tmp_path / "bf16" / "ckpt").exists()


def test_unknown_precision_is_refused_before_training(tmp_path, tiny_dataset, mlflow_store):
    # refused when the typed section is built, naming the section and the key
    with pytest.raises(ValueError, match=r"config 'train': invalid\s+precision: 'fp16' is not one of"):
        run(tmp_path, tiny_dataset, "bad", train_cfg={**TRAIN, "precision": "fp16"})


def test_a_store_failing_for_an_epoch_costs_no_training_and_is_replayed_once(tmp_path, tiny_dataset, mlflow_store,
                                                                            monkeypatch, caplog, straight):
    """The store refuses epoch 1's metrics (past its client's retries): the epoch's checkpoint is already
    written, training goes on, epoch 1 is sent again with epoch 2, and every epoch is in the run once."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from reid.tracking.mlflow_store import MlflowStore

    real = MlflowStore.log_metrics
    attempts = []

    def flaky(self, run_id, metrics, step=None):
        attempts.append(step)
        if len(attempts) == 1:
            assert (tmp_path / "flaky" / "ckpt" / "last.pt").exists()  # the checkpoint came first
            raise MlflowException("API request to http://mlflow:5000 failed with exception Max retries exceeded")
        return real(self, run_id, metrics, step)

    monkeypatch.setattr(MlflowStore, "log_metrics", flaky)
    caplog.set_level("WARNING", logger="reid.tracking")
    outputs, history = run(tmp_path, tiny_dataset, "flaky")
    assert [r["epoch"] for r in history] == [1, 2] and attempts == [1, 1, 2]
    assert_same_weights(straight[0], outputs)  # the failure changed no number
    client = MlflowClient(mlflow_store)
    rid = run_id(outputs)
    for key in ("train/loss_total", "train/lr", "train/acc_id"):
        assert [m.step for m in client.get_metric_history(rid, key)] == [1, 2], key
    assert client.get_run(rid).info.status == "FINISHED"
    info = json.loads(outputs.run_info.read_text())
    assert "tracking_missing" not in info and info["logged_model_id"]
    assert "keeps epoch 1 to record when the store answers again" in caplog.text
    assert "answers again: what was kept is recorded now" in caplog.text


def test_a_store_down_throughout_training_ends_green_and_the_next_run_records_everything_once(
        tmp_path, tiny_dataset, mlflow_store, monkeypatch, caplog, straight):
    """An MLflow server that never answers: the training completes with the same weights and says what the
    store lacks; run again once the store answers (model.pt deleted: 0 epochs to train), the same training
    records its run, every epoch once and one LoggedModel."""
    import mlflow
    from mlflow.tracking import MlflowClient

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    caplog.set_level("INFO")
    outputs, history = run(tmp_path, tiny_dataset, "down")
    assert [r["epoch"] for r in history] == [1, 2]
    assert_same_weights(straight[0], outputs)
    info = json.loads(outputs.run_info.read_text())
    assert "mlflow_run_id" not in info and info["tracking"] == "mlflow"
    assert info["tracking_missing"] == ["the run itself", "the training input tiny/train", "epoch 1", "epoch 2",
                                        "the history and the trained model"]
    assert f"MLflow store {down} did not record all of this training" in caplog.text
    assert "missing the run itself; the training input tiny/train; epoch 1; epoch 2" in caplog.text

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    caplog.clear()
    outputs.model.unlink()
    again, _ = run(tmp_path, tiny_dataset, "down")
    assert "0 of 2 epochs to train" in caplog.text
    assert_same_weights(straight[0], again)
    client = MlflowClient(mlflow_store)
    (run_,) = client.search_runs([client.get_experiment_by_name("reid-tiny").experiment_id])
    assert run_.info.run_id == run_id(again) and run_.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_.info.run_id, "train/loss_total")] == [1, 2]
    models = mlflow.search_logged_models(experiment_ids=[run_.info.experiment_id], output_format="list")
    assert [m.model_id for m in models] == [json.loads(again.run_info.read_text())["logged_model_id"]]
    # and once more: nothing is recorded twice
    again.model.unlink()
    run(tmp_path, tiny_dataset, "down")
    assert len(client.search_runs([run_.info.experiment_id])) == 1
    assert [m.step for m in client.get_metric_history(run_.info.run_id, "train/loss_total")] == [1, 2]
    assert len(mlflow.search_logged_models(experiment_ids=[run_.info.experiment_id], output_format="list")) == 1
