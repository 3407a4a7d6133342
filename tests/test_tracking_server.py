"""The tiny workflow, through Snakemake, against MLflow's basic-auth server as docs/cluster.md runs it.

Jobs authenticate with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (a user the admin made, as
the docs say); the password ends up in no parameter, tag, artifact, stage file or log; a client without
it, or with a wrong one, is refused. A finished training rerun (its model.pt deleted) records nothing
twice: the same training run, LoggedModel and evaluation run.
"""

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from tiny_config import TINY_PIPELINE  # tests/ is on sys.path (conftest.py)

pytestmark = pytest.mark.slow  # the server takes 5-40 s to start; two Snakemake runs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN, USER = "reid-admin", "reid-jobs"
TINY = {**TINY_PIPELINE, "models": ["baseline"], "seeds": [0]}
METRICS = "results/synthetic/baseline/seed0/metrics.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, admin_password: str) -> tuple[subprocess.Popen, str]:
    """``mlflow server --app-name basic-auth`` on a free 127.0.0.1 port, its stores in ``folder``."""
    (folder / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\nadmin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"),
           "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,  # read once, when the user store is created
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(k, None)
    log = open(folder / "server.log", "w")
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            return server, uri
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    stop(server)
    raise AssertionError(f"the MLflow server did not come up: {(folder / 'server.log').read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and its worker, nothing else
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def snakemake(workdir: Path, env: dict, *targets: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *targets, "--configfile", str(workdir / "tiny.yaml")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(workdir, server folder, uri, jobs' environment, password, snakemake outputs) after the tiny workflow ran
    once against the basic-auth server, as the jobs' user."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    admin_password, password = "admin-" + secrets.token_hex(12), "jobs-" + secrets.token_hex(12)
    server, uri = start_server(folder, admin_password)
    try:
        # the admin makes the jobs' user (docs/cluster.md)
        make_user = ("import sys; from mlflow.server import get_app_client; "
                     "get_app_client('basic-auth', tracking_uri=sys.argv[1]).create_user(sys.argv[2], sys.argv[3])")
        admin_env = {**os.environ, "MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": admin_password}
        made = subprocess.run([sys.executable, "-c", make_user, uri, USER, password], env=admin_env,
                              capture_output=True, text=True)
        assert made.returncode == 0, made.stderr[-3000:]
        workdir = tmp_path_factory.mktemp("workflow")
        (workdir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
               "MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": password}
        proc = snakemake(workdir, env, METRICS)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        yield workdir, folder, uri, env, password, [proc]
    finally:
        stop(server)


@pytest.fixture
def authenticated(served, monkeypatch):
    workdir, folder, uri, env, password, procs = served
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(k, env[k])
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(c, name="reid-synthetic"):
    exp = c.get_experiment_by_name(name)
    return c.search_runs([exp.experiment_id], max_results=100), exp.experiment_id


def test_jobs_authenticate_and_the_password_is_recorded_nowhere(served, authenticated):
    workdir, folder, uri, env, password, procs = served
    runs, exp_id = runs_of(authenticated)
    assert sorted(r.data.tags["rule"] for r in runs) == ["evaluate", "train"]
    assert all(r.info.status == "FINISHED" for r in runs)
    info = json.loads((workdir / "results/synthetic/baseline/seed0/run.json").read_text())
    assert info["mlflow_run_id"] in {r.info.run_id for r in runs} and info["logged_model_id"]
    secret_forms = [password, base64.b64encode(f"{USER}:{password}".encode()).decode()]
    for r in runs:  # parameters and tags, as the server gives them out
        recorded = json.dumps({"params": r.data.params, "tags": r.data.tags})
        assert not any(s in recorded for s in secret_forms), r.info.run_name
    for m in authenticated.search_logged_models([exp_id]):
        assert not any(s in json.dumps({"params": m.params, "tags": m.tags}) for s in secret_forms)
    # every file: the artifacts (the LoggedModel, history, metrics.json), the store, the stage files, the
    # rule logs, Snakemake's own logs, and what Snakemake printed
    files = [p for base in (folder, workdir) for p in base.rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in files) and any(p.suffix == ".log" for p in files)
    leaked = [str(p) for p in files if p.name != "basic_auth.db" and any(s.encode() in p.read_bytes() for s in secret_forms)]
    assert not leaked
    assert not any(s in procs[0].stdout + procs[0].stderr for s in secret_forms)


def test_a_client_without_the_credentials_is_refused(served, monkeypatch):
    from reid import tracking

    workdir, folder, uri, env, password, procs = served
    url = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    wrong = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(
        f"{USER}:not-{password}".encode()).decode()})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    assert refused.value.code == 401
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(tracking.TrackingError, match="HTTP 401 .*set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        tracking.check_server(uri)
    # with them, the same check passes
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    tracking.check_server(uri)


def test_rerunning_a_finished_training_records_nothing_twice(served, authenticated):
    """model.pt deleted and asked for again: Snakemake reruns train (0 epochs to train, from the checkpoint),
    then extract and evaluate (their input is new). The store still holds one training run (its second
    attempt), one LoggedModel, one evaluation."""
    workdir, folder, uri, env, password, procs = served
    before, exp_id = runs_of(authenticated)
    model_ids = [m.model_id for m in authenticated.search_logged_models([exp_id])]
    assert len(model_ids) == 1
    model = "results/synthetic/baseline/seed0/model.pt"
    (workdir / model).unlink()
    proc = snakemake(workdir, env, model, METRICS)
    procs.append(proc)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    train_log = (workdir / "results/logs/train/synthetic/baseline-seed0.log").read_text()
    assert "0 of 2 epochs to train" in train_log
    assert "rule evaluate:" in proc.stderr  # evaluated again, too
    after, _ = runs_of(authenticated)
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in before)
    train = next(r for r in after if r.data.tags["rule"] == "train")
    assert train.data.tags["attempt"] == "2" and train.info.status == "FINISHED"
    assert [m.step for m in authenticated.get_metric_history(train.info.run_id, "train/loss_total")] == [1, 2]
    assert [m.model_id for m in authenticated.search_logged_models([exp_id])] == model_ids
    evaluation = next(r for r in after if r.data.tags["rule"] == "evaluate")
    metrics = json.loads((workdir / METRICS).read_text())
    assert evaluation.data.metrics["rank1"] == metrics["rank1"] and metrics["logged_model_id"] == model_ids[0]
