"""docs/extending.md's worked example "A metric", as a user runs it: a module outside ``reid/``
(tests/extending/reid_metric_plugin.py, loaded through ``REID_PLUGINS`` as the Snakefile passes
config ``plugins:`` to its jobs) registers R-precision; ``reid evaluate`` then writes it, with its
identity-bootstrap interval, to metrics.json and per_query.csv, and ``reid table1`` lists it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLUGIN = json.dumps({"plugins": ["reid_metric_plugin"], "custom_models": {}})


def features(path: Path) -> dict:
    """A small problem with junk, distractors, several cameras and gt_bbox (multi-query) images."""
    rng = np.random.default_rng(0)
    ids, dim = 10, 8
    centres = rng.normal(size=(ids + 1, dim))

    def split(pids):
        f = centres[np.maximum(pids, 0)] + 0.9 * rng.normal(size=(len(pids), dim))
        return torch.tensor(f / np.linalg.norm(f, axis=1, keepdims=True), dtype=torch.float32)

    qp = np.repeat(np.arange(1, ids + 1), 2)
    gp = np.concatenate([np.repeat(np.arange(1, ids + 1), 5), np.zeros(8, int), -np.ones(4, int)])
    mp = np.repeat(np.arange(1, ids + 1), 3)
    qc, gc, mc = (rng.integers(1, 4, len(p)) for p in (qp, gp, mp))
    blob = {"query_feats": split(qp), "gallery_feats": split(gp), "mq_feats": split(mp),
            "query_pids": torch.tensor(qp), "gallery_pids": torch.tensor(gp), "mq_pids": torch.tensor(mp),
            "query_camids": torch.tensor(qc), "gallery_camids": torch.tensor(gc), "mq_camids": torch.tensor(mc),
            "query_paths": [f"data/query/{i:04d}_c{c}.jpg" for i, c in enumerate(qc)],
            "meta": {"variant": "mutual", "dataset": "synthetic", "seed": "0", "flip": "false"}}
    torch.save(blob, path)
    return blob


def brute_force_r_precision(blob: dict) -> float:
    """Mean R-precision of the single-query protocol, query by query with plain numpy."""
    q, g = blob["query_feats"].double().numpy(), blob["gallery_feats"].double().numpy()
    qp, gp = blob["query_pids"].numpy(), blob["gallery_pids"].numpy()
    qc, gc = blob["query_camids"].numpy(), blob["gallery_camids"].numpy()
    values = []
    for i in range(len(q)):
        keep = (gp != -1) & ~((gp == qp[i]) & (gc == qc[i]))
        order = np.argsort(np.linalg.norm(g - q[i], axis=1)[keep], kind="stable")
        good = (gp[keep] == qp[i])[order]
        m = int(good.sum())
        if m:
            values.append(good[:m].sum() / m)
    return float(np.mean(values))


def reid(*args: str, cwd: Path, plugin: bool = True) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), "OMP_NUM_THREADS": "1"}
    env.pop("REID_PLUGINS", None)
    if plugin:
        env["REID_PLUGINS"] = PLUGIN
    proc = subprocess.run([sys.executable, "-m", "reid", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def evaluate(tmp_path: Path, name: str, plugin: bool) -> tuple[dict, list[dict]]:
    out = tmp_path / name
    out.mkdir()
    reid("evaluate", "--features", str(tmp_path / "features.pt"), "--max-rank", "20",
         "--rerank", '{"k1": 6, "k2": 3, "lambda": 0.3}', "--bootstrap", '{"resamples": 300, "seed": 0}',
         "--out", str(out / "metrics.json"), "--per-query-out", str(out / "per_query.csv"), cwd=tmp_path, plugin=plugin)
    with open(out / "per_query.csv", newline="") as f:
        return json.loads((out / "metrics.json").read_text()), list(csv.DictReader(f))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metric")
    blob = features(tmp / "features.pt")
    return tmp, blob, evaluate(tmp, "with", plugin=True), evaluate(tmp, "without", plugin=False)


def test_the_metric_is_in_metrics_json_and_per_query_csv_with_its_interval(evaluated):
    _, blob, (metrics, rows), _ = evaluated
    protocols = ["single", "rerank", "multi_query_mean", "multi_query_mean/rerank", "multi_query_max",
                 "multi_query_max/rerank"]
    assert list(rows[0])[-1] == "r_precision"
    for protocol in protocols:
        key = "r_precision" if protocol == "single" else f"{protocol}/r_precision"
        mine = [r for r in rows if r["protocol"] == protocol]
        values = [float(r["r_precision"]) for r in mine if r["first_match_rank"]]
        assert len(values) == len([r for r in mine if r["ap"]]) > 0
        assert all(r["r_precision"] == "" for r in mine if not r["first_match_rank"])
        assert metrics[key] == np.mean(values)  # the rows' mean, as every metric
        low, high = metrics["ci95"][key]
        assert 0.0 <= low <= metrics[key] <= high <= 1.0 and low < high
    assert metrics["r_precision"] == pytest.approx(brute_force_r_precision(blob), abs=1e-12)


def test_registering_a_metric_moves_no_other_number(evaluated):
    tmp, _, (metrics, rows), (plain, plain_rows) = evaluated
    added = {k for k in metrics if k.endswith("r_precision")}
    assert len(added) == 6 and not any(k.endswith("r_precision") for k in plain)
    # per_query_sha256 is the digest of per_query.csv, which gains the metric's column
    assert {k: v for k, v in metrics.items() if k not in added | {"ci95", "features", "per_query_sha256"}} == \
        {k: v for k, v in plain.items() if k not in ("ci95", "features", "per_query_sha256")}
    assert {k: v for k, v in metrics["ci95"].items() if k not in added} == plain["ci95"]
    assert [{k: v for k, v in r.items() if k != "r_precision"} for r in rows] == plain_rows


def test_table1_lists_the_metric_with_its_interval(evaluated):
    tmp, _, (metrics, _), _ = evaluated
    reid("table1", "--metrics", str(tmp / "with" / "metrics.json"), "--datasets", "synthetic",
         "--dataset-specs", '{"synthetic": {"source": "synthetic"}}', "--out", str(tmp / "table1.md"), cwd=tmp)
    lines = [line for line in (tmp / "table1.md").read_text().splitlines() if "| R-precision" in line]
    low, high = metrics["ci95"]["rerank/r_precision"]
    expected = f"{100 * metrics['rerank/r_precision']:.2f} [{100 * low:.2f}, {100 * high:.2f}]"
    assert any("single query + re-ranking" in line and expected in line for line in lines), lines
    assert len(lines) == 5  # one per protocol of Table 1


def test_the_documented_example_is_the_module_this_test_runs():
    doc = (ROOT / "docs" / "extending.md").read_text()
    section = doc.split("\n## A metric\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.strip() and code.strip() in (HERE / "reid_metric_plugin.py").read_text()
