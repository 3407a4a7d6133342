"""The learning-rate readings of section 5.1 (reid/schedules.py): one step, or a gradual decay."""

import math

import pytest

from reid.schedules import learning_rate

PAPER = {"lr": 0.01, "lr_step": 40, "lr_gamma": 0.1, "lr_decay_epochs": 20}


def test_step_is_a_factor_at_lr_step_and_its_multiples():
    cfg = {**PAPER, "lr_decay": "step"}
    lrs = [learning_rate(e, cfg) for e in range(100)]
    assert lrs[:40] == [0.01] * 40
    assert lrs[40:80] == [0.01 * 0.1] * 40 and lrs[80] == 0.01 * 0.1 ** 2
    # the arithmetic the training stage always used, bit for bit
    assert all(lrs[e] == 0.01 * 0.1 ** (e // 40) for e in range(100))


def test_gradual_decays_geometrically_from_lr_step_to_lr_times_gamma():
    cfg = {**PAPER, "lr_decay": "gradual"}
    lrs = [learning_rate(e, cfg) for e in range(70)]
    assert lrs[:40] == [0.01] * 40  # the first 40 epochs (0-39) at full rate
    assert lrs[40] == pytest.approx(0.01 * 0.1 ** (1 / 20))  # the 41st epoch: one twentieth of the decade
    assert lrs[59] == pytest.approx(0.001)  # the 60th epoch, the paper's last: x 0.1
    assert lrs[59:] == pytest.approx([0.001] * 11)  # and no further
    ratios = [lrs[e + 1] / lrs[e] for e in range(39, 59)]
    assert ratios[1:] == pytest.approx([0.1 ** (1 / 20)] * 19) and ratios[0] == pytest.approx(0.1 ** (1 / 20))
    assert math.prod(ratios) == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[39:59], lrs[40:60]))


def test_unknown_decay_and_negative_epoch_are_named():
    with pytest.raises(ValueError, match="train.lr_decay 'cosine' is unknown"):
        learning_rate(0, {**PAPER, "lr_decay": "cosine"})
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        learning_rate(-1, {**PAPER, "lr_decay": "step"})
