"""The evaluate stage knows what it evaluated from the stage files (run.json, features.pt), not from a tracker."""

import json

import pytest
import torch

from reid import io
from reid.evaluate import evaluate_run
from reid.typed_config import BootstrapConfig, RerankConfig

META = {"dataset": "tiny", "variant": "mutual", "seed": "3", "config_hash": "c0ffee", "flip": "true",
        "precision": "fp32", "test_embedding": "mutual_self"}
RERANK = RerankConfig.from_dict({"k1": 2, "k2": 1, "lambda": 0.3})
BOOTSTRAP = BootstrapConfig.from_dict({"resamples": 20, "seed": 0})


def features(path, meta=META):
    g = torch.Generator().manual_seed(0)
    io.torch_save(path, {
        "query_feats": torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1),
        "gallery_feats": torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1),
        "query_pids": torch.tensor([1, 2, 3]), "gallery_pids": torch.tensor([1, 2, 3, 1, 0]),
        "query_camids": torch.tensor([1, 1, 1]), "gallery_camids": torch.tensor([2, 2, 2, 3, 1]),
        "query_paths": [f"d/query/q{i}.jpg" for i in range(3)],
        "gallery_paths": [f"d/bounding_box_test/g{i}.jpg" for i in range(5)], "meta": dict(meta)})
    return path


class Recording:
    """A tracker that keeps what the stage reports (the interface of reid.tracking.Tracker)."""
    kind = "recording"

    def __init__(self):
        self.calls = []

    def log_evaluation(self, provenance, metrics, settings, **kw):
        self.calls.append((dict(provenance), dict(metrics), dict(settings), kw))
        return "eval-run"


def run_info(path, **extra):
    io.write_json(path, {"dataset": "tiny", "model": "mutual", "seed": 3, "config_hash": "c0ffee",
                         "git_commit": "0123abc", "tracking": "none", **extra})
    return path


def evaluate(tmp_path, info, tracker=None, feats=None):
    return evaluate_run(features=feats or features(tmp_path / "features.pt"), run_info=info,
                        out=tmp_path / "metrics.json", per_query_out=tmp_path / "per_query.csv", max_rank=5,
                        rerank=RERANK, bootstrap=BOOTSTRAP, tracker=tracker)


def test_provenance_comes_from_run_json_and_the_tracker_gets_the_settings(tmp_path):
    tracker = Recording()
    record = evaluate(tmp_path, run_info(tmp_path / "run.json"), tracker)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["rank1"] == record["rank1"]
    assert {k: written[k] for k in ("dataset", "model", "seed", "config_hash", "git_commit")} == {
        "dataset": "tiny", "model": "mutual", "seed": 3, "config_hash": "c0ffee", "git_commit": "0123abc"}
    assert "mlflow_run_id" not in written and "logged_model_id" not in written  # nothing was tracked
    (provenance, metrics, settings, kw), = tracker.calls
    assert provenance["tracking"] == "none" and metrics["rank1"] == record["rank1"]
    assert "rank1_ci95_low" in metrics and "cmc" not in metrics
    assert settings == {"flip": True, "max_rank": 5, "test_embedding": "mutual_self",
                        "rerank": {"k1": 2, "k2": 1, "lambda": 0.3}, "bootstrap": BOOTSTRAP.as_dict()}
    assert kw["test_data"]["name"] == "tiny/test" and kw["test_data"]["source"] == "d"
    assert kw["data_params"] == {"data": {"query_images": 3, "gallery_images": 5}}
    assert kw["curves"]["cmc"] == record["cmc"] and kw["artifacts"] == [tmp_path / "metrics.json"]


def test_mlflow_ids_in_run_json_reach_metrics_json(tmp_path):
    rid = "0123456789abcdef0123456789abcdef"
    evaluate(tmp_path, run_info(tmp_path / "run.json", tracking="mlflow", mlflow_run_id=rid, logged_model_id="m-1"))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["mlflow_run_id"] == rid and written["logged_model_id"] == "m-1"


def test_features_of_another_run_are_refused_before_anything_is_written(tmp_path):
    other = features(tmp_path / "other.pt", {**META, "seed": "4"})
    with pytest.raises(ValueError, match=r"other.pt was made from seed '4' but .*run.json describes seed 3"):
        evaluate(tmp_path, run_info(tmp_path / "run.json"), Recording(), feats=other)
    assert not (tmp_path / "metrics.json").exists()


def test_without_run_json_provenance_comes_from_features_and_nothing_is_tracked(tmp_path):
    tracker = Recording()
    evaluate(tmp_path, None, tracker)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert (written["dataset"], written["model"], written["seed"]) == ("tiny", "mutual", 3)
    assert tracker.calls == []
