"""comparisons.json, written by ``reid compare``: its writer and its checking loader."""

from __future__ import annotations

from pathlib import Path

from reid import io
from reid.files.base import load_json, require


COMPARISONS_KEYS = ("dataset", "models", "pairs", "bootstrap")


def load_comparisons(path: str | Path) -> dict:
    """comparisons.json as written by ``reid compare``: a JSON object with COMPARISONS_KEYS. Raises as load_json."""
    path = Path(path)
    value = load_json(path, "comparisons")
    require(value, COMPARISONS_KEYS, path, "comparisons")
    return value


def write_comparisons(path: str | Path, record: dict) -> Path:
    """comparisons.json: ``record`` as reid.report.comparisons.build makes it (COMPARISONS_KEYS), atomically.
    Raises ValueError naming a missing key before anything is written."""
    missing = [k for k in COMPARISONS_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: not written: the record lacks {', '.join(missing)}")
    return io.write_json(path, record)
