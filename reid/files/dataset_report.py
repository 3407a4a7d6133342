"""dataset.json, written by ``reid verify``: its checking loader."""

from __future__ import annotations

from pathlib import Path

from reid.files.base import check, load_json, require

def load_dataset_report(path: str | Path) -> dict:
    """dataset.json as written by ``reid verify``: a JSON object with ``ok`` and ``splits``. Raises as load_json."""
    path = Path(path)
    value = load_json(path, "dataset_report")
    require(value, ("ok", "splits", "problems"), path, "dataset_report")
    check(isinstance(value["splits"], dict), path, "dataset_report", "splits is not an object")
    return value
