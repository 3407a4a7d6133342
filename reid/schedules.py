"""Learning-rate schedules: two readings of the paper's decay (section 5.1).

The paper: "The learning rate gradually faded by a factor of 1 x 10^-1 between the 40th and 60th
epoch", of 60 epochs. Config ``train.lr_decay`` chooses the reading (docs/model.md, "Readings"):

* ``step`` (the default): lr x lr_gamma^(epoch // lr_step), a step at lr_step and every multiple
  of it; with lr_step 40 and 60 epochs, epochs 0-39 at lr and 40-59 at lr x 0.1.
* ``gradual``: lr up to epoch lr_step - 1, then a geometric decay, one factor per epoch, that
  reaches lr x lr_gamma after ``lr_decay_epochs`` epochs and stays there:
  lr x lr_gamma^(min(1, (epoch - lr_step + 1) / lr_decay_epochs)) for epoch >= lr_step. With
  lr_step 40, lr_decay_epochs 20 and 60 epochs: epoch 40 (the 41st) at lr x 0.1^(1/20), epoch 59
  (the 60th, the last) at lr x 0.1.

Both depend on the epoch index alone, so a run continued to more epochs equals a longer run
(reid.config.CONTINUABLE_KEYS). Epochs are counted from 0.
"""

from __future__ import annotations

LR_DECAYS = ("step", "gradual")


def learning_rate(epoch: int, cfg: dict) -> float:
    """The learning rate of ``epoch`` (0-based) from config ``train`` (lr, lr_step, lr_gamma, lr_decay,
    lr_decay_epochs). ValueError on a negative epoch or an unknown lr_decay."""
    if epoch < 0:
        raise ValueError(f"learning_rate: epoch must be >= 0, got {epoch}")
    decay = cfg["lr_decay"]
    if decay == "step":
        return cfg["lr"] * cfg["lr_gamma"] ** (epoch // cfg["lr_step"])
    if decay == "gradual":
        done = min(1.0, max(0, epoch - cfg["lr_step"] + 1) / cfg["lr_decay_epochs"])
        return cfg["lr"] * cfg["lr_gamma"] ** done
    raise ValueError(f"train.lr_decay {decay!r} is unknown; choose one of {', '.join(LR_DECAYS)}")
