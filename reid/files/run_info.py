"""run.json, written by ``reid train``: its writer and its checking loader."""

from __future__ import annotations

import re
from pathlib import Path

from reid import io
from reid.files.base import check, load_json, require

# MLflow run ids are uuid4 hex strings (32 lowercase hex digits).
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")

RUN_INFO_KEYS = ("dataset", "model", "seed", "config_hash")  # what every run.json records


def load_run_info(path: str | Path) -> dict:
    """run.json as written by ``reid train``: the trained model's provenance, a JSON object with at
    least RUN_INFO_KEYS (``seed`` an integer), ``git_commit`` and ``tracking``; ``mlflow_run_id``
    (32 hex digits) and ``logged_model_id`` when MLflow recorded the run. Raises as load_json."""
    path = Path(path)
    value = load_json(path, "run_info")
    require(value, RUN_INFO_KEYS, path, "run_info")
    check(isinstance(value["seed"], int) and not isinstance(value["seed"], bool), path, "run_info",
           f"seed is {value['seed']!r}, not an integer")
    if "mlflow_run_id" in value:
        run_id = value["mlflow_run_id"]
        check(isinstance(run_id, str) and bool(_RUN_ID.match(run_id)), path, "run_info",
               f"mlflow_run_id is {str(run_id)[:40]!r}, which is not an MLflow run id (32 hex digits)")
    return value


def write_run_info(path: str | Path, *, dataset: str, model: str, seed: int, config_hash: str, git_commit: str,
                   tracking: str, reading: str | None, provenance: dict) -> Path:
    """run.json (RUN_INFO_KEYS, ``git_commit``, ``tracking`` (the tracker's kind), ``reading`` when the model
    is a reading's, then the tracker's ``provenance``: mlflow_run_id, logged_model_id, ...), atomically."""
    return io.write_json(path, {"dataset": dataset, "model": model, "seed": seed, "config_hash": config_hash,
                                "git_commit": git_commit, "tracking": tracking,
                                **({"reading": reading} if reading else {}), **provenance})
