"""Benchmark of `reid evaluate-features FILE --out DIR` end to end, checked against the evaluate stage.

    python benchmarks/bench_evaluate_features.py            # Market-1501 scale, re-ranking and intervals

Market-1501 scale: 3,368 queries x 15,913 gallery images, 512-d, 17,000 gt_bbox (multi-query)
images, the features of `bench_evaluate.make_features`. They are written twice: as another tool's
`.npz` (the keys `reid.external` reads) and as the pipeline's features.pt. Then, each in a fresh
process as a user runs them:

* `python -m reid evaluate-features FILE.npz --out DIR` (re-ranking with the config defaults
  k1 20, k2 6, lambda 0.3; 10,000 identity-bootstrap resamples), and
* `python -m reid evaluate --features features.pt ...` (the pipeline's evaluate stage, no MLflow
  run) with the same settings.

For each it prints the wall time from process start to exit (interpreter start, imports, loading,
every protocol, intervals, writing metrics.json and per_query.csv) and the process's peak
resident memory. It then checks that the two agree exactly: every number of metrics.json
(scalars, CMC curves, ci95 bounds, counts) is equal, and per_query.csv is byte for byte the same.
Exit status 1 if they differ.

Measured on the 2-core development machine, 2 threads, nothing else running (session 5):
  evaluate-features  9.41 s wall, 16.3 s CPU, peak RSS 1,105 MiB
  evaluate (stage)   9.69 s wall, 16.7 s CPU, peak RSS 1,114 MiB
  metrics.json numbers and per_query.csv identical.
(Session 4, idle: evaluate-features 13.72 s, the stage 14.56 s.) Per phase of evaluate-features
(session 4, CPU seconds): importing torch 1.4, reading the .npz 0.5, per-query table 0.02,
10,000-resample intervals of 42 keys 0.34, CSV text 0.07; the rest is the evaluate stage's
computation (`bench_evaluate.py`: 6.9 s wall in session 5).
mlflow, pandas and matplotlib are never imported. `--scale tiny` is the tests' smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_evaluate import RERANK, SCALES, make_features  # noqa: E402


def write_inputs(tmp: Path, scale: str, dim: int, seed: int) -> tuple[Path, Path]:
    """(the other tool's .npz, the pipeline's features.pt) holding the same features."""
    import torch

    feats = make_features(SCALES[scale], dim, seed)
    pt = tmp / "features.pt"
    torch.save(feats, pt)
    arrays = {"query_features": feats["query_feats"], "gallery_features": feats["gallery_feats"],
              "query_pids": feats["query_pids"], "gallery_pids": feats["gallery_pids"],
              "query_camids": feats["query_camids"], "gallery_camids": feats["gallery_camids"]}
    if "mq_feats" in feats:
        arrays.update(multi_query_features=feats["mq_feats"], multi_query_pids=feats["mq_pids"],
                      multi_query_camids=feats["mq_camids"])
    npz = tmp / "other_tool.npz"
    np.savez(npz, **{k: v.numpy() for k, v in arrays.items()}, query_names=np.array(feats["query_paths"]))
    return npz, pt


def timed(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """(wall s, user + sys CPU s, peak RSS MiB) of one child process, from start to exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(f"FAILED: {' '.join(cmd)}\n{out[-2000:]}\n{err[-3000:]}")
        sys.exit(1)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def compare(a_dir: Path, b_dir: Path) -> list[str]:
    """Differences between two evaluations' metrics.json numbers and per_query.csv (empty: same)."""
    a = json.loads((a_dir / "metrics.json").read_text())
    b = json.loads((b_dir / "metrics.json").read_text())
    provenance = {"dataset", "model", "seed", "config_hash", "features", "flip_test", "evaluate_config"}
    diffs = [k for k in sorted((set(a) | set(b)) - provenance) if a.get(k) != b.get(k)]
    if (a_dir / "per_query.csv").read_bytes() != (b_dir / "per_query.csv").read_bytes():
        diffs.append("per_query.csv")
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="market")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="measurements of each command (fresh processes)")
    ap.add_argument("--no-stage", action="store_true", help="skip the evaluate stage run and the comparison")
    args = ap.parse_args()
    rerank = json.dumps(RERANK)
    bootstrap = json.dumps({"resamples": 10000, "seed": 0})
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT.parent)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz, pt = write_inputs(tmp, args.scale, args.dim, args.seed)
        scale = SCALES[args.scale]
        print(f"# {args.scale}: {scale['queries']} queries x {scale['gallery']} gallery, {args.dim}-d, "
              f"{scale['multi_query']} gt_bbox; {args.threads} threads; .npz {npz.stat().st_size / 2**20:.0f} MiB")
        runs = {
            "evaluate-features": [sys.executable, "-m", "reid", "evaluate-features", str(npz), "--out",
                                  str(tmp / "features_out"), "--rerank", rerank, "--bootstrap", bootstrap,
                                  "--threads", str(args.threads)],
            "evaluate (stage)": [sys.executable, "-m", "reid", "evaluate", "--features", str(pt), "--max-rank", "50",
                                 "--rerank", rerank, "--bootstrap", bootstrap, "--threads", str(args.threads),
                                 "--out", str(tmp / "stage_out" / "metrics.json"),
                                 "--per-query-out", str(tmp / "stage_out" / "per_query.csv")],
        }
        if args.no_stage:
            del runs["evaluate (stage)"]
        for _ in range(args.repeat):
            for name, cmd in runs.items():
                wall, cpu, rss = timed(cmd, env)
                print(f"{name:18s} wall {wall:7.2f} s   cpu {cpu:7.2f} s   peak RSS {rss:7.0f} MiB   "
                      f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        if not args.no_stage:
            diffs = compare(tmp / "features_out", tmp / "stage_out")
            if diffs:
                print(f"DIFFERENT from the evaluate stage: {diffs}")
                sys.exit(1)
            print("metrics.json numbers and per_query.csv identical to the evaluate stage's")


if __name__ == "__main__":
    main()
