"""workflow/rules/report.smk: Table 2 builds on its own through Snakemake and `python -m reid`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")


@pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")
def test_table2_rule_builds_from_metrics_only(tmp_path):
    for model, r1 in (("baseline", 0.25), ("mutual", 0.375)):
        d = tmp_path / "results" / "synthetic" / model / "seed0"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "dataset": "synthetic", "model": model, "seed": 0, "mlflow_run_id": f"run-{model}",
            "rank1": r1, "mAP": r1 / 2, "mAP_trapezoid": r1 / 2 - 0.01, "cmc": [r1] * 50}))
    # only the report rules, on the project's own config: nothing upstream is needed for table2
    (tmp_path / "Snakefile").write_text(
        f'configfile: "{REPO / "config.yaml"}"\n'
        f'include: "{REPO / "workflow" / "rules" / "report_helpers.smk"}"\n'
        f'include: "{REPO / "workflow" / "rules" / "report.smk"}"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run([SNAKEMAKE, "--cores", "1", "--snakefile", "Snakefile", "results/tables/table2.md"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    md = (tmp_path / "results" / "tables" / "table2.md").read_text()
    assert "| ResNet-18 + mutual attention" in md and "37.50" in md and "run-baseline" in md
    assert (tmp_path / "results" / "tables" / "table2.html").is_file()
    assert (tmp_path / "results" / "logs" / "report" / "table2.log").is_file()
