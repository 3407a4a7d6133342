"""Tracking as a plug-in; the only package that talks to MLflow.

- ``base``: the abstract :class:`Tracker` / :class:`TrainingRun` interface the stages report to;
- ``null``: :class:`NullTracker` (config ``mlflow.enabled: false``): records nothing, needs no store,
  never imports mlflow;
- ``mlflow_tracker`` / ``mlflow_store``: :class:`MlflowTracker`, recording into one store through
  its own client (what goes where: reid.tracking.mlflow_store), nothing twice for the same training;
- ``deferred``: a training keeps going when the store fails; what could not be recorded is kept and
  replayed;
- ``provenance``: git commit, source and environment tags, the training identity (no tracker needed);
- ``environment``: the tracking URI, the job environment the Snakefile sets, the server check, the
  store's one-time set-up.

Importing this package imports neither mlflow nor torch (the Snakefile imports it).
"""

from __future__ import annotations

import os

from reid.tracking.base import Tracker, TrackingError, TrainingRun
from reid.tracking.environment import (DEFAULT_STORE, TRACKING_ENV, artifact_root, check_server, experiment_name,
                                       init_store, job_environment, tracking_uri)
from reid.tracking.mlflow_store import MlflowStore, mlflow_metrics
from reid.tracking.mlflow_tracker import MlflowTracker
from reid.tracking.null import NullTracker
from reid.tracking.provenance import git_commit, training_identity

TRACKERS = ("mlflow", "none")

__all__ = ["DEFAULT_STORE", "TRACKERS", "TRACKING_ENV", "MlflowStore", "MlflowTracker", "NullTracker", "Tracker",
           "TrackingError", "TrainingRun", "artifact_root", "check_server", "experiment_name", "git_commit",
           "init_store", "job_environment", "make_tracker", "mlflow_metrics", "training_identity", "tracking_uri"]


def make_tracker(kind: str | None = None, experiment_prefix: str | None = None, uri: str | None = None) -> Tracker:
    """The tracker ``kind`` (``mlflow`` or ``none``; default: $REID_TRACKING, else ``mlflow``).

    The MLflow experiment prefix defaults to $REID_EXPERIMENT_PREFIX, else the schema's default; the
    URI as :func:`tracking_uri`. Raises ValueError for another kind.
    """
    kind = kind or os.environ.get(TRACKING_ENV) or "mlflow"
    if kind == "none":
        return NullTracker()
    if kind == "mlflow":
        if experiment_prefix is None:
            from reid.config import schema_default

            experiment_prefix = os.environ.get("REID_EXPERIMENT_PREFIX") or schema_default("mlflow.experiment_prefix")
        return MlflowTracker(experiment_prefix, uri)
    raise ValueError(f"tracker {kind!r} is unknown; choose one of {', '.join(TRACKERS)} "
                     f"(config mlflow.enabled, or ${TRACKING_ENV})")
