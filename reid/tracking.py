"""The only module that talks to MLflow.

One experiment per dataset (``<prefix>-<dataset>``), one flat run per trained model: opened by
``train``, re-opened by ``extract`` and ``evaluate`` through the run-id file, so one row of the UI
holds params, per-epoch losses, final metrics and artifacts. See PITFALLS.md for why the store is
created once up front and why the URI is always absolute.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping

from reid.config import REPO_ROOT

DEFAULT_STORE = REPO_ROOT / "results" / "mlflow.db"
# MLflow 3 opens experiments without this tag in its GenAI view, which hides runs and metrics.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingError(RuntimeError):
    pass


def tracking_uri(configured: str | None = None) -> str:
    """MLFLOW_TRACKING_URI, else the configured URI, else the project's SQLite store (absolute path)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if not uri:
        return f"sqlite:///{DEFAULT_STORE}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # relative sqlite paths depend on each job's cwd: make them absolute once, here
        rel = uri[len("sqlite:///"):]
        uri = f"sqlite:///{(REPO_ROOT / rel).resolve()}"
    return uri


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
    for name in experiments:
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(name, tags=EXPERIMENT_TAGS)


def experiment_name(prefix: str, dataset: str) -> str:
    return f"{prefix}-{dataset}"


def _experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, tags=EXPERIMENT_TAGS)
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


def start_run(experiment: str, run_name: str, params: Mapping[str, object],
              tags: Mapping[str, str], uri: str | None = None) -> str:
    """Open a new flat run; returns its id. Params are flattened (``train.lr``)."""
    uri = uri or tracking_uri()
    check_server(uri)
    client = _client(uri)
    exp_id = _experiment_id(client, experiment)
    all_tags = {"git_commit": git_commit(), "mlflow.runName": run_name,
                "invocation_id": os.environ.get("REID_INVOCATION_ID", "manual"), **tags}
    run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
    from mlflow.entities import Param

    flat = _flatten(params)
    batch = [Param(k, str(v)[:6000]) for k, v in flat.items()]
    for i in range(0, len(batch), 100):
        client.log_batch(run.info.run_id, params=batch[i:i + 100])
    return run.info.run_id


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


def set_tags(run_id: str, tags: Mapping[str, object]) -> None:
    client = _client()
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


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


def read_run_id(path: str | Path) -> str:
    text = Path(path).read_text().strip()
    if not text:
        raise TrackingError(f"{path}: empty MLflow run id file")
    return text


def get_run(run_id: str):
    return _client().get_run(run_id)
