"""Tracking as a plug-in, and the only module that talks to MLflow.

Stages report to a :class:`Tracker` (end of this module): :class:`MlflowTracker` records what
follows; the null tracker (config ``mlflow.enabled: false``) records nothing, needs no store and
never imports mlflow. Provenance does not depend on either: it travels in the stage files
(run.json beside model.pt, metrics.json).

With MLflow: one experiment per dataset (``<prefix>-<dataset>``). Per trained model and seed:

- a **training run** (``<model>-seed<seed>-train-try<n>``): parameters, per-epoch ``train/...``
  metrics, the history, and the trained model as an MLflow 3 **LoggedModel** (``log_trained_model``:
  the weights live once in MLflow, under the model's own artifact location);
- one **evaluation run** per evaluation setting (``<model>-seed<seed>-eval-<settings hash>-try<n>``):
  the settings as ``eval.*`` parameters, the metrics linked to the LoggedModel and to the test
  dataset (so the UI's Models page and ``mlflow.search_logged_models`` show Rank-1 and mAP), and
  metrics.json. Re-evaluating under other settings opens another run, never a second value of a
  metric at the same step of one run.

With the default SQLite store every artifact goes under ``results/mlruns/`` beside
``results/mlflow.db``. See PITFALLS.md for why the store is created once up front and why the URI
is always absolute.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping

from reid.config import REPO_ROOT

DEFAULT_STORE = REPO_ROOT / "results" / "mlflow.db"
# MLflow 3 opens experiments without this tag in its GenAI view, which hides runs and metrics.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


# MLflow stores at most this many characters of a parameter value (mlflow.utils.validation
# MAX_PARAM_VAL_LENGTH); a longer value is shortened visibly, and kept whole as an artifact.
PARAM_VALUE_LIMIT = 6000
FULL_PARAMS_ARTIFACT = "params/full_values.json"
MODEL_PARAMS_ARTIFACT = "params/logged_model_full_values.json"  # for the LoggedModel's own parameters

log = logging.getLogger("reid.tracking")


class TrackingError(RuntimeError):
    pass


def tracking_uri(configured: str | None = None) -> str:
    """MLFLOW_TRACKING_URI, else the configured URI, else the project's SQLite store (absolute path)."""
    return _uri(os.environ.get("MLFLOW_TRACKING_URI"), configured)


def _uri(from_environment: str | None, configured: str | None) -> str:
    uri = from_environment or configured
    if not uri:
        return f"sqlite:///{DEFAULT_STORE}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # relative sqlite paths depend on each job's cwd: make them absolute once, here
        rel = uri[len("sqlite:///"):]
        uri = f"sqlite:///{(REPO_ROOT / rel).resolve()}"
    return uri


def artifact_root(uri: str) -> Path | None:
    """Where a local SQLite store keeps its artifacts: ``mlruns/`` beside the database file.

    MLflow's own default is ``./mlruns`` in whatever folder a job runs from (``<repo>/mlruns``,
    which ``rm -rf results`` leaves behind). None for a server or database URI: the server decides.
    """
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent / "mlruns"
    return None


def _create_experiment(client, name: str, uri: str) -> str:
    root = artifact_root(uri)
    location = (root / name).as_uri() if root is not None else None
    return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)


def job_environment(mlflow_cfg: Mapping[str, object], python: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the Snakefile sets for every job it launches, from config ``mlflow:``.

    - ``PATH``: the folder of ``python`` (the interpreter running Snakemake) first, so that a job's
      ``python -m reid`` runs in the same environment, venv activated or not;
    - ``MLFLOW_TRACKING_URI``: :func:`tracking_uri` of ``mlflow_cfg['tracking_uri']`` (the variable
      already set wins, then the configured URI, then results/mlflow.db), absolute;
    - ``REID_EXPERIMENT_PREFIX``: ``mlflow_cfg['experiment_prefix']``;
    - ``REID_TRACKING``: ``mlflow`` when ``mlflow_cfg['enabled']`` (the default), else ``none``: the
      tracker every stage reports to (:func:`make_tracker`);
    - ``REID_INVOCATION_ID``: kept when set (a job re-reading the Snakefile), else a new random id,
      grouping the MLflow runs of one workflow invocation.
    """
    import uuid

    path = environ.get("PATH", "")
    first = os.path.dirname(python)
    return {
        "PATH": path if path.split(os.pathsep)[0] == first else first + os.pathsep + path,
        "MLFLOW_TRACKING_URI": _uri(environ.get("MLFLOW_TRACKING_URI"), mlflow_cfg.get("tracking_uri")),
        "REID_EXPERIMENT_PREFIX": str(mlflow_cfg["experiment_prefix"]),
        TRACKING_ENV: "mlflow" if mlflow_cfg.get("enabled", True) else "none",
        "REID_INVOCATION_ID": environ.get("REID_INVOCATION_ID") or uuid.uuid4().hex,
    }


def _client(uri: str | None = None):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def check_server(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, with a clear message, when an HTTP tracking server cannot be reached.

    Probes the REST API, not only /health: a server started with --allowed-hosts that does not
    name this host answers 200 on /health but 403 on every API call.
    """
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if r.status != 200:
                raise TrackingError(f"MLflow server {uri} answered {r.status} on {url}")
    except urllib.error.HTTPError as e:
        hint = " (is this host in the server's --allowed-hosts?)" if e.code == 403 else ""
        raise TrackingError(f"MLflow server {uri} refused the API call {url}: HTTP {e.code}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        raise TrackingError(
            f"MLflow server {uri} cannot be reached ({e}). Start it first (see docs/cluster.md) "
            f"or unset MLFLOW_TRACKING_URI to use the local SQLite store."
        ) from None


def init_store(uri: str, experiments: Iterable[str] = ()) -> None:
    """Create the store and the experiments once, before any job runs (Snakemake ``onstart``).

    Several processes creating a fresh SQLite store at the same moment corrupt it; once it exists,
    concurrent writers are fine.
    """
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    check_server(uri)
    client = _client(uri)
    root = artifact_root(uri)
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            _create_experiment(client, name, uri)
        elif root is not None and not exp.artifact_location.startswith(root.as_uri()):
            # an experiment's artifact location is fixed when it is created: a store made before
            # artifacts moved under results/ keeps writing to the old place
            print(f"warning: MLflow experiment {name!r} keeps its artifacts at {exp.artifact_location}, "
                  f"outside {root}; start a fresh store (move {uri[len('sqlite:///'):]} away) to keep "
                  f"everything under {root.parent}", flush=True)


def experiment_name(prefix: str, dataset: str) -> str:
    return f"{prefix}-{dataset}"


def _experiment_id(client, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return _create_experiment(client, name, uri)
    except Exception:  # created by a concurrent job in between
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's standard source tags: what ran (``mlflow.source.name``), at which commit, by whom."""
    commit = git_commit()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = os.environ.get("USER", "unknown")
    return {"mlflow.source.name": entry_point, "mlflow.source.type": "LOCAL",
            "mlflow.source.git.commit": commit.removesuffix("-dirty"), "mlflow.user": user,
            "git_commit": commit, "git_dirty": str(commit.endswith("-dirty")).lower()}


def environment_tags() -> dict[str, str]:
    """Where the run ran: torch and CUDA versions, GPU name, host, SLURM job id (when there is one)."""
    import torch

    cuda = torch.cuda.is_available()
    tags = {"torch_version": torch.__version__, "cuda_version": torch.version.cuda or "none",
            "gpu_name": torch.cuda.get_device_name(0) if cuda else "none", "host": socket.gethostname()}
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return tags


def _attempts(client, exp_id: str, key_tags: Mapping[str, object]) -> list:
    """Earlier runs with the same identity (same tag values), newest first."""
    flt = " and ".join(f"tags.{k} = '{v}'" for k, v in key_tags.items())
    return client.search_runs([exp_id], filter_string=flt, max_results=1000, order_by=["attributes.start_time DESC"])


def start_run(experiment: str, run_name: str, params: Mapping[str, object],
              tags: Mapping[str, object], uri: str | None = None, *,
              key_tags: tuple[str, ...] = ("dataset", "model", "seed", "rule"),
              entry_point: str = "python -m reid") -> str:
    """Open a new flat run; returns its id. Params are flattened (``train.lr``).

    The run is named ``<run_name>-try<n>``, n counting the runs of the experiment whose ``key_tags``
    have the same values; from the second attempt on, tag ``retry_of`` names the previous one.
    Tags also carry MLflow's source tags and the environment (``source_tags``, ``environment_tags``).
    """
    uri = uri or tracking_uri()
    check_server(uri)
    client = _client(uri)
    exp_id = _experiment_id(client, experiment, uri)
    key = {k: tags[k] for k in key_tags if k in tags}
    earlier = _attempts(client, exp_id, key) if key else []
    name = f"{run_name}-try{len(earlier) + 1}"
    all_tags = {**source_tags(entry_point), **environment_tags(), "mlflow.runName": name,
                "invocation_id": os.environ.get("REID_INVOCATION_ID", "manual"),
                "attempt": len(earlier) + 1, **({"retry_of": earlier[0].info.run_id} if earlier else {}), **tags}
    run = client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
    from mlflow.entities import Param

    flat = _fit_params(client, run.info.run_id, {k: str(v) for k, v in _flatten(params).items()},
                       FULL_PARAMS_ARTIFACT)
    batch = [Param(k, v) for k, v in flat.items()]
    for i in range(0, len(batch), 100):
        client.log_batch(run.info.run_id, params=batch[i:i + 100])
    return run.info.run_id


def _fit_params(client, run_id: str, params: dict[str, str], artifact: str) -> dict[str, str]:
    """``params`` with every value longer than MLflow keeps (PARAM_VALUE_LIMIT) shortened, its end saying
    so and where the full value is; the full values go to the run's ``artifact`` and a warning names each.
    Nothing recorded is changed silently."""
    too_long = {k: v for k, v in params.items() if len(v) > PARAM_VALUE_LIMIT}
    if not too_long:
        return params
    client.log_text(run_id, json.dumps(too_long, indent=2, sort_keys=True) + "\n", artifact)
    out = dict(params)
    for k, v in sorted(too_long.items()):
        note = f" ...[cut: {len(v)} characters in all; full value in artifact {artifact}]"
        out[k] = v[:PARAM_VALUE_LIMIT - len(note)] + note
        log.warning("MLflow parameter %s is %d characters long, over MLflow's limit of %d: MLflow shows it "
                    "shortened (ending in '[cut: ...]'); the full value is in run %s's artifact %s",
                    k, len(v), PARAM_VALUE_LIMIT, run_id, artifact)
    return out


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    from mlflow.entities import Metric

    client = _client()
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
    for i in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[i:i + 500])


def log_metric_series(run_id: str, key: str, values: Iterable[float], start_step: int = 1) -> None:
    """A curve as a stepped metric (e.g. CMC: step k = rank k)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(v), now, start_step + i) for i, v in enumerate(values)]
    client = _client()
    for i in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[i:i + 500])


def log_artifacts(run_ids: Iterable[str], paths: Iterable[Path], artifact_path: str = "report") -> None:
    client = _client()
    for run_id in run_ids:
        for p in paths:
            client.log_artifact(run_id, str(p), artifact_path=artifact_path)


def log_input_dataset(run_id: str, name: str, digest: str, source: str, context: str) -> None:
    """Record a dataset split as a run input (shown in the UI's Datasets column)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    client = _client()
    ds = Dataset(name=name, digest=digest, source_type="local", source=source)
    inputs = [DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])]
    for attempt in range(5):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except Exception:
            # two jobs registering the same dataset at once: one insert loses the UNIQUE race;
            # the retry finds the row the other job wrote
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    _client().set_terminated(run_id, status=status)


def reopen_run(run_id: str) -> None:
    """Mark a finished run RUNNING again while a later stage adds to it."""
    _client().update_run(run_id, status="RUNNING")


def get_run(run_id: str):
    return _client().get_run(run_id)


# ---------------------------------------------------------------- MLflow 3 LoggedModels


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


def log_trained_model(run_id: str, net, example, *, name: str, params: Mapping[str, object],
                      tags: Mapping[str, object], extra_code_paths: Iterable[str] = ()) -> str:
    """Log ``net`` (a torch module) as an MLflow 3 LoggedModel of training run ``run_id``; returns its id.

    ``example``: a real input batch (torch tensor), from which the signature is inferred. The model
    is pickled with the project's own code (``code_paths``: the ``reid`` package) and pip
    requirements, so ``mlflow.pyfunc.load_model("models:/<id>")`` works without this checkout. Its
    weights are stored once, under the experiment's ``models/<model_id>/artifacts/``; the run's
    own artifacts do not repeat them. The id is also set as the run's ``logged_model_id`` tag.
    ``extra_code_paths``: source a custom model needs beside ``reid`` (reid.models.custom.code_paths).
    """
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    client = _client()
    with torch.no_grad():
        out = net(example)
    signature = infer_signature(example.detach().cpu().numpy(), out.detach().cpu().numpy())
    # log_model links the model to the active run; a fluent run context re-activates the training run
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            net, name=name, signature=signature, pip_requirements=project_requirements(),
            code_paths=[str(REPO_ROOT / "reid"), *extra_code_paths], serialization_format="pickle",
            params=_fit_params(client, run_id, {k: str(v) for k, v in params.items()}, MODEL_PARAMS_ARTIFACT),
            tags={k: str(v) for k, v in tags.items()})
    # the model's "Logged from" column: what ran, not the Python file that happened to be __main__
    entry = client.get_run(run_id).data.tags.get("mlflow.source.name", "python -m reid")
    client.set_logged_model_tags(info.model_id, {"mlflow.source.name": entry})
    client.set_tag(run_id, "logged_model_id", info.model_id)
    return info.model_id


def mlflow_metrics(record: Mapping[str, float]) -> dict[str, float]:
    """The evaluation metrics as MLflow logs them, from the flat metrics.json keys: the names and
    which are left out follow from the metric registry (reid.metrics.keys.mlflow_name)."""
    from reid.metrics import keys  # here: the Snakefile imports this module, and reid.metrics imports torch

    names = {key: keys.mlflow_name(key) for key in record}
    return {name: record[key] for key, name in names.items() if name is not None}


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Short stable hash of evaluation settings (names the evaluation run, groups its attempts)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def log_evaluation(train_run_id: str, metrics: Mapping[str, float], settings: Mapping[str, Any], *,
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
    """
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    client = _client()
    train = client.get_run(train_run_id)
    t = train.data.tags
    exp = client.get_experiment(train.info.experiment_id)
    model_id = t.get("logged_model_id")
    shash = settings_hash(settings)
    params = {"eval": dict(settings), "training_run_id": train_run_id, **(data_params or {})}
    reading = t.get("reading")  # the readings ablation (reid/readings.py): one more identity tag
    cross = test_dataset is not None and test_dataset != t.get("dataset")
    rule = "evaluate_cross_domain" if cross else "evaluate_reading" if reading else "evaluate"
    tags = {"dataset": t.get("dataset", ""), "model": t.get("model", ""), "seed": t.get("seed", ""),
            "rule": rule, "eval_settings": shash,
            "training_run_id": train_run_id, **({"logged_model_id": model_id} if model_id else {}),
            **({"reading": reading} if reading else {}), **({"test_dataset": test_dataset} if cross else {})}
    on = f"-on-{test_dataset}" if cross else ""
    run_id = start_run(exp.name, f"{reading or t.get('model')}-seed{t.get('seed')}{on}-eval-{shash}", params, tags,
                       key_tags=("dataset", "model", "seed", "rule", "eval_settings", "reading", "test_dataset"),
                       entry_point="python -m reid evaluate")
    status = "FAILED"
    try:
        dataset = MetaDataset(LocalArtifactDatasetSource(str(test_data["source"])), name=test_data["name"],
                              digest=test_data["digest"])
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        # linked to the model and the dataset: the Models page and search_logged_models show them
        _log_linked_metrics(values, run_id, model_id, dataset)
        if curves:
            client.log_dict(run_id, dict(curves), "evaluation/cmc.json")
        for p in artifacts:
            client.log_artifact(run_id, str(p), artifact_path="evaluation")
        status = "FINISHED"
        return run_id
    finally:
        client.set_terminated(run_id, status=status)


def _log_linked_metrics(values: Mapping[str, float], run_id: str, model_id: str | None, dataset) -> None:
    """``mlflow.log_metrics`` linked to a LoggedModel and a dataset, retried when another job registers
    the same dataset at the same moment.

    MLflow inserts a dataset the experiment has not seen before its metrics; two evaluations of one
    test set finishing together (the models of one training set on the same cross-domain test set)
    race for that insert and one fails with a UNIQUE constraint error before any of its metrics is
    written. The retry finds the row the other job wrote and links to it."""
    import mlflow

    for attempt in range(5):
        try:
            mlflow.log_metrics(dict(values), run_id=run_id, model_id=model_id, dataset=dataset, synchronous=True)
            return
        except Exception as e:
            message = str(e).lower()  # SQLite: "UNIQUE constraint failed: datasets...", PostgreSQL: "duplicate key"
            if attempt == 4 or "datasets" not in message or not ("unique" in message or "duplicate" in message):
                raise
            time.sleep(0.5 * (attempt + 1))


def logged_models(experiment_names: Iterable[str], uri: str | None = None) -> list:
    """The LoggedModels of these experiments (``mlflow.search_logged_models``), newest first."""
    import mlflow

    client = _client(uri)
    ids = [e.experiment_id for n in experiment_names if (e := client.get_experiment_by_name(n)) is not None]
    if not ids:
        return []
    return mlflow.search_logged_models(experiment_ids=ids, output_format="list",
                                       order_by=[{"field_name": "creation_timestamp", "ascending": False}])


# ---------------------------------------------------------------- the tracker interface
#
# The stages report to a Tracker and never call MLflow themselves: MlflowTracker records what the
# module docstring describes; NullTracker records nothing and never imports mlflow (config
# ``mlflow.enabled: false``). What a stage's result is and where it came from travels in the stage
# files (run.json beside model.pt, features.pt's meta, metrics.json), whichever tracker ran; the
# MLflow run id is one field of run.json, absent when nothing was tracked.

TRACKERS = ("mlflow", "none")
TRACKING_ENV = "REID_TRACKING"  # the tracker every job uses, set by the Snakefile from mlflow.enabled


class TrainingRun:
    """What the training stage reports to: the fit loop calls ``on_epoch_end`` after every epoch.

    This base class is the null run: it records nothing and its ``provenance`` is empty.
    """

    run_id: str | None = None

    def log_input_dataset(self, name: str, digest: str, source: str) -> None:
        """The training split as the run's input: its name, digest of its files, folder."""

    def on_epoch_end(self, row: Mapping[str, float]) -> None:
        """One finished epoch: a row of history.csv (``epoch`` is the step, 1-based)."""

    def on_trained(self, history_file: Path, exported_model) -> None:
        """Training finished and its files are written. ``exported_model()`` returns (net, example batch,
        name, params, tags, extra code paths) of the trained model, built only when a tracker keeps models."""

    def provenance(self) -> dict[str, str]:
        """What run.json records of this run besides the stage's own fields (MLflow: run and model ids)."""
        return {}

    def finish(self, status: str) -> None:
        """``FINISHED``, ``FAILED`` or ``KILLED``; called once, whatever happened."""


class Tracker:
    """Where the stages' runs are recorded. This base class is the null tracker: nothing is recorded,
    no store is needed or written, and mlflow is never imported."""

    kind = "none"

    def start_training(self, *, dataset: str, run_name: str, params: Mapping[str, object],
                       tags: Mapping[str, object], key_tags: tuple[str, ...], entry_point: str) -> TrainingRun:
        return TrainingRun()

    def log_evaluation(self, provenance: Mapping[str, Any], metrics: Mapping[str, float], settings: Mapping[str, Any],
                       *, test_data: Mapping[str, str], curves: Mapping[str, list] | None = None,
                       artifacts: Iterable[Path] = (), data_params: Mapping[str, object] | None = None,
                       test_dataset: str | None = None) -> str | None:
        """Record one evaluation of the model that ``provenance`` (run.json) describes; returns the
        evaluation run's id, or None when nothing was recorded. ``test_dataset``: the test set of a
        cross-domain evaluation (None in-domain)."""
        return None

    def log_report(self, provenances: Iterable[Mapping[str, Any]], files: Iterable[Path],
                   artifact_path: str = "report") -> dict[str, list[str]]:
        """Attach the report's files to the training runs ``provenances`` name; returns run id -> names."""
        return {}

    def log_export(self, provenance: Mapping[str, Any], path: Path, artifact_path: str = "export") -> str | None:
        """Keep an exported model file (``reid export``) with the training run that ``provenance``
        (run.json) names; returns where it is kept, or None when nothing was recorded."""
        return None


NullTracker = Tracker


class MlflowTrainingRun(TrainingRun):
    def __init__(self, run_id: str, experiment: str):
        self.run_id, self.experiment, self.model_id = run_id, experiment, None

    def log_input_dataset(self, name: str, digest: str, source: str) -> None:
        log_input_dataset(self.run_id, name, digest, source, "training")

    def on_epoch_end(self, row: Mapping[str, float]) -> None:
        log_metrics(self.run_id, {f"train/{k}": v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def on_trained(self, history_file: Path, exported_model) -> None:
        # the weights go to MLflow once, as the LoggedModel; the run keeps the history beside it
        log_artifacts([self.run_id], [history_file], artifact_path="training")
        net, example, name, params, tags, code_paths = exported_model()
        self.model_id = log_trained_model(self.run_id, net, example, name=name, params=params, tags=tags,
                                          extra_code_paths=code_paths)

    def provenance(self) -> dict[str, str]:
        return {"mlflow_run_id": self.run_id, "mlflow_experiment": self.experiment,
                **({"logged_model_id": self.model_id} if self.model_id else {})}

    def finish(self, status: str) -> None:
        finish_run(self.run_id, status)


class MlflowTracker(Tracker):
    """Runs, LoggedModels and evaluation runs in the MLflow store at ``uri`` (see the module docstring)."""

    kind = "mlflow"

    def __init__(self, experiment_prefix: str, uri: str | None = None):
        self.experiment_prefix, self.uri = experiment_prefix, tracking_uri(uri)

    def start_training(self, *, dataset: str, run_name: str, params: Mapping[str, object],
                       tags: Mapping[str, object], key_tags: tuple[str, ...], entry_point: str) -> TrainingRun:
        experiment = experiment_name(self.experiment_prefix, dataset)
        run_id = start_run(experiment, run_name, params, tags, uri=self.uri, key_tags=key_tags, entry_point=entry_point)
        return MlflowTrainingRun(run_id, experiment)

    def log_evaluation(self, provenance, metrics, settings, *, test_data, curves=None, artifacts=(),
                       data_params=None, test_dataset=None) -> str | None:
        run_id = provenance.get("mlflow_run_id")
        if not run_id:
            log.warning("the model evaluated here (%s %s seed %s) was trained without MLflow (its run.json has no "
                        "mlflow_run_id): this evaluation is not recorded in MLflow",
                        provenance.get("dataset"), provenance.get("model"), provenance.get("seed"))
            return None
        return log_evaluation(run_id, mlflow_metrics(metrics), settings, test_data=test_data, curves=curves,
                              artifacts=artifacts, data_params=data_params, test_dataset=test_dataset)

    def log_report(self, provenances, files, artifact_path: str = "report") -> dict[str, list[str]]:
        files = [Path(f) for f in files]
        run_ids = []
        for p in provenances:
            if not p.get("mlflow_run_id"):
                raise TrackingError(f"{p.get('dataset')} {p.get('model')} seed {p.get('seed')}: its run.json has no "
                                    f"mlflow_run_id (trained with mlflow.enabled: false); retrain it with MLflow on "
                                    f"to attach the report to its run")
            run_ids.append(p["mlflow_run_id"])
        run_ids = list(dict.fromkeys(run_ids))  # one upload per run
        log_artifacts(run_ids, files, artifact_path=artifact_path)
        return {rid: [f"{artifact_path}/{f.name}" for f in files] for rid in run_ids}


    def log_export(self, provenance, path, artifact_path: str = "export") -> str | None:
        # an artifact of the training run (a re-export replaces it), named on its LoggedModel by a tag
        run_id, path = provenance.get("mlflow_run_id"), Path(path)
        if not run_id:
            log.warning("%s %s seed %s was trained without MLflow (its run.json has no mlflow_run_id): %s is not "
                        "recorded in MLflow", provenance.get("dataset"), provenance.get("model"),
                        provenance.get("seed"), path)
            return None
        log_artifacts([run_id], [path], artifact_path=artifact_path)
        name = f"{artifact_path}/{path.name}"
        if provenance.get("logged_model_id"):
            _client().set_logged_model_tags(provenance["logged_model_id"],
                                            {f"export.{path.suffix.lstrip('.') or 'file'}": f"runs:/{run_id}/{name}"})
        return name


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
