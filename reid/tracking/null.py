"""The null tracker (config ``mlflow.enabled: false``): records nothing, needs no store, never imports
mlflow. Provenance still travels in the stage files."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from reid.tracking.base import Tracker, TrainingRun


class NullTrainingRun(TrainingRun):
    """A training run that records nothing; its ``provenance`` is empty."""

    def log_input_dataset(self, name: str, digest: str, source: str) -> None:
        pass

    def on_epoch_end(self, row: Mapping[str, float]) -> None:
        pass

    def on_trained(self, history_file: Path, exported_model) -> None:
        pass  # exported_model is never called: no model is built for a tracker that keeps none

    def provenance(self) -> dict[str, str]:
        return {}

    def finish(self, status: str) -> None:
        pass


class NullTracker(Tracker):
    """Nothing is recorded, no store is needed or written, and mlflow is never imported."""

    kind = "none"

    def start_training(self, *, dataset, run_name, params, tags, key_tags, entry_point, identity) -> TrainingRun:
        return NullTrainingRun()

    def log_evaluation(self, provenance, metrics, settings, *, test_data, curves=None, artifacts=(),
                       data_params=None, test_dataset=None) -> str | None:
        return None

    def log_report(self, provenances, files, artifact_path: str = "report") -> dict[str, list[str]]:
        return {}

    def log_export(self, provenance, path, artifact_path: str = "export") -> str | None:
        return None
