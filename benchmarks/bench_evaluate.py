"""Benchmark of the whole evaluate stage (`reid.evaluate.compute_metrics`) at dataset scale.

    python benchmarks/bench_evaluate.py --scale market              # every protocol, Market-1501 size
    python benchmarks/bench_evaluate.py --scale msmt17 --protocols single   # plain + re-ranked single query

Market-1501 scale: 3,368 queries x 15,913 gallery images, 512-d, about 17,000 gt_bbox (multi-query)
images, every protocol (single query, multi-query mean and max, each plain and re-ranked).
MSMT17 scale: 11,659 queries x 82,161 gallery images, no gt_bbox images.

The features are random but clustered like a re-ID test set (see bench_metrics.market_like), with
one query per identity and camera as in Market-1501's protocol. The
parent process writes them once as a features.pt file; every measurement runs in a fresh
subprocess that loads that file as the pipeline's evaluate stage does, then resets the kernel's
peak-RSS counter, so "peak RSS beyond the features" is the stage's own working memory. Wall time,
CPU time (user + sys, all threads) and a digest of the metrics (to compare code versions) are
printed. `--reid-from DIR` measures the `reid` package of another checkout (e.g. an older commit
made with `git worktree add`), to compare versions on the same features. `--profile N` prints the
N most expensive functions with their callees (cProfile, cumulative): the phases below.

Measured (2 threads, nothing else running, session 5): Market-1501 scale every protocol 6.71-7.40 s
wall over five runs (median 6.90 s; 13.3-14.7 s CPU), 508-569 MiB beyond the features; MSMT17 scale
plain + re-ranked 55.6 s, 1,101 MiB. Session 3 and 4: 10.40-12.22 s and 75.2 s, 1,398 MiB.

Where the time goes at Market-1501 scale (session 5, cProfile at 2 threads, wall seconds, 6.8 s
in all):
  - matrix products 2.0 s, each made once: the gallery-to-gallery products (the span pairs on and
    above the diagonal; the multi-query protocols rank the same unit-length gallery, so there is
    one search for all six protocols) and per protocol one queries x queries and one queries x
    gallery product, which the plain protocol shares with its re-ranked form (the same arithmetic
    as `squared_euclidean_distance`);
  - the running k-nearest selection (`absorb`, mostly topk) 1.0 s, and the transposed blocks it
    needs 0.4 s;
  - ranking the true matches (`match_ranks`) 0.8 s for the six protocols, most of it the
    multi-query max protocols, whose pooled features leave many gallery images before the last match;
  - the Jaccard distances 0.8 s, the k-reciprocal encoding 0.65 s, local query expansion 0.2 s;
  - pooling and normalising 0.2 s.
"""

from __future__ import annotations

import argparse
import hashlib
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
from bench_metrics import market_like  # noqa: E402

SCALES = {
    # queries, gallery, identities, cameras, distractors, junk, gt_bbox images
    "market": dict(queries=3368, gallery=15913, ids=751, cameras=6, distractors=2793, junk=3819,
                   multi_query=17000),
    "msmt17": dict(queries=11659, gallery=82161, ids=3060, cameras=15, distractors=0, junk=0,
                   multi_query=0),
    "tiny": dict(queries=60, gallery=400, ids=30, cameras=4, distractors=30, junk=30, multi_query=120),  # tests
}
RERANK = {"k1": 20, "k2": 6, "lambda": 0.3}


def make_features(scale: dict, dim: int, seed: int) -> dict:
    import torch

    s = dict(scale)
    n_mq = s.pop("multi_query")
    s["distractors"] = s["distractors"] or 0
    qf, gf, qp, gp, qc, gc = market_like(seed, s["queries"], s["gallery"], dim, s["ids"], s["cameras"],
                                         s["distractors"], s["junk"], exact_counts=True,
                                         one_query_per_camera=True)
    feats = {"query_feats": torch.from_numpy(qf), "gallery_feats": torch.from_numpy(gf),
             "query_pids": torch.from_numpy(qp), "gallery_pids": torch.from_numpy(gp),
             "query_camids": torch.from_numpy(qc), "gallery_camids": torch.from_numpy(gc),
             "query_paths": [f"q{i}.jpg" for i in range(len(qp))],
             "gallery_paths": [f"g{i}.jpg" for i in range(len(gp))], "meta": {"flip": "false"}}
    if n_mq:
        # gt_bbox images: other views of each query's person in the query's camera, near the query
        rng = np.random.default_rng(seed + 1)
        owner = rng.integers(0, len(qp), n_mq)
        mf = qf[owner] + 0.8 * rng.standard_normal((n_mq, dim)).astype(np.float32) / np.sqrt(dim)
        mf /= np.linalg.norm(mf, axis=1, keepdims=True)
        feats.update(mq_feats=torch.from_numpy(mf.astype(np.float32)), mq_pids=torch.from_numpy(qp[owner]),
                     mq_camids=torch.from_numpy(qc[owner]), mq_paths=[f"m{i}.jpg" for i in range(n_mq)])
    return feats


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(args) -> None:
    """Child process: load the features file, run the evaluate stage, print one JSON line."""
    sys.path.insert(0, str(Path(args.reid_from).resolve()))
    import torch

    import reid
    from reid.evaluate import compute_metrics
    from reid.files import load_features

    print(f"reid from {Path(reid.__file__).parent}", file=sys.stderr)

    torch.set_num_threads(args.threads)
    feats = load_features(args.features)
    if args.protocols == "single":
        for key in [k for k in feats if k.startswith("mq_")]:
            del feats[key]
    loaded = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
    kwargs = {} if args.memory_gb is None else {"memory_gb": args.memory_gb}
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = compute_metrics(feats, max_rank=50, rerank=RERANK, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if profile is not None:
        import pstats

        profile.disable()
        pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(args.profile)
    peak = _rss_kib("VmHWM")
    metrics.pop("per_query", None)
    digest = hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest()[:16]
    if args.metrics_out:
        Path(args.metrics_out).write_text(json.dumps(metrics, indent=1, sort_keys=True))
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_loaded_mib": loaded / 1024,
                      "peak_beyond_loaded_mib": (peak - loaded) / 1024, "metrics_sha256": digest,
                      "rank1": metrics["rank1"], "mAP": metrics["mAP"],
                      "rerank/mAP": metrics["rerank/mAP"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="market")
    ap.add_argument("--protocols", choices=["all", "single"], default="all",
                    help="all: every protocol the stage runs; single: single query, plain and re-ranked")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-gb", type=float, default=None,
                    help="compute_metrics' working-memory budget (default: the stage's default)")
    ap.add_argument("--repeat", type=int, default=1, help="measurements (fresh processes)")
    ap.add_argument("--metrics-out", help="write the metrics of the last run here (JSON)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also print cProfile's N most expensive functions (time including their callees: the phases) of each run")
    ap.add_argument("--reid-from", default=str(ROOT.parent), help="checkout whose reid package to measure")
    ap.add_argument("--features", help=argparse.SUPPRESS)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure(args)
        return
    feats = make_features(SCALES[args.scale], args.dim, args.seed)
    n_mq = len(feats.get("mq_feats", []))
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.pt"
        torch.save(feats, path)
        del feats
        print(f"# {args.scale}: {SCALES[args.scale]['queries']} queries x {SCALES[args.scale]['gallery']} "
              f"gallery, {args.dim}-d, {n_mq if args.protocols == 'all' else 0} gt_bbox; protocols "
              f"{args.protocols}; {args.threads} threads; features file {path.stat().st_size / 2**20:.0f} MiB")
        cmd = [sys.executable, __file__, "--measure", "--features", str(path), "--protocols", args.protocols,
               "--threads", str(args.threads), "--reid-from", args.reid_from]
        cmd += [] if args.memory_gb is None else ["--memory-gb", str(args.memory_gb)]
        cmd += [] if not args.metrics_out else ["--metrics-out", args.metrics_out]
        cmd += [] if not args.profile else ["--profile", str(args.profile)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        for _ in range(args.repeat):
            res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if res.returncode != 0:
                print(f"FAILED\n{res.stderr[-3000:]}")
                sys.exit(1)
            rep = json.loads(res.stdout.strip().splitlines()[-1])
            print(res.stderr.strip() if args.profile else res.stderr.strip().splitlines()[-1])
            print(f"wall {rep['wall_s']:7.2f} s   cpu {rep['cpu_s']:7.2f} s   peak RSS beyond the loaded "
                  f"features {rep['peak_beyond_loaded_mib']:7.0f} MiB (features loaded: "
                  f"{rep['rss_loaded_mib']:.0f} MiB)   metrics {rep['metrics_sha256']}  "
                  f"rank1 {rep['rank1']:.4f} mAP {rep['mAP']:.4f} rerank/mAP {rep['rerank/mAP']:.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
