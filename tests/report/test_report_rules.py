"""workflow/rules/report.smk: comparisons.json and Table 2 build on their own through Snakemake and `python -m reid`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reid.metrics import uncertainty as U

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")


@pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")
def test_table2_rule_builds_from_the_evaluate_outputs_only(tmp_path):
    for model, hits in (("baseline", 2), ("mutual", 3)):
        d = tmp_path / "results" / "synthetic" / model / "seed0"
        d.mkdir(parents=True)
        fmr = np.array([1] * hits + [4] * (8 - hits))  # 8 queries of 4 identities
        cols = {"first_match_rank": fmr, "ap": 1.0 / fmr, "ap_trapezoid": 0.9 / fmr, "inp": 0.5 / fmr}
        table = U.per_query_table({"single": cols}, [f"query/{i}.jpg" for i in range(8)], [1, 1, 2, 2, 3, 3, 4, 4],
                                  [1, 2] * 4)
        (d / "per_query.csv").write_text(U.per_query_csv(table))
        (d / "metrics.json").write_text(json.dumps({
            "dataset": "synthetic", "model": model, "seed": 0, "mlflow_run_id": f"run-{model}",
            **U.estimates(table), "cmc": [hits / 8] * 50}))
    # only the report rules, on the project's own config: nothing upstream is needed for table2
    (tmp_path / "Snakefile").write_text(
        f'configfile: "{REPO / "config.yaml"}"\n'
        f'include: "{REPO / "workflow" / "rules" / "common.smk"}"\n'
        f'include: "{REPO / "workflow" / "rules" / "report_helpers.smk"}"\n'
        f'include: "{REPO / "workflow" / "rules" / "report.smk"}"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run([SNAKEMAKE, "--cores", "1", "--snakefile", "Snakefile", "results/tables/table2.md"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    md = (tmp_path / "results" / "tables" / "table2.md").read_text()
    assert "| ResNet-18 + mutual attention" in md and "| 37.50 [" in md and "run-baseline" in md
    assert "no significant difference at 95%" in md  # 8 queries: nothing is significant
    assert (tmp_path / "results" / "synthetic" / "comparisons.json").is_file()
    assert (tmp_path / "results" / "tables" / "table2.html").is_file()
    assert (tmp_path / "results" / "logs" / "report" / "table2.log").is_file()
