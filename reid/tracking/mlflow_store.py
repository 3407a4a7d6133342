"""The MLflow store as this project records into it: one :class:`MlflowStore` per tracking URI, with
its own ``MlflowClient`` built once from that URI (every call, the fluent ones included, goes there).

One experiment per dataset (``<prefix>-<dataset>``). Per trained model and seed:

- a **training run** (``<model>-seed<seed>-train-try<n>``, tag ``training_identity``): parameters,
  per-epoch ``train/...`` metrics, the history, and the trained model as an MLflow 3 **LoggedModel**
  (:meth:`MlflowStore.log_trained_model`: the weights live once in MLflow, under the model's own
  artifact location). Every attempt of the same training continues this one run;
- one **evaluation run** per evaluation setting (``<model>-seed<seed>-eval-<settings hash>-try<n>``):
  the settings as ``eval.*`` parameters, the metrics linked to the LoggedModel and to the test
  dataset (so the UI's Models page and ``mlflow.search_logged_models`` show Rank-1 and mAP), and
  metrics.json. Re-evaluating under other settings opens another run, never a second value of a
  metric at the same step of one run; the same evaluation with the same result is not recorded again.

Nothing is recorded twice for the same training: epochs already in the run are not logged again, a
LoggedModel with the same weights is reused (one with other weights is replaced), an evaluation with
the same model, settings, test set and metrics is found rather than repeated.

With the default SQLite store every artifact goes under ``results/mlruns/`` beside
``results/mlflow.db`` (reid.tracking.environment).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from reid.config import REPO_ROOT, config_hash
from reid.tracking.base import TrackingError
from reid.tracking.environment import check_server, create_experiment, tracking_uri
from reid.tracking.provenance import environment_tags, source_tags

# MLflow stores at most this many characters of a parameter value (mlflow.utils.validation
# MAX_PARAM_VAL_LENGTH); a longer value is shortened visibly, and kept whole as an artifact.
PARAM_VALUE_LIMIT = 6000
FULL_PARAMS_ARTIFACT = "params/full_values.json"
MODEL_PARAMS_ARTIFACT = "params/logged_model_full_values.json"  # for the LoggedModel's own parameters
EPOCH_METRIC = "train/loss_total"  # logged with every epoch's row in one batch: its steps are the epochs logged

log = logging.getLogger("reid.tracking")


class MlflowStore:
    """The MLflow store at ``uri`` (None, a relative SQLite path: as reid.tracking.tracking_uri, read once
    here), through one client."""

    def __init__(self, uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(uri)
        self.client = MlflowClient(tracking_uri=uri)

    def check(self, timeout: float = 10.0) -> None:
        """Raise TrackingError when an HTTP server cannot be reached or refuses us (environment.check_server)."""
        check_server(self.uri, timeout=timeout)

    def _fluent(self):
        """mlflow's fluent API, pointed at this store (it has no client argument)."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        return mlflow

    def experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return create_experiment(self.client, name, self.uri)
        except Exception:  # created by a concurrent job in between
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def find_runs(self, experiment: str, tags: Mapping[str, object]) -> list:
        """Runs of ``experiment`` whose ``tags`` have these values, newest first."""
        flt = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        return self.client.search_runs([self.experiment_id(experiment)], filter_string=flt, max_results=1000,
                                       order_by=["attributes.start_time DESC"])

    def start_run(self, experiment: str, run_name: str, params: Mapping[str, object], tags: Mapping[str, object],
                  *, key_tags: tuple[str, ...] = ("dataset", "model", "seed", "rule"),
                  entry_point: str = "python -m reid") -> str:
        """Open a new flat run; returns its id. Params are flattened (``train.lr``).

        The run is named ``<run_name>-try<n>``, n counting the runs of the experiment whose ``key_tags``
        have the same values; from the second attempt on, tag ``retry_of`` names the previous one.
        Tags also carry MLflow's source tags and the environment (reid.tracking.provenance).
        """
        self.check()
        exp_id = self.experiment_id(experiment)
        key = {k: tags[k] for k in key_tags if k in tags}
        earlier = self.find_runs(experiment, key) if key else []
        name = f"{run_name}-try{len(earlier) + 1}"
        all_tags = {**source_tags(entry_point), **environment_tags(), "mlflow.runName": name,
                    "invocation_id": os.environ.get("REID_INVOCATION_ID", "manual"), "attempt": len(earlier) + 1,
                    **({"retry_of": earlier[0].info.run_id} if earlier else {}), **tags}
        run = self.client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def continue_run(self, run, params: Mapping[str, object], tags: Mapping[str, object], entry_point: str) -> None:
        """Take up ``run`` (an MLflow Run) again for another attempt: RUNNING, tag ``attempt`` counted on,
        ``tags`` and the source and environment tags set to this attempt's (``resumed_from_*`` tags this
        attempt does not set are removed), parameters it lacks added.
        A parameter whose value changed (a runtime key such as ``train.device``) keeps its first value
        (MLflow refuses a second one); the change is logged and kept in tag ``params_changed``."""
        run_id = run.info.run_id
        self.client.update_run(run_id, status="RUNNING")
        attempt = int(run.data.tags.get("attempt", "1")) + 1
        all_tags = {**source_tags(entry_point), **environment_tags(), **tags, "attempt": attempt,
                    "invocation_id": os.environ.get("REID_INVOCATION_ID", "manual"),
                    "previous_attempt_status": run.info.status}
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in all_tags.items()])
        for stale in [k for k in run.data.tags if k.startswith("resumed_from_") and k not in all_tags]:
            self.client.delete_tag(run_id, stale)  # said of an earlier attempt, not of this one
        flat = {k: str(v) for k, v in _flatten(params).items()}
        old = run.data.params
        changed = {k: (old[k], v) for k, v in flat.items() if k in old and old[k] != v and "[cut:" not in old[k]}
        if changed:
            text = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in sorted(changed.items()))
            log.warning("MLflow run %s, attempt %d: parameters changed since the run was opened (kept as first "
                        "logged; see tag params_changed): %s", run_id, attempt, text)
            self.client.set_tag(run_id, "params_changed", f"attempt {attempt}: {text}"[:5000])
        self.log_params(run_id, {k: v for k, v in flat.items() if k not in old})

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        """Flattened ``params``, those over MLflow's limit cut visibly (:meth:`fit_params`)."""
        from mlflow.entities import Param

        flat = self.fit_params(run_id, {k: str(v) for k, v in _flatten(params).items()}, FULL_PARAMS_ARTIFACT)
        batch = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(batch), 100):
            self.client.log_batch(run_id, params=batch[i:i + 100])

    def fit_params(self, run_id: str, params: dict[str, str], artifact: str) -> dict[str, str]:
        """``params`` with every value longer than MLflow keeps (PARAM_VALUE_LIMIT) shortened, its end saying
        so and where the full value is; the full values go to the run's ``artifact`` and a warning names each.
        Nothing recorded is changed silently."""
        too_long = {k: v for k, v in params.items() if len(v) > PARAM_VALUE_LIMIT}
        if not too_long:
            return params
        self.client.log_text(run_id, json.dumps(too_long, indent=2, sort_keys=True) + "\n", artifact)
        out = dict(params)
        for k, v in sorted(too_long.items()):
            note = f" ...[cut: {len(v)} characters in all; full value in artifact {artifact}]"
            out[k] = v[:PARAM_VALUE_LIMIT - len(note)] + note
            log.warning("MLflow parameter %s is %d characters long, over MLflow's limit of %d: MLflow shows it "
                        "shortened (ending in '[cut: ...]'); the full value is in run %s's artifact %s",
                        k, len(v), PARAM_VALUE_LIMIT, run_id, artifact)
        return out

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(batch), 500):
            self.client.log_batch(run_id, metrics=batch[i:i + 500])

    def metric_steps(self, run_id: str, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def log_artifacts(self, run_ids: Iterable[str], paths: Iterable[Path], artifact_path: str = "report") -> None:
        paths = list(paths)
        for run_id in run_ids:
            for p in paths:
                self.client.log_artifact(run_id, str(p), artifact_path=artifact_path)

    def log_input_dataset(self, run_id: str, name: str, digest: str, source: str, context: str) -> None:
        """Record a dataset split as a run input (shown in the UI's Datasets column), once per run."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        have = {(i.dataset.name, i.dataset.digest) for i in self.client.get_run(run_id).inputs.dataset_inputs}
        if (name, digest) in have:
            return
        ds = Dataset(name=name, digest=digest, source_type="local", source=source)
        inputs = [DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])]
        for attempt in range(5):
            try:
                self.client.log_inputs(run_id, datasets=inputs)
                return
            except Exception:
                # two jobs registering the same dataset at once: one insert loses the UNIQUE race;
                # the retry finds the row the other job wrote
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    def log_trained_model(self, run_id: str, net, example, *, name: str, params: Mapping[str, object],
                          tags: Mapping[str, object], extra_code_paths: Iterable[str] = ()) -> str:
        """Log ``net`` (a torch module) as an MLflow 3 LoggedModel of training run ``run_id``; returns its id.

        ``example``: a real input batch (torch tensor), from which the signature is inferred. The model
        is pickled with the project's own code (``code_paths``: the ``reid`` package) and pip
        requirements, so ``mlflow.pyfunc.load_model("models:/<id>")`` works without this checkout. Its
        weights are stored once, under the experiment's ``models/<model_id>/artifacts/``; the run's
        own artifacts do not repeat them. The id is also set as the run's ``logged_model_id`` tag.
        ``extra_code_paths``: source a custom model needs beside ``reid`` (reid.models.custom.code_paths).

        Idempotent: when the run already holds a ready LoggedModel of this name with the same weights
        (tag ``weights_digest``, :func:`weights_digest`), that one is returned and nothing is uploaded;
        any other LoggedModel of the run (other weights, a failed upload) is deleted: replaced, never
        kept beside.
        """
        from mlflow.entities import LoggedModelStatus

        digest = weights_digest(net)
        exp_id = self.client.get_run(run_id).info.experiment_id
        earlier = self.client.search_logged_models([exp_id], filter_string=f"source_run_id = '{run_id}'")
        keep = next((m for m in earlier if m.name == name and m.status == LoggedModelStatus.READY
                     and m.tags.get("weights_digest") == digest), None)
        if keep is not None:
            log.info("MLflow run %s already holds this model (LoggedModel %s, same weights): not logged again",
                     run_id, keep.model_id)
            model_id = keep.model_id
        else:
            model_id = self._log_model(run_id, net, example, name=name, params=params,
                                       tags={**tags, "weights_digest": digest}, extra_code_paths=extra_code_paths)
        for m in earlier:  # after the new one is safely in: a failed upload leaves the old one
            if m.model_id != model_id:
                log.warning("MLflow run %s: LoggedModel %s (%s) replaced by %s", run_id, m.model_id,
                            "other weights" if m.status == LoggedModelStatus.READY else m.status, model_id)
                self.client.delete_logged_model(m.model_id)
        self.client.set_tag(run_id, "logged_model_id", model_id)
        return model_id

    def _log_model(self, run_id: str, net, example, *, name: str, params: Mapping[str, object],
                   tags: Mapping[str, object], extra_code_paths: Iterable[str]) -> str:
        import torch
        from mlflow.models import infer_signature

        with torch.no_grad():
            out = net(example)
        signature = infer_signature(example.detach().cpu().numpy(), out.detach().cpu().numpy())
        mlflow = self._fluent()
        # log_model links the model to the active run; a fluent run context re-activates the training run
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                net, name=name, signature=signature, pip_requirements=project_requirements(),
                code_paths=[str(REPO_ROOT / "reid"), *extra_code_paths], serialization_format="pickle",
                params=self.fit_params(run_id, {k: str(v) for k, v in params.items()}, MODEL_PARAMS_ARTIFACT),
                tags={k: str(v) for k, v in tags.items()})
        # the model's "Logged from" column: what ran, not the Python file that happened to be __main__
        entry = self.client.get_run(run_id).data.tags.get("mlflow.source.name", "python -m reid")
        self.client.set_logged_model_tags(info.model_id, {"mlflow.source.name": entry})
        return info.model_id

    def log_evaluation(self, train_run_id: str, metrics: Mapping[str, float], settings: Mapping[str, Any], *,
                       test_data: Mapping[str, str], curves: Mapping[str, list] | None = None,
                       artifacts: Iterable[Path] = (), data_params: Mapping[str, object] | None = None,
                       test_dataset: str | None = None) -> str:
        """One evaluation run of the model trained in ``train_run_id``; returns its id.

        ``settings`` (flip test, max rank, re-ranking k1/k2/lambda, test embedding, bootstrap, ...) become
        ``eval.*`` parameters and, hashed, the run's name and ``eval_settings`` tag: the same model
        evaluated another way is another run. ``metrics`` are logged at step 0, linked to the training
        run's LoggedModel (tag ``logged_model_id``) and to the test dataset ``test_data`` (``name``,
        ``digest``, ``source``). ``curves`` (e.g. the CMC per protocol) go to ``evaluation/cmc.json``,
        ``artifacts`` to ``evaluation/``. The run is FINISHED, or FAILED if logging fails half-way.

        ``test_dataset`` (cross-domain: a test set other than the training run's dataset) makes it a
        ``evaluate_cross_domain`` run in the training run's experiment, beside the model it evaluates,
        tagged ``test_dataset`` and named ``<model>-seed<seed>-on-<test_dataset>-eval-<settings hash>``.

        A FINISHED run with the same ``evaluation_identity`` tag (training run, LoggedModel, settings,
        test set name and digest, rule, reading) and the same metric values is this evaluation already
        recorded: its id is returned and nothing is logged. Another result opens the next attempt.
        """
        train = self.client.get_run(train_run_id)
        t = train.data.tags
        exp = self.client.get_experiment(train.info.experiment_id)
        model_id = t.get("logged_model_id")
        shash = settings_hash(settings)
        reading = t.get("reading")  # the readings ablation (reid/readings.py): one more identity tag
        cross = test_dataset is not None and test_dataset != t.get("dataset")
        rule = "evaluate_cross_domain" if cross else "evaluate_reading" if reading else "evaluate"
        identity = config_hash("evaluation", train_run_id, model_id or "", shash, test_data["name"],
                               test_data["digest"], rule, reading or "")
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        for earlier in self.find_runs(exp.name, {"evaluation_identity": identity}):
            if earlier.info.status == "FINISHED" and _same_values(earlier.data.metrics, values):
                log.info("evaluation already recorded in MLflow run %s (same model, settings, test set and "
                         "metrics): not logged again", earlier.info.run_id)
                return earlier.info.run_id
        tags = {"dataset": t.get("dataset", ""), "model": t.get("model", ""), "seed": t.get("seed", ""),
                "rule": rule, "eval_settings": shash, "evaluation_identity": identity,
                "training_run_id": train_run_id, **({"logged_model_id": model_id} if model_id else {}),
                **({"reading": reading} if reading else {}), **({"test_dataset": test_dataset} if cross else {})}
        on = f"-on-{test_dataset}" if cross else ""
        params = {"eval": dict(settings), "training_run_id": train_run_id, **(data_params or {})}
        run_id = self.start_run(exp.name, f"{reading or t.get('model')}-seed{t.get('seed')}{on}-eval-{shash}", params,
                                tags, entry_point="python -m reid evaluate",
                                key_tags=("dataset", "model", "seed", "rule", "eval_settings", "reading", "test_dataset"))
        status = "FAILED"
        try:
            self._log_evaluation_records(run_id, values, model_id, test_data, curves, artifacts)
            status = "FINISHED"
            return run_id
        finally:
            self.client.set_terminated(run_id, status=status)

    def _log_evaluation_records(self, run_id: str, values: Mapping[str, float], model_id: str | None,
                                test_data: Mapping[str, str], curves, artifacts: Iterable[Path]) -> None:
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource

        dataset = MetaDataset(LocalArtifactDatasetSource(str(test_data["source"])), name=test_data["name"],
                              digest=test_data["digest"])
        # linked to the model and the dataset: the Models page and search_logged_models show them
        self._log_linked_metrics(values, run_id, model_id, dataset)
        if curves:
            self.client.log_dict(run_id, dict(curves), "evaluation/cmc.json")
        for p in artifacts:
            self.client.log_artifact(run_id, str(p), artifact_path="evaluation")

    def _log_linked_metrics(self, values: Mapping[str, float], run_id: str, model_id: str | None, dataset) -> None:
        """``mlflow.log_metrics`` linked to a LoggedModel and a dataset, retried when another job registers
        the same dataset at the same moment.

        MLflow inserts a dataset the experiment has not seen before its metrics; two evaluations of one
        test set finishing together (the models of one training set on the same cross-domain test set)
        race for that insert and one fails with a UNIQUE constraint error before any of its metrics is
        written. The retry finds the row the other job wrote and links to it."""
        mlflow = self._fluent()
        for attempt in range(5):
            try:
                mlflow.log_metrics(dict(values), run_id=run_id, model_id=model_id, dataset=dataset, synchronous=True)
                return
            except Exception as e:
                message = str(e).lower()  # SQLite: "UNIQUE constraint failed: datasets...", PostgreSQL: "duplicate key"
                if attempt == 4 or "datasets" not in message or not ("unique" in message or "duplicate" in message):
                    raise
                time.sleep(0.5 * (attempt + 1))


def _same_values(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Equal keys and values, NaN equal to NaN (a metric that is undefined is so in both)."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def weights_digest(net) -> str:
    """SHA-256 (16 hex digits) of a torch module's state dict: every tensor's name, dtype, shape and bytes.
    Equal for the same weights, whatever file or process they came from."""
    import torch

    h = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def project_requirements() -> list[str]:
    """The project's pip requirements (pyproject.toml ``[project] dependencies``), for a logged model."""
    import tomllib

    pyproject = REPO_ROOT / "pyproject.toml"
    try:
        return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        from importlib.metadata import PackageNotFoundError, requires

        try:
            return [r for r in requires("reid-mutual-attention") or [] if "extra ==" not in r]
        except PackageNotFoundError:
            raise TrackingError(f"{pyproject}: cannot read the project's dependencies for the logged model") from None


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def mlflow_metrics(record: Mapping[str, float]) -> dict[str, float]:
    """The evaluation metrics as MLflow logs them, from the flat metrics.json keys: the names and
    which are left out follow from the metric registry (reid.metrics.keys.mlflow_name)."""
    from reid.metrics import keys  # here: the Snakefile imports reid.tracking, and reid.metrics imports torch

    names = {key: keys.mlflow_name(key) for key in record}
    return {name: record[key] for key, name in names.items() if name is not None}


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Short stable hash of evaluation settings (names the evaluation run, groups its attempts)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]
