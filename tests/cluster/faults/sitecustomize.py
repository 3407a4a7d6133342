"""Fault injection for tests/cluster/run.sh, kept out of the package: run.sh puts this folder on the
jobs' PYTHONPATH, and Python imports ``sitecustomize`` at start-up.

With ``REID_FAIL_ONCE=<marker file>`` set, the first training job that writes a checkpoint while the
marker does not exist writes the marker and fails with InjectedFailure (after its MLflow run is open,
so the run is marked FAILED); the retry finds the marker and trains normally.

With ``REID_SLOW_EPOCH_S=<seconds>`` set, every checkpoint write first waits that long: each epoch
then lasts long enough for run.sh to requeue the job, or for a one-minute time limit to end it,
in the middle of an epoch (after the epoch's work, before its checkpoint). Waiting changes no number.
Without either variable this file does nothing.
"""

import importlib.abc
import importlib.util
import os
import sys
import time
from pathlib import Path


class InjectedFailure(RuntimeError):
    """The failure injected once by REID_FAIL_ONCE."""


def _patch(module) -> None:
    original = module.Checkpointer.save

    def save(self, state):
        time.sleep(float(os.environ.get("REID_SLOW_EPOCH_S") or 0))
        path = original(self, state)
        if not os.environ.get("REID_FAIL_ONCE"):
            return path
        marker = Path(os.environ["REID_FAIL_ONCE"])
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("failure injected once by REID_FAIL_ONCE\n")
            raise InjectedFailure(f"REID_FAIL_ONCE: injected failure (marker {marker} written; a retry passes)")
        return path

    module.Checkpointer.save = save


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches reid.checkpoint right after it is first imported, in whatever process imports it."""

    def find_spec(self, name, path=None, target=None):
        if name != "reid.checkpoint":
            return None
        sys.meta_path.remove(self)  # find the real module without coming back here
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("REID_FAIL_ONCE") or os.environ.get("REID_SLOW_EPOCH_S"):
    sys.meta_path.insert(0, _PatchOnImport())
