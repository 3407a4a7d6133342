"""Logging the finished tables and figures to the MLflow runs they came from (via reid.tracking)."""

from __future__ import annotations

import json
from pathlib import Path

from reid import io
from reid.report.runs import ReportInputError


def log_report_artifacts(run_info_files: list[Path], files: list[Path], done: Path,
                         artifact_path: str = "report") -> dict[str, list[str]]:
    """Attach every file to the MLflow run of every run.json; write ``done`` (JSON: run id -> artifact names)
    as the rule's output. Raises ReportInputError for a missing file, reid.tracking.TrackingError for a
    run.json without an MLflow run (trained with ``mlflow.enabled: false``)."""
    from reid import tracking
    from reid.files import load_run_info

    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise ReportInputError(f"report files to log are missing: {', '.join(missing)}")
    tracker = tracking.make_tracker("mlflow")
    logged = tracker.log_report([load_run_info(p) for p in run_info_files], [Path(f) for f in files],
                                artifact_path=artifact_path)
    done = Path(done)
    io.write_text(done, json.dumps({"tracking_uri": tracker.uri, "artifacts": logged}, indent=2) + "\n")
    print(f"logged {len(files)} file(s) to {len(logged)} run(s): {', '.join(logged)}")
    return logged
