"""metrics.json and per_query.csv, written together by ``reid evaluate``: their writer and
their checking loaders (per_query.csv's rows are read by reid.metrics.uncertainty.read_per_query_csv)."""

from __future__ import annotations

from pathlib import Path

from reid import io
from reid.files.base import DamagedFileError, check, file_size, load_json, read_bytes, require


# the inputs every metrics.json records; mlflow_run_id too when MLflow recorded the training run
METRICS_KEYS = ("dataset", "model", "seed")


def load_metrics(path: str | Path) -> dict:
    """metrics.json as written by ``reid evaluate``: a JSON object with at least METRICS_KEYS.

    Numbers are checked by the report (reid.report.runs). Raises as load_json.
    """
    path = Path(path)
    value = load_json(path, "metrics")
    require(value, METRICS_KEYS, path, "metrics")
    return value


def text_sha256(text: str) -> str:
    """The sha256 (hex) of ``text`` as UTF-8: what metrics.json records of its per_query.csv."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_per_query(path: str | Path, metrics: dict | None = None, metrics_path: str | Path | None = None):
    """per_query.csv as written by ``reid evaluate``, parsed by reid.metrics.uncertainty.read_per_query_csv
    (which checks its header, every row's fields and numbers). Raises as load_json.

    ``metrics``: the metrics.json record (``metrics_path``: its file) the per-query rows belong to;
    when it records ``per_query_sha256`` (files written since the evaluate stage commits the two
    together) the file must have that digest, else DamagedFileError naming both files: a pair that
    is not one evaluation (half of it replaced by hand, or an interrupted copy).
    """
    from reid.metrics.uncertainty import read_per_query_csv

    path = Path(path)
    file_size(path, "per_query")
    expected = (metrics or {}).get("per_query_sha256")
    if expected is not None:
        actual = text_sha256(read_bytes(path, "per_query").decode("utf-8", errors="replace"))
        check(actual == expected, path, "per_query",
               f"it is not the per-query file of {metrics_path or 'its metrics.json'} (sha256 {actual[:12]}..., "
               f"metrics.json records {str(expected)[:12]}...): the two were not written by one evaluation")
    try:
        return read_per_query_csv(path)
    except ValueError as e:
        problem = str(e)
        for prefix in (f"{path}: ", f"{path}, "):  # the reader names the file itself; say it once
            if problem.startswith(prefix):
                problem = problem[len(prefix):]
        raise DamagedFileError(path, "per_query", problem) from None


def write_evaluation(metrics_path: str | Path, per_query_path: str | Path, record: dict, table) -> dict:
    """Write per_query.csv (``table``'s rows, reid.metrics.uncertainty.per_query_csv) and metrics.json
    (``record`` plus ``per_query_sha256``, the digest load_per_query checks) as one unit
    (reid.io.commit_together: both replaced, or neither; a failure leaves the previous pair in place).

    Returns the metrics.json record as written. Raises reid.io.WriteError naming the file not written.
    """
    from reid.metrics.uncertainty import per_query_csv  # the columns are the metric registry's

    per_query_text = per_query_csv(table)
    # which per_query.csv these numbers are the means of (load_per_query checks it)
    record = {**record, "per_query_sha256": text_sha256(per_query_text)}
    io.commit_together({Path(per_query_path): io.text_writer(per_query_text),
                        Path(metrics_path): io.json_writer(record)})
    return record
