"""The training stage: outputs, MLflow run, bit-identical resume, failure marking."""

import csv
from pathlib import Path

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


def test_resume_is_bitwise_identical(tmp_path, tiny_dataset, mlflow_store):
    full, _ = run(tmp_path, tiny_dataset, "full")
    # a job killed after its first epoch: the checkpoint is there, the outputs are not
    partial, hist = run(tmp_path, tiny_dataset, "resumed", max_epochs=1)
    assert len(hist) == 1 and not partial.model.exists()
    assert (tmp_path / "resumed" / "ckpt" / "last.pt").exists()
    partial_id = torch.load(tmp_path / "resumed" / "ckpt" / "last.pt", weights_only=False)["mlflow_run_id"]
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
    client = MlflowClient(mlflow_store)
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss_total")]
    assert steps == [1, 2]
    # the third attempt of (mutual, seed 3): it says it resumed, from which run, and which it retries
    tags = client.get_run(run_id).data.tags
    assert tags["mlflow.runName"] == "mutual-seed3-train-try3" and tags["attempt"] == "3"
    assert tags["resumed_from_epoch"] == "1" and tags["resumed_from_run"] == partial_id
    assert tags["retry_of"] == partial_id


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
    failed = client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'")[0]
    retry = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")[0]
    assert (failed.info.run_name, retry.info.run_name) == ("baseline-seed3-train-try1", "baseline-seed3-train-try2")
    assert retry.data.tags["retry_of"] == failed.info.run_id
    assert outputs.model.exists()


def test_bf16_autocast_on_cpu_trains_with_finite_falling_losses(tmp_path, tiny_dataset, mlflow_store):
    """CPU bf16 autocast stands in for the CUDA path (train.precision: bf16), which CI cannot run."""
    cfg = {**TRAIN, "epochs": 6, "lr_step": 100, "random_erasing": 0.0, "horizontal_flip": 0.0}
    bf16, h16 = run(tmp_path, tiny_dataset, "bf16", variant="mutual", train_cfg={**cfg, "precision": "bf16"})
    _, h32 = run(tmp_path, tiny_dataset, "fp32", variant="mutual", train_cfg={**cfg, "precision": "fp32"})
    for key in ("loss_total", "loss_id", "loss_verif"):
        assert all(torch.isfinite(torch.tensor(r[key])) for r in h16), key
    assert min(r["loss_total"] for r in h16[-2:]) < 0.85 * h16[0]["loss_total"]
    assert min(r["loss_id"] for r in h16[-2:]) < h16[0]["loss_id"]
    # autocast really was on: the same seed in fp32 gives other losses
    assert [r["loss_total"] for r in h16] != [r["loss_total"] for r in h32]
    _, meta = load_trained_model(bf16.model)
    assert meta["precision"] == "bf16"
    run_ = tracking.get_run(bf16.run_id_file.read_text().strip())
    assert run_.data.params["train.precision"] == "bf16"


def test_unknown_precision_is_refused_before_training(tmp_path, tiny_dataset, mlflow_store):
    with pytest.raises(ValueError, match="train.precision"):
        run(tmp_path, tiny_dataset, "bad", train_cfg={**TRAIN, "precision": "fp16"})
