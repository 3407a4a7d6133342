"""Where the MLflow store is and how every job reaches it: the tracking URI, the job environment the
Snakefile sets, the server check, and the store's one-time set-up.

Nothing here imports mlflow at module level: the Snakefile imports this module in every job.
"""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterable, Mapping

from reid.config import REPO_ROOT
from reid.tracking.base import TrackingError

DEFAULT_STORE = REPO_ROOT / "results" / "mlflow.db"
# MLflow 3 opens experiments without this tag in its GenAI view, which hides runs and metrics.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
TRACKING_ENV = "REID_TRACKING"  # the tracker every job uses, set by the Snakefile from mlflow.enabled
# A basic-auth server's credentials, read by MLflow's client (and by check_server) from the environment
# only: they never enter a parameter, tag or file of this project.
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


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


def experiment_name(prefix: str, dataset: str) -> str:
    return f"{prefix}-{dataset}"


def create_experiment(client, name: str, uri: str) -> str:
    """Create experiment ``name`` with EXPERIMENT_TAGS and, for a SQLite store, its artifacts under
    :func:`artifact_root`; returns its id."""
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
      tracker every stage reports to (reid.tracking.make_tracker);
    - ``REID_INVOCATION_ID``: kept when set (a job re-reading the Snakefile), else a new random id,
      grouping the MLflow runs of one workflow invocation.

    A basic-auth server's ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` are neither
    read nor set here: jobs inherit them from the shell that runs Snakemake.
    """
    path = environ.get("PATH", "")
    first = os.path.dirname(python)
    return {
        "PATH": path if path.split(os.pathsep)[0] == first else first + os.pathsep + path,
        "MLFLOW_TRACKING_URI": _uri(environ.get("MLFLOW_TRACKING_URI"), mlflow_cfg.get("tracking_uri")),
        "REID_EXPERIMENT_PREFIX": str(mlflow_cfg["experiment_prefix"]),
        TRACKING_ENV: "mlflow" if mlflow_cfg.get("enabled", True) else "none",
        "REID_INVOCATION_ID": environ.get("REID_INVOCATION_ID") or uuid.uuid4().hex,
    }


def _auth_header(environ: Mapping[str, str]) -> dict[str, str]:
    user, password = (environ.get(k) for k in CREDENTIAL_ENV)
    if not (user and password):
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def check_server(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, with a clear message, when an HTTP tracking server cannot be reached or refuses us.

    Probes the REST API, not only /health: a server started with --allowed-hosts that does not
    name this host answers 200 on /health but 403 on every API call, and a basic-auth server 401
    without the credentials of ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``. Raises
    TrackingError naming the URI (never the credentials); does nothing for a non-HTTP URI.
    """
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(url, headers=_auth_header(os.environ))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            if r.status != 200:
                raise TrackingError(f"MLflow server {uri} answered {r.status} on {url}")
    except urllib.error.HTTPError as e:
        hint = {403: " (is this host in the server's --allowed-hosts? does this user have permission?)",
                401: " (a server with authentication: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                     + (", which are set here: are they right?)" if _auth_header(os.environ) else ")")}.get(e.code, "")
        raise TrackingError(f"MLflow server {uri} refused the API call {url}: HTTP {e.code}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        raise TrackingError(
            f"MLflow server {uri} cannot be reached ({e}). Start it first (see docs/cluster.md) "
            f"or unset MLFLOW_TRACKING_URI to use the local SQLite store."
        ) from None


def init_store(uri: str, experiments: Iterable[str] = ()) -> None:
    """Create the store and the experiments once, before any job runs (Snakemake ``onstart``).

    Several processes creating a fresh SQLite store at the same moment corrupt it (MLflow's schema
    migration races); once it exists, concurrent writers are fine. Raises TrackingError when a
    server cannot be reached (:func:`check_server`).
    """
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    check_server(uri)
    client = MlflowClient(tracking_uri=uri)
    root = artifact_root(uri)
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            create_experiment(client, name, uri)
        elif root is not None and not exp.artifact_location.startswith(root.as_uri()):
            # an experiment's artifact location is fixed when it is created: a store made before
            # artifacts moved under results/ keeps writing to the old place
            print(f"warning: MLflow experiment {name!r} keeps its artifacts at {exp.artifact_location}, "
                  f"outside {root}; start a fresh store (move {uri[len('sqlite:///'):]} away) to keep "
                  f"everything under {root.parent}", flush=True)
