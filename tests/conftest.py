"""Shared fixtures: a tiny synthetic dataset in Market-1501 layout and an isolated MLflow store."""

from __future__ import annotations

import pytest

TINY_SYNTHETIC = dict(seed=7, train_ids=6, test_ids=6, cameras=3, cameras_per_id=[2, 3],
                      images_per_camera=[2, 3], distractors=4, junk=3, multi_query_images=[2, 2],
                      height=32, width=16)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    from reid import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.init_store(uri, ["reid-tiny"])
    return uri


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """(data root, mean image path) of a tiny synthetic dataset, built once per session."""
    from reid.data.market import TRAIN_DIR, scan_split
    from reid.data.synthetic import synthesize
    from reid.data.transforms import compute_mean_image, save_mean_image

    root = tmp_path_factory.mktemp("tiny") / "data"
    synthesize(root, **TINY_SYNTHETIC)
    mean = root.parent / "mean_image.pt"
    save_mean_image(compute_mean_image([r.path for r in scan_split(root / TRAIN_DIR)]), mean)
    return root, mean
