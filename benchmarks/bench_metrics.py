"""Benchmark of reid.metrics at Market-1501 scale (3368 queries x 15913 gallery, 512-d).

    python benchmarks/bench_metrics.py                    # evaluate_rank + re_ranking_features
    python benchmarks/bench_metrics.py --with-reference   # + the dense numpy reference (~8 GiB, minutes)

Features are random but clustered like a re-ID test set (751 identities seen by 6 cameras, 2793
distractors, 3819 junk images), so rankings, k-reciprocal sets and timings are realistic. Every
measurement runs in a fresh subprocess and reports wall time, CPU time (user + sys, all threads)
and peak resident memory (ru_maxrss). On a shared machine wall times are noisy: compare CPU times
too, and rerun. On an oversubscribed machine OpenMP's spin-waiting threads can make torch's
multi-threaded runs several times slower than one thread: use --threads 1, or set
OMP_WAIT_POLICY=PASSIVE in the environment.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------------------------
# data


def market_like(seed=0, queries=3368, gallery=15913, dim=512, ids=751, cameras=6, distractors=2793,
                junk=3819, signal=0.47, noise=1.0, exact_counts=False, one_query_per_camera=False):
    """Clustered unit-length features with Market-1501-like labels (counts scale with the gallery
    unless exact_counts). one_query_per_camera: at most one query per identity and camera, as in
    Market-1501's protocol (needs queries <= ids x cameras)."""
    if not exact_counts:
        scale = gallery / 15913
        ids, distractors, junk = (max(1, round(x * scale)) for x in (ids, distractors, junk))
    ids = min(ids, queries, gallery - distractors - junk)
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((ids + 1, dim)).astype(np.float32)
    cam_shift = 0.2 * rng.standard_normal((cameras + 1, dim)).astype(np.float32)
    n_true = gallery - distractors - junk
    g_pids = np.concatenate([np.arange(1, ids + 1), rng.integers(1, ids + 1, n_true - ids),
                             np.zeros(distractors, int), -np.ones(junk, int)])
    q_pids = np.concatenate([np.arange(1, ids + 1), rng.integers(1, ids + 1, queries - ids)])
    g_cams = rng.integers(1, cameras + 1, gallery)
    q_cams = rng.integers(1, cameras + 1, queries)
    if one_query_per_camera:  # identity i's queries take distinct cameras: slots of a permutation
        perm = np.argsort(rng.random((ids, cameras)), axis=1) + 1
        extra = rng.permutation(ids * (cameras - 1))[: queries - ids]
        slot_pid, slot = np.concatenate([np.arange(ids), extra // (cameras - 1)]), np.concatenate(
            [np.zeros(ids, int), extra % (cameras - 1) + 1])
        q_pids, q_cams = slot_pid + 1, perm[slot_pid, slot]

    def feats(pids, cams):
        base = signal * centre[np.maximum(pids, 0)]
        base[pids == 0] = signal * rng.standard_normal(((pids == 0).sum(), dim))  # distractors: other people
        x = base + cam_shift[cams] + noise * rng.standard_normal((len(pids), dim))
        x[pids == -1] = rng.standard_normal(((pids == -1).sum(), dim))  # junk: background
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return feats(q_pids, q_cams), feats(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


# ----------------------------------------------------------------------------------------------
# stages (each in its own process)


def _measure(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - t0, time.process_time() - c0


def _agreement(diff):
    return dict(max_abs_diff=float(diff.max()), entries_over_1e_5=float((diff > 1e-5).mean()))


def stage(name, args):
    import torch

    from reid.metrics import euclidean_distance, evaluate, re_ranking, re_ranking_features
    from reid.metrics.reference import dense_re_ranking

    if args.threads:
        torch.set_num_threads(args.threads)
    qf, gf, qp, gp, qc, gc = market_like(args.seed, args.queries, args.gallery, args.dim)
    report = {"stage": name, "torch_threads": torch.get_num_threads()}
    if name == "evaluate":
        dist, wall, cpu = _measure(lambda: euclidean_distance(qf, gf))
        report["euclidean_distance"] = dict(wall_s=wall, cpu_s=cpu)
        out, wall, cpu = _measure(lambda: evaluate(dist, qp, gp, qc, gc, max_rank=50))
        report["evaluate_rank"] = dict(wall_s=wall, cpu_s=cpu)
        report["metrics"] = dict(rank1=out["cmc"][0], mAP=out["mAP"], mAP_trapezoid=out["mAP_trapezoid"],
                                 mINP=out["mINP"])
        _, wall, cpu = _measure(lambda: np.argsort(dist, axis=1))
        report["np_argsort_rows"] = dict(wall_s=wall, cpu_s=cpu)
    elif name == "rerank":
        out, wall, cpu = _measure(lambda: re_ranking_features(qf, gf, 20, 6, 0.3))
        report["re_ranking_features"] = dict(wall_s=wall, cpu_s=cpu)
        m = evaluate(out, qp, gp, qc, gc, max_rank=50)
        report["metrics"] = dict(rank1=m["cmc"][0], mAP=m["mAP"], mAP_trapezoid=m["mAP_trapezoid"])
    elif name == "reference":
        qg, qq, gg = (euclidean_distance(a, b) for a, b in ((qf, gf), (qf, qf), (gf, gf)))
        kind = "stable" if args.stable_reference else "quicksort"
        # the authors' numpy algorithm (N x N float32 matrices, argsort of every row, per-row loops)
        ref, wall, cpu = _measure(lambda: dense_re_ranking(qg, qq, gg, dtype=np.float32, argsort_kind=kind))
        report["reference_argsort"] = kind
        report["dense_reference"] = dict(wall_s=wall, cpu_s=cpu)
        m = evaluate(ref, qp, gp, qc, gc, max_rank=50)
        report["metrics"] = dict(rank1=m["cmc"][0], mAP=m["mAP"], mAP_trapezoid=m["mAP_trapezoid"])
        # the same distance matrices through re_ranking: differences are float rounding only
        diff = np.abs(re_ranking(qg, qq, gg, 20, 6, 0.3) - ref)
        report["re_ranking_vs_reference"] = _agreement(diff)
        del qq, gg
        # from features: squared distances come from features directly, not from the rounded
        # plain distances, so a few exactly-near-tied neighbours can swap places at the k-th rank
        diff = np.abs(re_ranking_features(qf, gf, 20, 6, 0.3) - ref)
        report["re_ranking_features_vs_reference"] = _agreement(diff)
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=3368)
    ap.add_argument("--gallery", type=int, default=15913)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--with-reference", action="store_true",
                    help="also time the dense numpy reference re-ranking (needs ~8 GiB and minutes)")
    ap.add_argument("--stable-reference", action="store_true",
                    help="give the reference a stable argsort (ties by index, as reid.metrics) to "
                         "separate tie-breaking from other differences")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default). On an oversubscribed machine 1 is often "
                         "fastest: OpenMP threads spin-wait for each other")
    ap.add_argument("--stage", choices=["evaluate", "rerank", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        stage(args.stage, args)
        return
    stages = ["evaluate", "rerank"] + (["reference"] if args.with_reference else [])
    common = ["--queries", str(args.queries), "--gallery", str(args.gallery), "--dim", str(args.dim),
              "--seed", str(args.seed), "--threads", str(args.threads)]
    common += ["--stable-reference"] if args.stable_reference else []
    print(f"# {args.queries} queries x {args.gallery} gallery, {args.dim}-d; "
          f"wall / CPU seconds (CPU sums all threads); peak RSS per process")
    for name in stages:
        res = subprocess.run([sys.executable, __file__, "--stage", name, *common], capture_output=True,
                             text=True, check=False)
        if res.returncode != 0:
            print(f"{name}: FAILED\n{res.stderr[-3000:]}")
            continue
        rep = json.loads(res.stdout.strip().splitlines()[-1])
        for key, val in rep.items():
            if isinstance(val, dict) and "wall_s" in val:
                print(f"{key:28s} wall {val['wall_s']:8.2f} s   cpu {val['cpu_s']:8.2f} s")
        extras = {k: v for k, v in rep.items() if not (isinstance(v, dict) and "wall_s" in v)}
        print(f"{'':28s} {json.dumps(extras)}")


if __name__ == "__main__":
    main()
