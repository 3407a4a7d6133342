"""The multi-task loss: identification (softmax over N identities) + weighted verification (same/different)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reid.models.outputs import PairOutput, as_pair_output


def pair_loss(
    out: PairOutput | dict,
    pid1: Tensor,
    pid2: Tensor,
    same: Tensor,
    verification_weight: float = 0.5,
) -> dict[str, Tensor]:
    """``total = id + verification_weight * verif`` for a model's training forward (``out``: a PairOutput,
    or the dict of the custom-model interface, reid.models.outputs.as_pair_output).

    ``id`` is the cross-entropy of both images of every pair, averaged over the 2B images;
    ``verif`` the 2-way cross-entropy of the pair (class 1 = same identity). ``pid1``/``pid2`` are
    training labels 0..N-1; ``same`` is bool or 0/1. For ide (no verification logits) the
    verification terms are 0. Accuracies are detached fractions in [0, 1].
    """
    out = as_pair_output(out)
    logits = [out.logits1] + ([out.logits2] if out.logits2 is not None else [])
    labels = [pid1] + ([pid2] if len(logits) == 2 else [])
    for name, label, logit in zip(("pid1", "pid2"), labels, logits):
        if label.shape != logit.shape[:1]:
            raise ValueError(f"{name} has shape {tuple(label.shape)}, expected ({logit.shape[0]},) to match the logits")
    num_classes = logits[0].shape[1]
    all_labels = torch.cat(labels).to(device=logits[0].device).long()
    if bool(((all_labels < 0) | (all_labels >= num_classes)).any()):  # one host sync per step
        raise ValueError(
            f"identity labels must lie in 0..{num_classes - 1}, got min {int(all_labels.min())}, "
            f"max {int(all_labels.max())}: map person ids to contiguous training labels first"
        )
    all_logits = torch.cat(logits)
    id_loss = F.cross_entropy(all_logits.float(), all_labels)
    id_acc = (all_logits.detach().argmax(dim=1) == all_labels).float().mean()

    verif_logits = out.verif_logits
    if verif_logits is None:
        zero = id_loss.new_zeros(())
        verif_loss, verif_acc = zero, zero
    else:
        target = same.to(device=verif_logits.device).long()
        if target.shape != verif_logits.shape[:1]:
            raise ValueError(f"same has shape {tuple(same.shape)}, expected ({verif_logits.shape[0]},)")
        if bool(((target < 0) | (target > 1)).any()):
            raise ValueError("same must hold 0/1 (or bool) values")
        verif_loss = F.cross_entropy(verif_logits.float(), target)
        verif_acc = (verif_logits.detach().argmax(dim=1) == target).float().mean()
    return {
        "total": id_loss + verification_weight * verif_loss,
        "id": id_loss,
        "verif": verif_loss,
        "id_acc": id_acc,
        "verif_acc": verif_acc,
    }
