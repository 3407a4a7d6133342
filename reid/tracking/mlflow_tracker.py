"""The MLflow tracker: the stages' runs recorded in the store at one URI (reid.tracking.mlflow_store
says what is recorded where)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from reid.tracking.base import Tracker, TrackingError, TrainingRun
from reid.tracking.deferred import DeferredTrainingRun
from reid.tracking.environment import experiment_name, tracking_uri
from reid.tracking.mlflow_store import EPOCH_METRIC, MlflowStore, mlflow_metrics

log = logging.getLogger("reid.tracking")


class MlflowTrainingRun(TrainingRun):
    """One training's MLflow run, opened by :meth:`open`; records each epoch, the input and the model once."""

    def __init__(self, store: MlflowStore, run_id: str, experiment: str, logged_epochs: set[int]):
        self.store, self.run_id, self.experiment, self.model_id = store, run_id, experiment, None
        self.logged_epochs = set(logged_epochs)

    @classmethod
    def open(cls, store: MlflowStore, *, experiment: str, run_name: str, params: Mapping[str, object],
             tags: Mapping[str, object], key_tags: tuple[str, ...], entry_point: str,
             identity: str) -> "MlflowTrainingRun":
        """The run tagged ``training_identity`` = ``identity``, continued (MlflowStore.continue_run) when an
        earlier attempt opened it, else a new one."""
        store.check()
        earlier = store.find_runs(experiment, {"training_identity": identity})
        if earlier:
            run = earlier[0]
            store.continue_run(run, params, tags, entry_point)
            log.info("MLflow: continuing run %s (%s) of this training", run.info.run_id, run.info.run_name)
            return cls(store, run.info.run_id, experiment, store.metric_steps(run.info.run_id, EPOCH_METRIC))
        # attempt: the jobs that worked on this run (the name's try<n> counts other trainings of the model)
        run_id = store.start_run(experiment, run_name, params, {**tags, "training_identity": identity, "attempt": 1},
                                 key_tags=key_tags, entry_point=entry_point)
        return cls(store, run_id, experiment, set())

    def log_input_dataset(self, name: str, digest: str, source: str) -> None:
        self.store.log_input_dataset(self.run_id, name, digest, source, "training")

    def on_epoch_end(self, row: Mapping[str, float]) -> None:
        step = int(row["epoch"])
        if step in self.logged_epochs:  # recorded by an earlier attempt of this training
            return
        self.store.log_metrics(self.run_id, {f"train/{k}": v for k, v in row.items() if k != "epoch"}, step=step)
        self.logged_epochs.add(step)

    def on_trained(self, history_file: Path, exported_model) -> None:
        # the weights go to MLflow once, as the LoggedModel; the run keeps the history beside it
        self.store.log_artifacts([self.run_id], [history_file], artifact_path="training")
        net, example, name, params, tags, code_paths = exported_model()
        self.model_id = self.store.log_trained_model(self.run_id, net, example, name=name, params=params,
                                                     tags=tags, extra_code_paths=code_paths)

    def provenance(self) -> dict[str, str]:
        return {"mlflow_run_id": self.run_id, "mlflow_experiment": self.experiment,
                **({"logged_model_id": self.model_id} if self.model_id else {})}

    def finish(self, status: str) -> None:
        self.store.finish_run(self.run_id, status)


class MlflowTracker(Tracker):
    """Runs, LoggedModels and evaluation runs in the MLflow store at ``uri`` (default and relative paths as
    reid.tracking.tracking_uri), through one :class:`MlflowStore` built here."""

    kind = "mlflow"

    def __init__(self, experiment_prefix: str, uri: str | None = None):
        self.experiment_prefix, self.uri = experiment_prefix, tracking_uri(uri)
        self.store = MlflowStore(self.uri)

    def start_training(self, *, dataset, run_name, params, tags, key_tags, entry_point, identity) -> TrainingRun:
        """A :class:`DeferredTrainingRun` around the MLflow run: a store that fails costs no training."""
        experiment = experiment_name(self.experiment_prefix, dataset)

        def open_run() -> TrainingRun:
            return MlflowTrainingRun.open(self.store, experiment=experiment, run_name=run_name, params=params,
                                          tags=tags, key_tags=key_tags, entry_point=entry_point, identity=identity)

        run = DeferredTrainingRun(open_run, lambda: self.store.check(timeout=5.0), f"MLflow store {self.uri}")
        run.flush()  # opened now, or (the store down) at the first call that gets through
        return run

    def log_evaluation(self, provenance, metrics, settings, *, test_data, curves=None, artifacts=(),
                       data_params=None, test_dataset=None) -> str | None:
        run_id = provenance.get("mlflow_run_id")
        if not run_id:
            log.warning("the model evaluated here (%s %s seed %s) was trained without MLflow (its run.json has no "
                        "mlflow_run_id): this evaluation is not recorded in MLflow",
                        provenance.get("dataset"), provenance.get("model"), provenance.get("seed"))
            return None
        return self.store.log_evaluation(run_id, mlflow_metrics(metrics), settings, test_data=test_data, curves=curves,
                                         artifacts=artifacts, data_params=data_params, test_dataset=test_dataset)

    def log_report(self, provenances, files, artifact_path: str = "report") -> dict[str, list[str]]:
        files = [Path(f) for f in files]
        run_ids = []
        for p in provenances:
            if not p.get("mlflow_run_id"):
                raise TrackingError(f"{p.get('dataset')} {p.get('model')} seed {p.get('seed')}: its run.json has no "
                                    f"mlflow_run_id (trained with mlflow.enabled: false, or the store was down "
                                    f"throughout its training); retrain it with MLflow on to attach the report to "
                                    f"its run")
            run_ids.append(p["mlflow_run_id"])
        run_ids = list(dict.fromkeys(run_ids))  # one upload per run
        self.store.log_artifacts(run_ids, files, artifact_path=artifact_path)
        return {rid: [f"{artifact_path}/{f.name}" for f in files] for rid in run_ids}

    def log_export(self, provenance, path, artifact_path: str = "export") -> str | None:
        # an artifact of the training run (a re-export replaces it), named on its LoggedModel by a tag
        run_id, path = provenance.get("mlflow_run_id"), Path(path)
        if not run_id:
            log.warning("%s %s seed %s was trained without MLflow (its run.json has no mlflow_run_id): %s is not "
                        "recorded in MLflow", provenance.get("dataset"), provenance.get("model"),
                        provenance.get("seed"), path)
            return None
        self.store.log_artifacts([run_id], [path], artifact_path=artifact_path)
        name = f"{artifact_path}/{path.name}"
        if provenance.get("logged_model_id"):
            self.store.client.set_logged_model_tags(
                provenance["logged_model_id"], {f"export.{path.suffix.lstrip('.') or 'file'}": f"runs:/{run_id}/{name}"})
        return name
