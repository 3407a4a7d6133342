"""Training checkpoints: the last two epochs, written atomically, read with ``weights_only=True``.

A training job's checkpoint folder (``results/checkpoints/{dataset}/{model}/seed{seed}/``) is not a
declared Snakemake output, so a failed or killed job leaves it for the retry. It holds

- ``last.pt``: the state after the most recent epoch, and
- ``previous.pt``: the state one epoch earlier (``last.pt`` is renamed to it before a new one is written).

Both are written through :func:`reid.io.torch_save` (temporary file, fsync, rename, fsync of the
folder) and hold only tensors and plain Python types (the RNG state is a tensor, the history a list of
dicts of floats), so they load with ``torch.load(..., weights_only=True)``. A file that still cannot
be read (empty or cut short by a dead node or a full disk, written by an older version, ...) is moved
aside to ``damaged-<name>-<n>.pt`` and never deleted; the other one is tried next, and with none left
training starts afresh. A checkpoint made with other result-changing settings (its ``key`` differs:
:class:`RunIdentity` derives it from the run's settings, see :func:`reid.config.checkpoint_keys`) or past the configured number of epochs is moved aside to
``stale-<key>-<name>`` the same way. :class:`Resume` says which of these happened, for the log and the
MLflow run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reid import io
from reid.config import checkpoint_keys, config_hash, result_keys

log = logging.getLogger("reid.checkpoint")

LAST, PREVIOUS = "last.pt", "previous.pt"
# What a checkpoint must hold; anything else is a damaged (or foreign) file.
REQUIRED = ("model", "optimizer", "epoch", "rng_cpu", "history", "key")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


@dataclass
class Resume:
    """What :meth:`Checkpointer.load` found: the state to resume from (None: start afresh) and why.

    ``summary`` is one line for the log and the MLflow tag ``checkpoint``, e.g.
    ``resumed from previous.pt after epoch 2 (last.pt damaged: ...; moved to damaged-last.pt-1.pt)``.
    """

    state: dict | None
    source: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def epochs_done(self) -> int:
        return 0 if self.state is None else int(self.state["epoch"]) + 1

    @property
    def summary(self) -> str:
        head = (f"resumed from {self.source} after epoch {self.epochs_done}" if self.state is not None
                else "started afresh")
        return head + (f" ({'; '.join(self.notes)})" if self.notes else "")


@dataclass(frozen=True)
class RunIdentity:
    """What one training run is: the settings its numbers depend on, hashed two ways.

    ``sections`` are the config sections the run reads, by name and in a fixed order (``model``,
    ``train``, then the recipe's own section if it has one, reid.recipes), as the schema spells them
    (``Section.as_dict()``); ``builder`` is the ``package.module:function`` of a model that is not one
    of the paper's variants (another builder under the same name is another model).
    """

    dataset: str
    variant: str
    seed: int
    sections: Mapping[str, Mapping[str, Any]]
    builder: str | None = None

    @property
    def config_hash(self) -> str:
        """The run's result hash (MLflow tag ``config_hash``, run.json, model.pt's meta): its result keys
        (reid.config.result_keys), runtime keys left out."""
        return config_hash(self.dataset, self.variant, self.seed,
                           *(result_keys(dict(v), k) for k, v in self.sections.items()), *self._builder)

    def checkpoint_key(self, data_digest: str) -> str:
        """The key a checkpoint of this run must carry: its checkpoint keys (reid.config.checkpoint_keys:
        ``*.epochs`` may grow) and the digest of the training split's files."""
        return config_hash(self.dataset, self.variant, self.seed,
                           *(checkpoint_keys(dict(v), k) for k, v in self.sections.items()), data_digest,
                           *self._builder)

    @property
    def _builder(self) -> tuple[str, ...]:
        return () if self.builder is None else (self.builder,)


def read_checkpoint(path: str | Path) -> dict:
    """Load one checkpoint with ``weights_only=True`` (reid.files' torch loader); raises CheckpointError
    naming the file when it is empty, cut short, not a torch file of plain types, or lacks one of REQUIRED."""
    from reid.files import DamagedFileError, load_torch

    path = Path(path)
    try:
        state = load_torch(path, "checkpoint")
    except DamagedFileError as e:  # its message's advice (move it aside, rerun) is what load() does
        raise CheckpointError(f"{path}: {e.problem}") from None
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")
    return state


class Checkpointer:
    """The checkpoints of one training run (one model, one seed) in ``folder``.

    ``key`` identifies the result-changing settings the checkpoints are valid for; ``epochs`` is the
    configured number of epochs (a checkpoint past it cannot be continued).
    """

    def __init__(self, folder: str | Path, key: str, epochs: int):
        self.folder, self.key, self.epochs = Path(folder), key, epochs
        self.folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_run(cls, folder: str | Path, identity: RunIdentity, data_digest: str, epochs: int) -> Checkpointer:
        """The checkpoints of the run ``identity`` on the training split whose files hash to
        ``data_digest`` (reid.train.training_data_digest), ``epochs`` epochs long."""
        return cls(folder, identity.checkpoint_key(data_digest), epochs)

    @property
    def last(self) -> Path:
        return self.folder / LAST

    @property
    def previous(self) -> Path:
        return self.folder / PREVIOUS

    def _move_aside(self, path: Path, prefix: str) -> Path:
        n = 1
        while (target := self.folder / f"{prefix}-{path.name}-{n}.pt").exists():
            n += 1
        os.replace(path, target)
        io.fsync_dir(self.folder)
        return target

    def load(self) -> Resume:
        """The newest usable checkpoint (last.pt, else previous.pt), moving unusable ones aside."""
        notes: list[str] = []
        for path in (self.last, self.previous):
            if not path.exists():
                continue
            try:
                state = read_checkpoint(path)
            except CheckpointError as e:
                moved = self._move_aside(path, "damaged")
                notes.append(f"{path.name} damaged: {e}; moved to {moved.name}")
                log.warning("checkpoint %s; moved to %s", e, moved)
                continue
            done = int(state["epoch"]) + 1
            if state["key"] != self.key or done > self.epochs:
                why = (f"made with other settings (key {state['key']} != {self.key})" if state["key"] != self.key
                       else f"after epoch {done}, past train.epochs {self.epochs}")
                moved = self._move_aside(path, f"stale-{state['key']}")
                notes.append(f"{path.name} {why}; moved to {moved.name}")
                log.warning("checkpoint %s %s: moved to %s", path, why, moved)
                continue
            resume = Resume(state, path.name, notes)
            log.info("checkpoint: %s", resume.summary)
            return resume
        resume = Resume(None, None, notes)
        log.info("checkpoint: %s", resume.summary)
        return resume

    def save(self, state: dict) -> Path:
        """Write ``state`` (tensors and plain types, with REQUIRED keys; ``key`` is added) as last.pt,
        keeping the one before as previous.pt."""
        state = {**state, "key": self.key}
        if self.last.exists():
            os.replace(self.last, self.previous)  # a crash right after leaves previous.pt to resume from
        return io.torch_save(self.last, state)
