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
