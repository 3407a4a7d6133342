"""Shared fixtures: a tiny synthetic dataset in Market-1501 layout and an isolated MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY_SYNTHETIC = dict(seed=7, train_ids=6, test_ids=6, cameras=3, cameras_per_id=[2, 3],
                      images_per_camera=[2, 3], distractors=4, junk=3, multi_query_images=[2, 2],
                      height=32, width=16)


REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """Files marked ``slow`` (each builds a tiny pipeline through Snakemake once, in a module fixture)
    run first, in collection order otherwise: with pytest-xdist's --dist loadfile a long file handed out
    last would leave the other worker idle at the end (longest first packs the workers)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: False (slow) first


def _store_state() -> dict:
    """What the repository's own MLflow store looks like (tests must leave it exactly so)."""
    db = REPO / "results" / "mlflow.db"
    return {"<repo>/mlruns exists": (REPO / "mlruns").exists(),
            "<repo>/mlflow.db exists": (REPO / "mlflow.db").exists(),
            "results/mlflow.db": (db.stat().st_size, db.stat().st_mtime_ns) if db.exists() else None,
            "results/mlruns entries": sorted(p.name for p in (REPO / "results" / "mlruns").glob("*/*"))}


@pytest.fixture(scope="session", autouse=True)
def isolated_mlflow_store(tmp_path_factory):
    """Every test talks to a scratch store unless it sets its own: never the repository's.

    Fails the session (an error at teardown) if the repository's store or ``<repo>/mlruns`` changed.
    """
    before = _store_state()
    root = tmp_path_factory.mktemp("mlflow-session")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    yield
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old
    after = _store_state()
    assert after == before, f"the test suite wrote into the repository's MLflow store: {before} -> {after}"


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
    from reid.data.transforms import compute_mean_image
    from reid.files.mean_image import write_mean_image

    root = tmp_path_factory.mktemp("tiny") / "data"
    synthesize(root, **TINY_SYNTHETIC)
    mean = root.parent / "mean_image.pt"
    write_mean_image(compute_mean_image([r.path for r in scan_split(root / TRAIN_DIR)]), mean)
    return root, mean
