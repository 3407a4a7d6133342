"""The fault injection that tests/cluster/run.sh installs for its jobs (tests/cluster/faults/)."""

import os
import subprocess
import sys
from pathlib import Path

FAULTS = Path(__file__).resolve().parent / "faults"
ROOT = Path(__file__).resolve().parents[2]

SAVE_ONE = """
import sys, torch
from reid.checkpoint import Checkpointer
Checkpointer(sys.argv[1], key="k", epochs=3).save({"model": {}, "optimizer": {}, "epoch": 0,
    "rng_cpu": torch.get_rng_state(), "history": []})
print("saved")
"""


def save_once(tmp_path, **env):
    return subprocess.run([sys.executable, "-c", SAVE_ONE, str(tmp_path / "ckpt")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{FAULTS}{os.pathsep}{ROOT}", **env})


def test_the_first_checkpoint_write_fails_once_and_the_retry_passes(tmp_path):
    marker = tmp_path / "marker"
    first = save_once(tmp_path, REID_FAIL_ONCE=str(marker))
    assert first.returncode != 0 and "InjectedFailure: REID_FAIL_ONCE: injected failure" in first.stderr
    assert marker.exists() and (tmp_path / "ckpt" / "last.pt").exists()  # fails after the checkpoint is written
    retry = save_once(tmp_path, REID_FAIL_ONCE=str(marker))
    assert retry.returncode == 0 and "saved" in retry.stdout, retry.stderr


def test_without_the_variable_nothing_is_injected(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REID_FAIL_ONCE"}
    proc = subprocess.run([sys.executable, "-c", SAVE_ONE, str(tmp_path / "ckpt")], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": f"{FAULTS}{os.pathsep}{ROOT}"})
    assert proc.returncode == 0, proc.stderr


def test_a_slow_epoch_waits_before_its_checkpoint_and_fails_nothing(tmp_path):
    import time

    env = {k: v for k, v in os.environ.items() if k != "REID_FAIL_ONCE"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SAVE_ONE, str(tmp_path / "ckpt")], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": f"{FAULTS}{os.pathsep}{ROOT}", "REID_SLOW_EPOCH_S": "2"})
    assert proc.returncode == 0 and "saved" in proc.stdout, proc.stderr
    assert time.monotonic() - t0 >= 2 and (tmp_path / "ckpt" / "last.pt").exists()
