"""The training stage: outputs, MLflow run, bit-identical resume, failure marking."""

import csv

import pytest
import torch

from reid import tracking
from reid.train import InjectedFailure, TrainOutputs, load_trained_model, lr_at, train

MODEL = dict(backbone="resnet18", pretrained=None, pretrained_sha256=None, pretrained_url=None, embedding_dim=32,
             dropout=0.5, attention_layers=[3, 4], test_embedding="single")
TRAIN = dict(height=32, width=16, epochs=2, batch_pairs=8, lr=0.01, lr_step=1, lr_gamma=0.1, momentum=0.9,
             weight_decay=5e-4, verification_weight=0.5, random_erasing=0.5, horizontal_flip=0.5, workers=0,
             device="cpu")
MLFLOW = dict(tracking_uri=None, experiment_prefix="reid")


def run(tmp_path, tiny_dataset, name, variant="mutual", max_epochs=None, train_cfg=TRAIN):
    root, mean = tiny_dataset
    out = tmp_path / name
    outputs = TrainOutputs(out / "model.pt", out / "history.csv", out / "mlflow_run_id")
    history = train(data_root=root, mean_image=mean, dataset="tiny", variant=variant, seed=3, model_cfg=MODEL,
                    train_cfg=train_cfg, mlflow_cfg=MLFLOW, outputs=outputs, checkpoint_dir=out / "ckpt",
                    max_epochs=max_epochs)
    return outputs, history


def test_lr_schedule_steps_at_lr_step():
    assert [lr_at(e, {**TRAIN, "lr_step": 2}) for e in range(4)] == pytest.approx([0.01, 0.01, 0.001, 0.001])


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
    run_ = tracking.get_run(outputs.run_id_file.read_text().strip())
    assert run_.info.status == "FINISHED"
    assert run_.data.tags["model"] == "mutual" and run_.data.params["train.epochs"] == "2"
    assert {"loss_id", "loss_verif", "loss_total", "acc_id", "acc_verif", "lr"} <= set(run_.data.metrics)


def test_resume_is_bitwise_identical(tmp_path, tiny_dataset, mlflow_store):
    full, _ = run(tmp_path, tiny_dataset, "full")
    # a job killed after its first epoch: the checkpoint is there, the outputs are not
    partial, hist = run(tmp_path, tiny_dataset, "resumed", max_epochs=1)
    assert len(hist) == 1 and not partial.model.exists()
    assert (tmp_path / "resumed" / "ckpt" / "last.pt").exists()
    resumed, hist = run(tmp_path, tiny_dataset, "resumed")
    assert [r["epoch"] for r in hist] == [1, 2]
    a = torch.load(full.model, weights_only=False)["state_dict"]
    b = torch.load(resumed.model, weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the resumed run replays the first epoch, so it is complete on its own
    from mlflow.tracking import MlflowClient

    run_id = resumed.run_id_file.read_text().strip()
    steps = [m.step for m in MlflowClient(mlflow_store).get_metric_history(run_id, "loss_total")]
    assert steps == [1, 2]


def test_injected_failure_marks_the_run_failed_and_a_retry_completes(tmp_path, tiny_dataset, mlflow_store,
                                                                     monkeypatch):
    marker = tmp_path / "failed-once"
    monkeypatch.setenv("REID_FAIL_ONCE", str(marker))
    cfg = {**TRAIN, "epochs": 1}
    with pytest.raises(InjectedFailure):
        run(tmp_path, tiny_dataset, "f", variant="baseline", train_cfg=cfg)
    assert marker.exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    exp = client.get_experiment_by_name("reid-tiny")
    statuses = [r.info.status for r in client.search_runs([exp.experiment_id])]
    assert statuses == ["FAILED"]
    outputs, _ = run(tmp_path, tiny_dataset, "f", variant="baseline", train_cfg=cfg)
    statuses = sorted(r.info.status for r in client.search_runs([exp.experiment_id]))
    assert statuses == ["FAILED", "FINISHED"]
    assert outputs.model.exists()
