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


def single_image_step_flops(model: torch.nn.Module, height: int, width: int, images: int = 4) -> int:
    """FLOPs of one training step's forward and backward pass of a model trained on single images (the
    strong baseline's recipe, reid.recipes.bot: ``forward(x)`` returns ``logits`` (N, classes) and
    ``feature`` (N, D)) on ``images`` height x width images, two identities.

    The loss is the identity cross-entropy plus the squared pairwise feature distances, standing in for
    the triplet loss: losses cost a negligible share of a step, and its backward pass reaches every
    layer the recipe's losses reach. Counted as ``training_step_flops``, on a CPU deep copy.
    """
    from torch.utils.flop_counter import FlopCounterMode

    clone = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).train()
    num_classes = clone.classifier.out_features
    x = torch.randn(images, 3, height, width, device="cpu")
    labels = (torch.arange(images, device="cpu") * 2 // images) % num_classes
    with FlopCounterMode(display=False) as counter:
        out = clone(x)
        loss = torch.nn.functional.cross_entropy(out["logits"], labels) + torch.cdist(out["feature"],
                                                                                       out["feature"]).pow(2).mean()
        loss.backward()
    return int(counter.get_total_flops())


def recipe_step_flops(model: torch.nn.Module, recipe: str, height: int, width: int) -> int:
    """FLOPs of one training step on 4 images under training recipe ``recipe`` (reid.recipes): 2 pairs
    for the paper's Siamese recipe (``training_step_flops``), 4 single images otherwise
    (``single_image_step_flops``). Proportional to the images: compare two models of one recipe, or
    per image."""
    if recipe == "siamese":
        return training_step_flops(model, height, width, pairs=2)
    return single_image_step_flops(model, height, width, images=4)
