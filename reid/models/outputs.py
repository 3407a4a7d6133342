"""What a model's training forward returns: one fixed, typed output that the losses read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor


class PairOutput(NamedTuple):
    """The training forward's result on a batch of B pairs (x1[i], x2[i]).

    ``logits1``/``logits2``: (B, N) identity logits of x1[i] / x2[i] (``logits2`` None when the
    model ran on x1 alone); ``verif_logits``: (B, 2) same/different logits of each pair (class 1 =
    same identity), None for a model without a verifier. reid.models.losses.pair_loss reads it.
    """

    logits1: Tensor
    logits2: Tensor | None
    verif_logits: Tensor | None


def as_pair_output(out: Any) -> PairOutput:
    """``out`` as a PairOutput: a PairOutput itself, or the dict of the custom-model interface
    (docs/extending.md: ``logits1``, ``logits2``, optional ``verif_logits``). Raises KeyError for a
    dict without ``logits1``, TypeError for anything else."""
    if isinstance(out, PairOutput):
        return out
    if isinstance(out, Mapping):
        return PairOutput(out["logits1"], out.get("logits2"), out.get("verif_logits"))
    raise TypeError(f"a model's forward(x1, x2) returned {type(out).__name__}, expected a PairOutput or a dict")
