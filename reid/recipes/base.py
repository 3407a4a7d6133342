"""What a training recipe receives (:class:`Setting`) and what it returns (:class:`Plan`).

The training stage (reid.train) builds the model, then calls the recipe's ``plan(model, setting)``
and runs every recipe with one loop:

    for epoch in range(start, plan.epochs):
        lr, batches = plan.begin_epoch(epoch)     # sets the learning rate, draws the epoch's batches
        for batch in batches:
            values, images = plan.step(batch)     # forward, losses, backward, optimiser step
        row = {"epoch", "lr", *plan.columns (means over the batches), "images_per_s", "seconds"}
        callbacks: the tracker's run, then the checkpoint (reid.train)

A plan's randomness must come from (seed, epoch, sample) or from torch's global generator, whose
state the checkpoint saves, and its learning rate from the epoch index alone: then a run resumed
from a checkpoint is bit-identical to an uninterrupted one (tests/test_train.py, tests/test_bot.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reid.data.market import Record
from reid.typed_config import Section, TrainConfig


@dataclass(frozen=True)
class Setting:
    """Everything a recipe may read besides the model.

    ``records``: the training split (pid > 0); ``pid_to_label``: person id -> class index 0..N-1;
    ``stats``: the training mean image (reid.files.load_mean_image); ``train``: config
    ``train:`` (typed; ``workers``, ``device`` and ``precision`` apply to every recipe); ``recipe``:
    the recipe's own config section (typed, reid.typed_config), None for a recipe without one;
    ``custom_entry``: the builder of a model the package does not define (its outputs are checked),
    else None; ``mean_image``: the mean_image.pt file ``stats`` was read from.
    """

    records: list[Record]
    pid_to_label: Mapping[int, int]
    stats: Mapping[str, Any]
    seed: int
    device: torch.device
    train: TrainConfig
    recipe: Section | None = None
    custom_entry: str | None = None
    mean_image: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.pid_to_label)


class Plan:
    """One recipe applied to one model: its epochs, input size, optimiser state and training step.

    ``model``: the model it trains; ``columns``: the history.csv columns the recipe adds between ``lr``
    and ``images_per_s``, the first being the total loss (printed as the epoch goes); ``step``'s values
    carry exactly these keys.
    """

    model: torch.nn.Module
    epochs: int
    height: int
    width: int
    columns: tuple[str, ...]
    # the paths reid.models.probe runs the model through before training: a recipe whose training
    # forward is not the pair one (``forward(x1, x2)``) leaves out "train" and checks its own step
    probe_paths: tuple[str, ...] = ("embed", "export")
    # how the recipe normalised its inputs, for model.pt's meta ``input_normalisation`` (extraction
    # then does the same: reid.data.transforms.load_eval_transform); None: the mean image and std
    normalisation: dict | None = None

    def begin_epoch(self, epoch: int) -> tuple[float, Iterable]:
        """Set the learning rate of ``epoch`` (0-based) and put the model in training mode; returns
        (the learning rate, the epoch's batches: a sized iterable)."""
        raise NotImplementedError

    def step(self, batch) -> tuple[Mapping[str, Tensor], int]:
        """One optimisation step on ``batch``; returns ({column: scalar tensor}, images in the batch)."""
        raise NotImplementedError

    def optimizer_state(self) -> dict:
        """What the checkpoint keeps of the optimiser(s) (tensors and plain types)."""
        raise NotImplementedError

    def load_optimizer_state(self, state: dict) -> None:
        raise NotImplementedError
