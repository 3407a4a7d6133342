"""dataset.json, written by ``reid verify``: its writer and its checking loader."""

from __future__ import annotations

import json
from pathlib import Path

from reid import io
from reid.files.base import check, load_json, require


def load_dataset_report(path: str | Path) -> dict:
    """dataset.json as written by ``reid verify``: a JSON object with ``ok`` and ``splits``. Raises as load_json."""
    path = Path(path)
    value = load_json(path, "dataset_report")
    require(value, ("ok", "splits", "problems"), path, "dataset_report")
    check(isinstance(value["splits"], dict), path, "dataset_report", "splits is not an object")
    return value


def write_dataset_report(path: str | Path, report: dict) -> Path:
    """dataset.json (or a failed verification's ``dataset.failed.json``): ``report`` as indented JSON with
    sorted keys (values JSON cannot hold written as their ``str``), atomically (reid.io.write_text)."""
    return io.write_text(path, json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
