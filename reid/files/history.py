"""history.csv, written by ``reid train``: its writer and its checking loader."""

from __future__ import annotations

import csv
import io as _stdio
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from reid import io
from reid.files.base import DamagedFileError, check, read_bytes


def load_history(path: str | Path, columns=("epoch", "loss_id", "loss_verif")) -> list[dict[str, float]]:
    """history.csv as written by ``reid train``: one row per epoch, every cell a number.

    ``columns`` must be present in the header. Returns the rows as dicts of floats (an empty cell
    becomes NaN). Raises as load_json, DamagedFileError naming the row and column of a bad cell.
    """
    path = Path(path)
    text = read_bytes(path, "history").decode("utf-8", errors="replace")
    rows = list(csv.DictReader(_stdio.StringIO(text, newline="")))
    if not rows:
        raise DamagedFileError(path, "history", "no epochs recorded")
    missing = [c for c in columns if c not in rows[0]]
    check(not missing, path, "history", f"missing column(s) {', '.join(missing)}")
    out = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        check(None not in row and all(v is not None for v in row.values()), path, "history",
               f"line {i} has a different number of cells from the header (cut short?)")
        parsed = {}
        for col, cell in row.items():
            try:
                parsed[col] = float(cell) if cell != "" else math.nan
            except ValueError:
                raise DamagedFileError(path, "history", f"line {i}, column {col}: {cell!r} is not a number") from None
        out.append(parsed)
    return out


def history_writer(history: list[dict], columns: Sequence[str]) -> Callable[[Path], None]:
    """A ``write(tmp)`` of history.csv for reid.io.commit_together: a header of ``columns``, then one row per
    epoch of ``history`` (each row a dict with at least ``columns``; reid.train's ``Training.columns``)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(columns))
            w.writeheader()
            for row in history:
                w.writerow({k: row[k] for k in columns})

    return write


def write_history(history: list[dict], path: str | Path, columns: Sequence[str]) -> Path:
    """history.csv (``columns``, one row per epoch), written atomically (reid.io.atomic_write)."""
    return io.atomic_write(path, history_writer(history, columns))
