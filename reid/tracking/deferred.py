"""A training run whose store may fail without costing the training anything.

:class:`DeferredTrainingRun` wraps a backend's run. Every call is queued and the queue is sent in
order; when the store fails (unreachable past its client's own retries, refusing a write), the call
stays queued, a warning says so, and the training goes on. While the store is down each later call
first probes it (a quick request) and keeps its record queued rather than wait through the client's
retries again; once the store answers, the queue is replayed in order, each record once (the backend
records each epoch, the input and the model once, reid.tracking.mlflow_store). Even opening the run
may wait: a training whose store was down at its start opens its run at the first call that gets
through. At the end whatever is still queued is named in a warning and in run.json
(``tracking_missing``), and the job ends normally. The next attempt of the same training (a retry, a
resume, a rerun after deleting model.pt) continues the same run and replays the epochs from its
checkpoint, so what was missing is recorded then.

The training stage writes each epoch's checkpoint before it calls the tracker (reid.train), so a
tracker failure never costs an epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping

from reid.tracking.base import TrackingError, TrainingRun

log = logging.getLogger("reid.tracking")


def is_store_failure(error: BaseException) -> bool:
    """Whether ``error`` is the store failing (then a training keeps going) rather than a fault of the
    caller: MLflow's own errors, connection and file errors, TrackingError."""
    if isinstance(error, (TrackingError, OSError, TimeoutError)):  # requests' errors are OSErrors
        return True
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - the MLflow backend always has it
        return False
    return isinstance(error, MlflowException)


class DeferredTrainingRun(TrainingRun):
    """``open_run()`` opens the backend's run (called until it succeeds); ``probe()`` raises while the
    store is down and is cheap (reid.tracking.environment.check_server with a short timeout); ``store``
    names the store in warnings."""

    def __init__(self, open_run: Callable[[], TrainingRun], probe: Callable[[], None], store: str):
        self._open, self._probe, self.store = open_run, probe, store
        self._run: TrainingRun | None = None
        self._queue: list[tuple[str, Callable[[TrainingRun], None]]] = []
        self._down = False

    @property
    def run_id(self) -> str | None:
        return None if self._run is None else self._run.run_id

    def log_input_dataset(self, name: str, digest: str, source: str) -> None:
        self._send(f"the training input {name}", lambda run: run.log_input_dataset(name, digest, source))

    def on_epoch_end(self, row: Mapping[str, float]) -> None:
        row = dict(row)
        self._send(f"epoch {int(row['epoch'])}", lambda run: run.on_epoch_end(row))

    def on_trained(self, history_file: Path, exported_model) -> None:
        self._send("the history and the trained model", lambda run: run.on_trained(history_file, exported_model))

    def provenance(self) -> dict:
        self.flush()  # one more try before run.json says what is missing
        out = {} if self._run is None else dict(self._run.provenance())
        missing = self.missing()
        return {**out, "tracking_missing": missing} if missing else out

    def missing(self) -> list[str]:
        """What the store does not hold yet, in the order it is queued."""
        return ([] if self._run is not None else ["the run itself"]) + [what for what, _ in self._queue]

    def finish(self, status: str) -> None:
        self.flush()
        if self._run is not None:
            try:
                self._run.finish(status)
            except Exception as e:
                if not is_store_failure(e):
                    raise
                log.warning("%s: could not mark run %s %s (%s): it stays RUNNING there", self.store,
                            self._run.run_id, status, _short(e))
        missing = self.missing()
        if missing:
            done = ("the training itself is complete and saved" if status == "FINISHED"
                    else f"the training ended {status}; its checkpoints are kept")
            log.warning("%s did not record all of this training (%s): missing %s. Run the same training again "
                        "(it resumes from its checkpoint) once the store answers: it continues the same run and "
                        "records what is missing, once.", self.store, done, "; ".join(missing))

    def _send(self, what: str, call: Callable[[TrainingRun], None]) -> None:
        self._queue.append((what, call))
        self.flush()

    def flush(self) -> None:
        """Open the run if it is not yet, then send what is queued, in order; a store failure keeps it."""
        if self._down:
            try:
                self._probe()
            except Exception as e:
                if not is_store_failure(e):
                    raise
                return  # still down: keep everything queued, do not wait through the client's retries
        try:
            if self._run is None:
                self._run = self._open()
            while self._queue:
                what, call = self._queue[0]
                try:
                    call(self._run)
                except Exception as e:
                    if not is_store_failure(e):
                        self._queue.pop(0)  # the caller's fault, not the store's: raised, not kept
                    raise
                self._queue.pop(0)
        except Exception as e:
            if not is_store_failure(e):
                raise
            if not self._down:
                log.warning("%s failed (%s); the training goes on and keeps %s to record when the store "
                            "answers again", self.store, _short(e), "; ".join(self.missing()))
            self._down = True
            return
        if self._down:
            log.warning("%s answers again: what was kept is recorded now", self.store)
        self._down = False


def _short(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit] + " ..."
