"""Logging the finished tables and figures to the MLflow runs they came from (via reid.tracking)."""

from __future__ import annotations

import json
from pathlib import Path

from reid import io
from reid.report.runs import ReportInputError


def log_report_artifacts(run_id_files: list[Path], files: list[Path], done: Path,
                         artifact_path: str = "report") -> dict[str, list[str]]:
    """Attach every file to every run; write ``done`` (JSON: run id -> artifact names) as the rule's output."""
    from reid import tracking

    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise ReportInputError(f"report files to log are missing: {', '.join(missing)}")
    run_ids = list(dict.fromkeys(tracking.read_run_id(p) for p in run_id_files))  # one upload per run
    tracking.log_artifacts(run_ids, [Path(f) for f in files], artifact_path=artifact_path)
    logged = {rid: [f"{artifact_path}/{Path(f).name}" for f in files] for rid in run_ids}
    done = Path(done)
    done.parent.mkdir(parents=True, exist_ok=True)
    io.write_text(done, json.dumps({"tracking_uri": tracking.tracking_uri(), "artifacts": logged}, indent=2) + "\n")
    print(f"logged {len(files)} file(s) to {len(run_ids)} run(s): {', '.join(run_ids)}")
    return logged
