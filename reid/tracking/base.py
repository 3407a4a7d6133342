"""The tracker interface the stages report to (abstract: a backend that leaves out a method cannot be
built), and the error every tracker raises.

A stage never talks to a store itself: the training stage opens a :class:`TrainingRun` through
:meth:`Tracker.start_training` and calls it after every epoch and once trained; the evaluate stage
calls :meth:`Tracker.log_evaluation`, the report :meth:`Tracker.log_report`. What a stage's result is
and where it came from travels in the stage files (run.json beside model.pt, features.pt's meta,
metrics.json), whichever tracker ran; the tracker's own ids are fields of run.json
(:meth:`TrainingRun.provenance`), absent when nothing was tracked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Mapping


class TrackingError(RuntimeError):
    """A store that cannot be reached or used; the message names the store (never its credentials)."""


class TrainingRun(ABC):
    """What the training stage reports to: the fit loop calls ``on_epoch_end`` after every epoch,
    after that epoch's checkpoint is written."""

    run_id: str | None = None

    @abstractmethod
    def log_input_dataset(self, name: str, digest: str, source: str) -> None:
        """The training split as the run's input: its name, digest of its files, folder."""

    @abstractmethod
    def on_epoch_end(self, row: Mapping[str, float]) -> None:
        """One finished epoch: a row of history.csv (``epoch`` is the step, 1-based). A resumed training
        calls it again for the epochs of its checkpoint: a backend records each epoch once."""

    @abstractmethod
    def on_trained(self, history_file: Path, exported_model) -> None:
        """Training finished and its files are written. ``exported_model()`` returns (net, example batch,
        name, params, tags, extra code paths) of the trained model, built only when a tracker keeps models."""

    @abstractmethod
    def provenance(self) -> dict[str, str]:
        """What run.json records of this run besides the stage's own fields (MLflow: run and model ids)."""

    @abstractmethod
    def finish(self, status: str) -> None:
        """``FINISHED``, ``FAILED`` or ``KILLED``; called once, whatever happened."""


class Tracker(ABC):
    """Where the stages' runs are recorded (reid.tracking.make_tracker chooses one)."""

    kind: str

    @abstractmethod
    def start_training(self, *, dataset: str, run_name: str, params: Mapping[str, object],
                       tags: Mapping[str, object], key_tags: tuple[str, ...], entry_point: str,
                       identity: str) -> TrainingRun:
        """The run of one training. ``identity`` (reid.tracking.training_identity) is the same for every
        attempt of the same training (a retry, a resume, a rerun after ``model.pt`` was deleted): a
        backend continues the run it recorded under it rather than recording the training twice."""

    @abstractmethod
    def log_evaluation(self, provenance: Mapping[str, Any], metrics: Mapping[str, float], settings: Mapping[str, Any],
                       *, test_data: Mapping[str, str], curves: Mapping[str, list] | None = None,
                       artifacts: Iterable[Path] = (), data_params: Mapping[str, object] | None = None,
                       test_dataset: str | None = None) -> str | None:
        """Record one evaluation of the model that ``provenance`` (run.json) describes; returns the
        evaluation run's id, or None when nothing was recorded. ``test_dataset``: the test set of a
        cross-domain evaluation (None in-domain). The same evaluation recorded again (same model, settings,
        test set and metrics) is not recorded twice."""

    @abstractmethod
    def log_report(self, provenances: Iterable[Mapping[str, Any]], files: Iterable[Path],
                   artifact_path: str = "report") -> dict[str, list[str]]:
        """Attach the report's files to the training runs ``provenances`` name; returns run id -> names."""

    @abstractmethod
    def log_export(self, provenance: Mapping[str, Any], path: Path, artifact_path: str = "export") -> str | None:
        """Keep an exported model file (``reid export``) with the training run that ``provenance``
        (run.json) names; returns where it is kept, or None when nothing was recorded."""
