"""Issue 11 kind 7 through Snakemake: a failed verification leaves its report readable, although
Snakemake deletes the failed job's declared outputs (dataset.json, mean_image.pt)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY = {"synthetic": {"train_ids": 3, "test_ids": 3, "cameras": 2, "cameras_per_id": [2, 2],
                      "images_per_camera": [2, 2], "distractors": 1, "junk": 1, "multi_query_images": [2, 2],
                      "height": 32, "width": 16}}


def test_failed_verify_rule_leaves_dataset_failed_json(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    def snakemake(*args):
        cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
               "--cores", "1", "results/synthetic/dataset.json", *args, "--configfile", str(tmp_path / "tiny.yaml")]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)

    assert snakemake().returncode == 0
    report, failed = tmp_path / "results/synthetic/dataset.json", tmp_path / "results/synthetic/dataset.failed.json"
    assert json.loads(report.read_text())["ok"] and not failed.exists()
    (tmp_path / "data/synthetic/query/notes.txt").write_text("my notes")
    proc = snakemake("--forcerun", "verify_dataset")
    assert proc.returncode != 0
    assert not report.exists()  # Snakemake removed the failed job's output ...
    written = json.loads(failed.read_text())  # ... the report of the failure is still there
    assert [m["path"] for m in written["malformed_names"]] == ["query/notes.txt"]
    log = (tmp_path / "results/logs/verify/synthetic.log").read_text()
    assert "query/notes.txt: malformed re-ID image name" in log and str(Path("results/synthetic/dataset.failed.json")) in log
    (tmp_path / "data/synthetic/query/notes.txt").unlink()
    assert snakemake().returncode == 0
    assert json.loads(report.read_text())["ok"] and not failed.exists()
