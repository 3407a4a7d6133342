"""comparisons.json, written by ``reid compare``: its checking loader."""

from __future__ import annotations

from pathlib import Path

from reid.files.base import load_json, require

COMPARISONS_KEYS = ("dataset", "models", "pairs", "bootstrap")


def load_comparisons(path: str | Path) -> dict:
    """comparisons.json as written by ``reid compare``: a JSON object with COMPARISONS_KEYS. Raises as load_json."""
    path = Path(path)
    value = load_json(path, "comparisons")
    require(value, COMPARISONS_KEYS, path, "comparisons")
    return value
