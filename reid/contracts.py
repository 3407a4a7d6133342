"""What each stage checks before it commits: the one place of the checks that stop a bad result
from being declared a success (docs/files.md, "Stage contracts").

* training: a finite loss at every epoch (``check_epoch``, naming the epoch) and finite weights
  before any checkpoint or model.pt is written (``check_finite_weights``, naming the file);
  bf16 autocast on CPU is refused before the work (``check_training_precision``);
* extraction: finite features, as many rows as images in each split (``check_features``).

Every failure is a ContractError (a ValueError: ``python -m reid`` prints it and exits 1) naming the
file it would have written, the epoch or the split, and what is wrong; nothing already on disk is
touched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import torch

from reid.config import ConfigError

LOSS_KEYS = ("loss_total", "loss_id", "loss_verif", "loss_triplet", "loss_center")  # every recipe's (reid.recipes)


class ContractError(ValueError):
    """A stage's result that breaks what a later step relies on (non-finite, wrong count)."""


def check_training_precision(device: torch.device, precision: str) -> None:
    """Refuse ``train.precision: bf16`` on a CPU device, before any work.

    PyTorch's CPU bfloat16 autocast computes wrong weight gradients for stride-2 convolutions
    (ResNet's downsampling layers): reproduced with PyTorch alone (tests/test_contracts.py), and in
    training at the schema's smallest input, 3 seeds of 3 saved thousands of non-finite weights while
    the logged losses looked normal. bf16 stays available on CUDA. Raises ConfigError.
    """
    if precision == "bf16" and device.type == "cpu":
        raise ConfigError("train.precision: bf16 is refused on the CPU (train.device resolved to cpu): PyTorch's "
                          "CPU bfloat16 autocast computes wrong weight gradients for stride-2 convolutions, which "
                          "leaves non-finite weights behind normal-looking losses. Use train.precision: fp32 on "
                          "the CPU, or train on CUDA (docs/model.md)")


def check_epoch(row: Mapping[str, float], model: torch.nn.Module) -> None:
    """After an epoch (its history row, ``epoch`` 1-based): every loss finite and every weight finite,
    before the epoch is logged or checkpointed. Raises ContractError naming the epoch."""
    epoch = int(row["epoch"])
    bad = {k: row[k] for k in LOSS_KEYS if k in row and not math.isfinite(float(row[k]))}
    if bad:
        raise ContractError(f"epoch {epoch}: non-finite training loss ({', '.join(f'{k} = {v}' for k, v in bad.items())}); "
                            "nothing of this epoch is checkpointed or saved (lower train.lr, or check the data)")
    check_finite_weights(model.state_dict(), f"the weights after epoch {epoch}")


def check_finite_weights(state: Mapping[str, torch.Tensor], where: str | Path) -> None:
    """Every floating-point tensor of ``state`` (a state dict) finite; ``where`` names the file about to
    be written (or the moment). Raises ContractError naming it, the count and the first tensor."""
    total, first = 0, None
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            n = int((~torch.isfinite(tensor)).sum())
            if n and first is None:
                first = name
            total += n
    if total:
        raise ContractError(f"{where}: not written: {total} non-finite weight value(s), first in {first!r} "
                            "(the training diverged)")


def check_features(result: Mapping, counts: Mapping[str, int], out: str | Path, model_path: str | Path) -> None:
    """features.pt's content before it is written: for every ``<prefix>_feats`` tensor, finite values and
    one row per image (``counts``: prefix -> number of images, with ids, cameras and paths as long).
    Raises ContractError naming ``out``, the split and the model file."""
    for prefix, n in counts.items():
        feats = result[f"{prefix}_feats"]
        if feats.shape[0] != n or any(len(result[f"{prefix}_{k}"]) != n for k in ("pids", "camids", "paths")):
            raise ContractError(f"{out}: not written: {prefix} has {feats.shape[0]} feature rows for {n} images")
        bad = int((~torch.isfinite(feats)).any(dim=1).sum()) if feats.numel() else 0
        if bad:
            raise ContractError(f"{out}: not written: {bad} of {n} {prefix} features are not finite "
                                f"(the model {model_path} gives NaN or infinite embeddings)")
