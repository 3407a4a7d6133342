"""reid.external: features made by other tools, in each container, and their bad inputs."""

import numpy as np
import pytest
import scipy.io
import torch

from reid.external import ExternalFeaturesError, load_external_features


def _arrays(rng, nq=5, ng=9, nm=7, d=4):
    return {
        "query_features": rng.normal(size=(nq, d)).astype(np.float32),
        "gallery_features": rng.normal(size=(ng, d)).astype(np.float32),
        "query_pids": np.arange(1, nq + 1),
        "gallery_pids": np.r_[np.arange(1, nq + 1), [0, -1, 0, 2]][:ng],
        "query_camids": np.zeros(nq, dtype=np.int64),
        "gallery_camids": np.ones(ng, dtype=np.int64),
        "multi_query_features": rng.normal(size=(nm, d)).astype(np.float16),
        "multi_query_pids": np.array([1, 1, 2, 3, 4, 5, 5]),
        "multi_query_camids": np.zeros(nm, dtype=np.int64),
    }


def _check_same(loaded, arrays):
    assert torch.equal(loaded["query_feats"], torch.from_numpy(arrays["query_features"]))
    assert torch.equal(loaded["gallery_pids"], torch.from_numpy(arrays["gallery_pids"].astype(np.int64)))
    assert loaded["query_feats"].dtype == torch.float32 and loaded["gallery_pids"].dtype == torch.int64
    assert loaded["query_paths"][0] == "query/000000" and len(loaded["gallery_paths"]) == 9


def test_npz_and_pt_read_the_same(tmp_path):
    arrays = _arrays(np.random.default_rng(0))
    np.savez(tmp_path / "f.npz", **arrays)
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, tmp_path / "f.pt")
    a, b = load_external_features(tmp_path / "f.npz"), load_external_features(tmp_path / "f.pt")
    _check_same(a, arrays)
    _check_same(b, arrays)
    # float16 multi-query features are widened, not rounded again
    assert a["mq_feats"].dtype == torch.float32
    assert torch.equal(a["mq_feats"], torch.from_numpy(arrays["multi_query_features"].astype(np.float32)))
    assert torch.equal(a["mq_pids"], b["mq_pids"])


def test_layumi_mat_file(tmp_path):
    arrays = _arrays(np.random.default_rng(1))
    # what layumi's test.py saves: features N x D, labels and cameras as 1 x N rows
    scipy.io.savemat(tmp_path / "pytorch_result.mat", {
        "query_f": arrays["query_features"], "query_label": arrays["query_pids"],
        "query_cam": arrays["query_camids"], "gallery_f": arrays["gallery_features"],
        "gallery_label": arrays["gallery_pids"], "gallery_cam": arrays["gallery_camids"]})
    loaded = load_external_features(tmp_path / "pytorch_result.mat")
    _check_same(loaded, arrays)
    assert "mq_feats" not in loaded


def test_names_are_kept(tmp_path):
    arrays = _arrays(np.random.default_rng(2))
    names = np.array([f"q{i}.jpg" for i in range(5)])
    np.savez(tmp_path / "f.npz", **arrays, query_names=names)
    assert load_external_features(tmp_path / "f.npz")["query_paths"] == list(names)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("gallery_pids"), "missing key 'gallery_pids'"),
    (lambda a: a.update(query_camids=np.zeros(4, dtype=np.int64)), "'query_camids' has 4 entries but its features have 5"),
    (lambda a: a["gallery_features"].__setitem__((3, 1), np.nan), "'gallery_features' has 1 NaN or infinite values (first in row 3)"),
    (lambda a: a.update(query_pids=np.array(["a", "b", "c", "d", "e"])), "'query_pids' must hold integers"),
    (lambda a: a.update(query_pids=np.array([1.5, 2, 3, 4, 5])), "'query_pids' must hold integers"),
    (lambda a: a.update(query_features=np.zeros((5, 3), dtype=np.float32)), "feature dimensions differ"),
    (lambda a: a.pop("multi_query_camids"), "not multi_query_camids"),
    (lambda a: a.update(query_names=np.array(["x"])), "'query_names' has 1 entries, expected 5"),
])
def test_bad_input_names_the_key(tmp_path, change, message):
    arrays = _arrays(np.random.default_rng(3))
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ExternalFeaturesError, match="bad.npz") as err:
        load_external_features(tmp_path / "bad.npz")
    assert message in str(err.value)


def test_unreadable_files(tmp_path):
    (tmp_path / "f.csv").write_text("1,2\n")
    with pytest.raises(ExternalFeaturesError, match="unknown features file type"):
        load_external_features(tmp_path / "f.csv")
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04trunc")
    with pytest.raises(ExternalFeaturesError, match="cut.npz: cannot be read"):
        load_external_features(tmp_path / "cut.npz")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ExternalFeaturesError, match="expected a dict"):
        load_external_features(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError):
        load_external_features(tmp_path / "absent.npz")


# ---------------------------------------------------------------- `reid evaluate-features`

def _pipeline_features(rng, n_ids=12, d=8):
    """A features.pt as `reid extract` writes it: clustered features, junk, distractors, gt_bbox images."""
    centres = rng.normal(size=(n_ids + 1, d))
    def draw(pids):
        return torch.from_numpy((centres[np.maximum(pids, 0)] + 0.9 * rng.normal(size=(len(pids), d))).astype(np.float32))
    qp = np.repeat(np.arange(1, n_ids + 1), 2)
    gp = np.r_[np.repeat(np.arange(1, n_ids + 1), 3), [0, 0, 0, -1, -1]]
    mp = np.repeat(np.arange(1, n_ids + 1), 2)
    qc, gc, mc = np.tile([1, 2], n_ids), rng.integers(1, 4, len(gp)), np.tile([1, 2], n_ids)
    return {"query_feats": draw(qp), "gallery_feats": draw(gp), "mq_feats": draw(mp),
            "query_pids": torch.from_numpy(qp), "gallery_pids": torch.from_numpy(gp), "mq_pids": torch.from_numpy(mp),
            "query_camids": torch.from_numpy(qc), "gallery_camids": torch.from_numpy(gc),
            "mq_camids": torch.from_numpy(mc),
            "query_paths": [f"data/x/query/{p:04d}_c{c}s1_{i:06d}_00.jpg" for i, (p, c) in enumerate(zip(qp, qc))],
            "gallery_paths": [f"data/x/bounding_box_test/{i:06d}.jpg" for i in range(len(gp))],
            "mq_paths": [f"data/x/gt_bbox/{i:06d}.jpg" for i in range(len(mp))],
            "meta": {"dataset": "x", "variant": "baseline", "seed": "0", "config_hash": "abc", "flip": "false"}}


def test_evaluate_features_agrees_with_the_pipeline_evaluate_stage(tmp_path):
    """The same features through `reid evaluate` (the pipeline's stage, no MLflow run) and through
    `reid evaluate-features` (another tool's .npz) give the same metrics.json numbers and per_query.csv."""
    import json

    from reid.cli import main

    feats = _pipeline_features(np.random.default_rng(7))
    torch.save(feats, tmp_path / "features.pt")
    np.savez(tmp_path / "other_tool.npz",
             query_features=feats["query_feats"].numpy(), gallery_features=feats["gallery_feats"].numpy(),
             query_pids=feats["query_pids"].numpy(), gallery_pids=feats["gallery_pids"].numpy(),
             query_camids=feats["query_camids"].numpy(), gallery_camids=feats["gallery_camids"].numpy(),
             multi_query_features=feats["mq_feats"].numpy(), multi_query_pids=feats["mq_pids"].numpy(),
             multi_query_camids=feats["mq_camids"].numpy(), query_names=np.array(feats["query_paths"]))
    rr, bs = '{"k1": 4, "k2": 2, "lambda": 0.3}', '{"resamples": 500, "seed": 3}'
    assert main(["evaluate", "--features", str(tmp_path / "features.pt"), "--max-rank", "10", "--rerank", rr,
                 "--bootstrap", bs, "--out", str(tmp_path / "stage" / "metrics.json"),
                 "--per-query-out", str(tmp_path / "stage" / "per_query.csv")]) == 0
    assert main(["evaluate-features", str(tmp_path / "other_tool.npz"), "--out", str(tmp_path / "any"),
                 "--max-rank", "10", "--rerank", rr, "--bootstrap", bs]) == 0
    stage = json.loads((tmp_path / "stage" / "metrics.json").read_text())
    anyf = json.loads((tmp_path / "any" / "metrics.json").read_text())
    numeric = {k for k, v in stage.items() if isinstance(v, float)}
    assert {"rank1", "mAP", "rerank/mINP", "multi_query_max/rerank/mAP_trapezoid"} <= numeric
    assert {k: anyf[k] for k in numeric} == {k: stage[k] for k in numeric}
    assert anyf["ci95"] == stage["ci95"] and anyf["cmc"] == stage["cmc"]
    assert (tmp_path / "any" / "per_query.csv").read_text() == (tmp_path / "stage" / "per_query.csv").read_text()
    # the stage without a run id takes its provenance from features.pt
    assert (stage["dataset"], stage["model"], stage["seed"], stage["flip_test"]) == ("x", "baseline", 0, False)
    assert anyf["flip_test"] is None and anyf["features"].endswith("other_tool.npz")


def test_evaluate_features_layumi_mat_defaults_and_bad_input(tmp_path, capsys):
    from reid.cli import main

    feats = _pipeline_features(np.random.default_rng(8))
    mat = {"query_f": feats["query_feats"].numpy(), "query_label": feats["query_pids"].numpy(),
           "query_cam": feats["query_camids"].numpy(), "gallery_f": feats["gallery_feats"].numpy(),
           "gallery_label": feats["gallery_pids"].numpy(), "gallery_cam": feats["gallery_camids"].numpy()}
    scipy.io.savemat(tmp_path / "pytorch_result.mat", mat)
    assert main(["evaluate-features", str(tmp_path / "pytorch_result.mat"), "--out", str(tmp_path / "out"),
                 "--bootstrap", '{"resamples": 200}']) == 0
    import json

    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["evaluate_config"]["rerank"] == {"k1": 20, "k2": 6, "lambda": 0.3}  # the config defaults
    assert record["bootstrap"]["resamples"] == 200 and record["bootstrap"]["seed"] == 0
    assert "multi_query_mean/rank1" not in record and "rerank/rank1" in record
    assert "rank1" in capsys.readouterr().out

    mat["gallery_label"] = mat["gallery_label"][:-1]
    scipy.io.savemat(tmp_path / "bad.mat", mat)
    assert main(["evaluate-features", str(tmp_path / "bad.mat"), "--out", str(tmp_path / "bad")]) == 1
    assert "'gallery_label' has 40 entries but its features have 41 rows" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
