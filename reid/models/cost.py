"""The cost of a model: FLOPs of one training step, counted by torch.utils.flop_counter.

A count, not a timing: independent of the machine and of its load. ``benchmarks/bench_models.py``
(--flops) and the readings table (results/tables/readings.md) use it.
"""

from __future__ import annotations

import copy

import torch

from reid.models.losses import pair_loss


def training_step_flops(model: torch.nn.Module, height: int, width: int, pairs: int = 2,
                        verification_weight: float = 0.5) -> int:
    """FLOPs of one training step's forward and backward pass on ``pairs`` pairs of height x width images.

    Runs on a CPU deep copy of the model with random inputs (its weights and batch-norm statistics
    are untouched): about a second at ResNet-50, 256 x 128, 2 pairs. FLOPs are those torch.utils.flop_counter assigns to
    matrix products and convolutions (2 per multiply-add); element-wise operations and the
    optimizer update are not counted. Proportional to ``pairs``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    clone = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).train()
    num_classes = clone.classifier.out_features
    x1 = torch.randn(pairs, 3, height, width, device="cpu")
    x2 = torch.randn(pairs, 3, height, width, device="cpu")
    pid1 = torch.arange(pairs, device="cpu") % num_classes
    same = torch.arange(pairs, device="cpu") % 2 == 0
    pid2 = torch.where(same, pid1, (pid1 + 1) % num_classes)
    with FlopCounterMode(display=False) as counter:
        out = clone(x1, x2)  # as in training: ide too sees both images of each pair
        losses = pair_loss(out, pid1, pid2, same, verification_weight=verification_weight)
        losses["total"].backward()
    return int(counter.get_total_flops())
