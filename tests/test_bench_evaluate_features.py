"""benchmarks/bench_evaluate_features.py: its exact-agreement check runs end to end and can fail."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_evaluate_features.py"


def _module():
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_evaluate_features", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_scale_agrees_with_the_evaluate_stage():
    proc = subprocess.run([sys.executable, str(BENCH), "--scale", "tiny", "--dim", "16", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "evaluate-features  wall" in proc.stdout and "evaluate (stage)   wall" in proc.stdout
    assert "identical to the evaluate stage's" in proc.stdout


def test_compare_names_what_differs(tmp_path):
    bench = _module()
    record = {"rank1": 0.5, "rerank/mAP": 0.25, "cmc": [0.5, 1.0], "ci95": {"rank1": [0.4, 0.6]},
              "features": "a.npz", "flip_test": None}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(record))
        (tmp_path / name / "per_query.csv").write_text("protocol,query\nsingle,q0\n")
    assert bench.compare(tmp_path / "a", tmp_path / "b") == []
    # provenance may differ (the stage knows the model, another tool's file does not) ...
    (tmp_path / "b" / "metrics.json").write_text(json.dumps({**record, "features": "b.pt", "flip_test": False}))
    assert bench.compare(tmp_path / "a", tmp_path / "b") == []
    # ... a number, an interval bound or a per-query row may not
    changed = {**record, "rerank/mAP": 0.25000000000000006, "ci95": {"rank1": [0.4, 0.61]}}
    (tmp_path / "b" / "metrics.json").write_text(json.dumps(changed))
    (tmp_path / "b" / "per_query.csv").write_text("protocol,query\nsingle,q1\n")
    assert bench.compare(tmp_path / "a", tmp_path / "b") == ["ci95", "rerank/mAP", "per_query.csv"]
