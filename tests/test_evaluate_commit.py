"""Issue 21 kind 3: the files a stage writes together are committed together, all or none.

`reid evaluate-features` re-run into an existing --out when the file-size limit (or a full disk)
hits between its two files must leave both old files, and say which file could not be written.
"""

import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

from reid import files


def features(path, seed, queries=4, gallery=60):
    """Few queries (a short per_query.csv), a gallery of 60 (50-entry CMC curves: a long metrics.json)."""
    rng = np.random.default_rng(seed)
    np.savez(path, query_features=rng.normal(size=(queries, 8)).astype(np.float32),
             gallery_features=rng.normal(size=(gallery, 8)).astype(np.float32),
             query_pids=np.arange(queries), gallery_pids=np.arange(gallery) % (2 * queries),
             query_camids=np.zeros(queries, int), gallery_camids=np.ones(gallery, int))
    return path


def evaluate_features(feats, out, limit=None):
    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an error, not a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "reid", "evaluate-features", str(feats), "--out", str(out),
                           "--bootstrap", '{"resamples": 50}', "--threads", "1"],
                          capture_output=True, text=True, env=env, cwd=out.parent,
                          preexec_fn=limited if limit else None)


def test_a_file_size_limit_between_the_two_files_leaves_both_old_files(tmp_path):
    out = tmp_path / "out"
    first = evaluate_features(features(tmp_path / "a.npz", 0), out)
    assert first.returncode == 0, first.stderr
    old = {name: (out / name).read_bytes() for name in ("metrics.json", "per_query.csv")}
    # per_query.csv (written first) fits under the limit, metrics.json does not
    limit = 2 * len(old["per_query.csv"])
    assert limit < len(old["metrics.json"])
    second = evaluate_features(features(tmp_path / "b.npz", 1), out, limit=limit)
    assert second.returncode == 1, second.stdout
    assert "could not write" in second.stderr and "metrics.json" in second.stderr
    assert "File too large" in second.stderr
    assert {name: (out / name).read_bytes() for name in old} == old
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_query.csv"]  # no temporaries left


def test_metrics_json_records_its_per_query_file_and_a_mixed_pair_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert evaluate_features(features(tmp_path / "a.npz", 0), a).returncode == 0
    assert evaluate_features(features(tmp_path / "b.npz", 1), b).returncode == 0
    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics["per_query_sha256"] == files.text_sha256((a / "per_query.csv").read_text())
    files.load_per_query(a / "per_query.csv", metrics, a / "metrics.json")  # its own: accepted
    with pytest.raises(files.DamagedFileError, match=r"not the per-query file of .*a/metrics.json"):
        files.load_per_query(b / "per_query.csv", metrics, a / "metrics.json")
