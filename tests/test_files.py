"""Issue 11 kind 3: every file the pipeline writes and reads back is written atomically (reid.io) and read by
one loader per kind (reid.files) that names the file and the rule writing it when the file is damaged."""

from __future__ import annotations

import argparse
import json
import uuid
import warnings

import pytest
import torch

from reid import files, io
from reid.files import load_mean_image
from reid.files.mean_image import write_mean_image
from reid.evaluate import evaluate
from reid.report.figures import read_history
from reid.report.runs import ReportInputError, load_run
from reid.models.runtime import load_trained_model
from reid.files.comparisons import write_comparisons
from reid.files.dataset_report import write_dataset_report
from reid.files.history import write_history
from reid.files.run_info import write_run_info
from reid.typed_config import BootstrapConfig, RerankConfig

HISTORY_ROW = {"epoch": 1, "lr": 0.1, "loss_total": 2.5, "loss_id": 2.0, "loss_verif": 0.5, "acc_id": 0.25,
               "acc_verif": 0.5, "images_per_s": 100.0, "seconds": 3.25}


def write_model(path):
    from reid.models import build_model

    kwargs = dict(variant="baseline", num_classes=3, backbone="resnet18", embedding_dim=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(**kwargs)
    io.torch_save(path, {"state_dict": model.state_dict(),
                         "meta": {"model_kwargs": kwargs, "height": 32, "width": 16, "variant": "baseline",
                                  "label_to_pid": {0: 1, 1: 2, 2: 5}}})


def features_blob():
    g = torch.Generator().manual_seed(0)
    return {"query_feats": torch.randn(3, 4, generator=g), "gallery_feats": torch.randn(5, 4, generator=g),
            "query_pids": torch.tensor([1, 2, 3]), "gallery_pids": torch.tensor([1, 2, 3, 1, 0]),
            "query_camids": torch.tensor([1, 1, 1]), "gallery_camids": torch.tensor([2, 2, 2, 3, 1]),
            "query_paths": ["q1.jpg", "q2.jpg", "q3.jpg"], "gallery_paths": [f"g{i}.jpg" for i in range(5)],
            "meta": {"flip": "false"}}


def write_per_query(path):
    from reid.evaluate import compute_metrics, query_names
    from reid.metrics import uncertainty

    feats = features_blob()
    metrics = compute_metrics(feats, max_rank=5, rerank=RerankConfig.from_dict({"k1": 2, "k2": 1}))
    table = uncertainty.per_query_table(metrics.pop("per_query"), query_names(feats["query_paths"]),
                                        feats["query_pids"], feats["query_camids"])
    io.write_text(path, uncertainty.per_query_csv(table))


# kind -> (file name, writer(path), public loader(path)) -- the writers are the pipeline's own
WRITERS = {
    "model": ("model.pt", write_model, load_trained_model),
    "features": ("features.pt", lambda p: io.torch_save(p, features_blob()), files.load_features),
    "mean_image": ("mean_image.pt", lambda p: write_mean_image(
        {"mean": torch.rand(3, 16, 8), "std": torch.ones(3), "count": 4}, p), load_mean_image),
    "run_info": ("run.json", lambda p: write_run_info(p, dataset="d", model="mutual", seed=0, config_hash="c0ffee",
                                                      git_commit="0123abc", tracking="mlflow", reading=None,
                                                      provenance={"mlflow_run_id": uuid.uuid4().hex}),
                 files.load_run_info),
    "metrics": ("metrics.json", lambda p: io.write_json(p, {"dataset": "d", "model": "mutual", "seed": 0,
                                                          "mlflow_run_id": uuid.uuid4().hex, "rank1": 0.5,
                                                          "mAP": 0.25, "cmc": [0.5, 0.75]}), files.load_metrics),
    "dataset_report": ("dataset.json", lambda p: write_dataset_report(p, {"ok": True, "problems": [], "splits": {
        "train": {"images": 8}}}), files.load_dataset_report),
    "history": ("history.csv", lambda p: write_history([HISTORY_ROW, {**HISTORY_ROW, "epoch": 2}], p, list(HISTORY_ROW)),
                files.load_history),
    "per_query": ("per_query.csv", write_per_query, files.load_per_query),
    "comparisons": ("comparisons.json", lambda p: write_comparisons(p, {"dataset": "d", "models": {}, "pairs": [],
                                                                      "bootstrap": {"resamples": 10, "seed": 0}}),
                    files.load_comparisons),
}
RULE = {"model": "train", "features": "extract", "mean_image": "verify_dataset", "run_info": "train",
        "metrics": "evaluate", "dataset_report": "verify_dataset", "history": "train", "per_query": "evaluate",
        "comparisons": "comparisons"}


@pytest.fixture(scope="module", params=sorted(WRITERS))
def good_file(request, tmp_path_factory):
    kind = request.param
    name, write, load = WRITERS[kind]
    path = tmp_path_factory.mktemp(kind) / name
    write(path)
    return kind, path, path.read_bytes(), load


def test_every_kind_round_trips_and_leaves_no_temporary_files(good_file):
    kind, path, data, load = good_file
    load(path)  # the pipeline's own file loads
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def _cuts(kind: str, size: int) -> list[int]:
    if kind in ("history", "per_query"):
        # a CSV cut at a line end, or after a digit of its last cell, reads as a shorter history (docs/files.md):
        # cuts inside a row are what can be checked
        return [0, 1, size // 2, size - (10 if kind == "history" else 40)]  # both inside the last row
    return [0, 1, size // 2, size - 2]  # size - 1 would only drop a JSON file's final newline


def test_empty_or_cut_short_files_name_the_file_and_the_rule_that_writes_it(good_file, tmp_path):
    kind, path, data, load = good_file
    for cut in _cuts(kind, len(data)):
        bad = tmp_path / f"cut{cut}" / path.name
        bad.parent.mkdir()
        bad.write_bytes(data[:cut])
        with pytest.raises(files.DamagedFileError) as err:
            load(bad)
        msg = str(err.value)
        assert msg.startswith(f"{bad}: ") and f"rule `{RULE[kind]}`" in msg, msg
        if cut == 0:
            assert "empty file (0 bytes)" in msg
        assert bad.read_bytes() == data[:cut]  # a loader never changes or removes the file


def test_a_missing_file_names_the_rule_that_writes_it(good_file, tmp_path):
    kind, path, _, load = good_file
    with pytest.raises(FileNotFoundError, match=f"rule `{RULE[kind]}`"):
        load(tmp_path / "absent" / path.name)


@pytest.mark.parametrize("kind", ["model", "features", "mean_image"])
def test_torch_files_load_with_weights_only(kind, tmp_path):
    """A torch file holding a pickled object (not tensors and plain types) is refused, not unpickled."""
    name, _, load = WRITERS[kind]
    bad = tmp_path / name
    torch.save({"state_dict": {}, "meta": argparse.Namespace(x=1)}, bad)
    with pytest.raises(files.DamagedFileError, match="cannot be read as tensors and plain types"):
        load(bad)


def test_the_wrong_kind_of_file_is_refused(tmp_path):
    features = tmp_path / "features.pt"
    io.torch_save(features, features_blob())
    with pytest.raises(files.DamagedFileError, match="missing key.*state_dict.*rule `train`"):
        load_trained_model(features)  # features.pt passed where model.pt belongs
    model = tmp_path / "model.pt"
    write_model(model)
    blob = torch.load(model, weights_only=True)
    blob["state_dict"].pop(next(iter(blob["state_dict"])))
    io.torch_save(model, blob)
    with pytest.raises(files.DamagedFileError, match="weights do not fit the model its meta describes"):
        load_trained_model(model)
    blob = features_blob()
    blob["gallery_pids"] = blob["gallery_pids"][:4]
    io.torch_save(features, blob)
    with pytest.raises(files.DamagedFileError, match="gallery: feats .* do not describe the same N images"):
        files.load_features(features)
    run_info = tmp_path / "run.json"
    io.write_json(run_info, {"dataset": "d", "model": "mutual", "seed": 0, "config_hash": "c", "mlflow_run_id": "x1"})
    with pytest.raises(files.DamagedFileError, match="'x1', which is not an MLflow run id"):
        files.load_run_info(run_info)
    io.write_json(run_info, {"dataset": "d", "model": "mutual", "seed": "0", "config_hash": "c"})
    with pytest.raises(files.DamagedFileError, match="seed is '0', not an integer.*rule `train`"):
        files.load_run_info(run_info)
    io.write_json(run_info, {"dataset": "d", "model": "mutual", "seed": 0})
    with pytest.raises(files.DamagedFileError, match="missing key.*config_hash"):
        files.load_run_info(run_info)


def test_report_readers_turn_damage_into_report_errors_naming_the_rule(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"dataset": "d", "model": "mutual", "se')
    with pytest.raises(ReportInputError, match="not valid JSON.*rule `evaluate`"):
        load_run(metrics)
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss_id,loss_verif\n1,2.0,0.5\n2,1.")
    with pytest.raises(ReportInputError, match="line 3 has a different number of cells.*rule `train`"):
        read_history(history)


def test_evaluate_refuses_a_cut_features_file_and_keeps_the_previous_metrics(tmp_path):
    features = tmp_path / "features.pt"
    io.torch_save(features, features_blob())
    data = features.read_bytes()
    features.write_bytes(data[: len(data) // 3])
    out = tmp_path / "metrics.json"
    out.write_text('{"previous": true}\n')
    with pytest.raises(files.DamagedFileError, match="cut short or not a torch file.*rule `extract`"):
        evaluate(features=features, out=out, per_query_out=tmp_path / "per_query.csv", max_rank=5,
                 rerank=RerankConfig(k1=2, k2=1, lambda_value=0.3), bootstrap=BootstrapConfig(resamples=10, seed=0),
                 inputs={})
    assert json.loads(out.read_text()) == {"previous": True} and not (tmp_path / "per_query.csv").exists()


def test_cli_stage_names_the_damaged_file_and_its_rule(tmp_path, capsys):
    from reid.cli import main

    run_info = tmp_path / "run.json"
    run_info.write_bytes(b"")
    rc = main(["evaluate", "--features", str(tmp_path / "features.pt"), "--run-info", str(run_info),
               "--rerank", '{"k1": 2}', "--bootstrap", '{"resamples": 10}', "--out", str(tmp_path / "metrics.json"),
               "--per-query-out", str(tmp_path / "per_query.csv")])
    err = capsys.readouterr().err
    assert rc == 1 and f"{run_info}: empty file (0 bytes)" in err and "rule `train`" in err
    assert not (tmp_path / "metrics.json").exists()


def test_write_comparisons_refuses_a_record_without_its_keys_and_writes_nothing(tmp_path):
    path = tmp_path / "comparisons.json"
    with pytest.raises(ValueError, match=r"comparisons.json: not written: the record lacks pairs, bootstrap"):
        write_comparisons(path, {"dataset": "d", "models": {}})
    assert not path.exists()
