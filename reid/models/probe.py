"""A model run once through every path it will be used in, on one small batch, when it is built.

Training uses ``forward(x1, x2)`` and the pair losses, extraction and ``reid rank`` use ``embed(x)``
in eval mode, the MLflow LoggedModel wraps ``embed`` in reid.models.export.EmbeddingNet. A model
that breaks one of them (a custom ``embed`` returning a tuple, logits of the wrong width, ...) would
otherwise fail after every epoch had been trained; ``probe`` fails before the first, naming the
model's builder or variant (``what``) and the path.

The probe observes only: the weights, buffers (batch-norm running statistics), train/eval mode and
the random number generators' states are as they were before it ran, so a probed training is bit
for bit the training it would have been (tests/test_contracts.py compares model.pt with and without).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from reid.models.custom import CustomModelError, check_embedding, check_pair_output
from reid.models.runtime import autocast

PATHS = ("train", "embed", "export")


class ModelProbeError(ValueError):
    """A model that fails one of the paths it will be used in; the message names it and the path."""


def probe(model: nn.Module, *, num_classes: int, height: int, width: int, device: torch.device, precision: str,
          what: str, paths: tuple[str, ...] = PATHS, verification_weight: float = 0.5) -> None:
    """Run ``model`` once through each of ``paths`` on a batch of 2 random pairs of (3, height, width)
    images (a private generator: the global RNG is not drawn from) on ``device``, under ``precision``
    (config ``train.precision``):

    * ``train``: ``forward(x1, x2)`` in train mode, its output checked as the losses read it
      (reid.models.custom.check_pair_output) and the pair losses computed (no backward, no step);
    * ``embed``: ``embed(x)`` in eval mode, a (2, D) floating-point tensor (check_embedding);
    * ``export``: the LoggedModel's forward (reid.models.export.EmbeddingNet).

    Raises reid.models.custom.CustomModelError (an output of the wrong kind or shape) or
    ModelProbeError (anything the model raises), both naming ``what`` (a custom model's builder
    ``pkg.mod:build``, or ``model variant 'mutual'``), the path and the error. The model's state, mode and the RNG states are restored afterwards.
    """
    from reid.models.export import EmbeddingNet
    from reid.models.losses import pair_loss

    gen = torch.Generator().manual_seed(0)
    xa, xb = (torch.rand(2, 3, height, width, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
              for _ in range(2))
    labels = torch.tensor([0, min(1, num_classes - 1)], device=device)
    saved, mode = copy.deepcopy(model.state_dict()), model.training
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            for path in paths:
                try:
                    _run(path, model, xa, xb, labels, num_classes, device, precision, what, verification_weight,
                         pair_loss, EmbeddingNet)
                except (ModelProbeError, CustomModelError):  # these name the model and what is wrong already
                    raise
                except Exception as e:  # noqa: BLE001 - whatever the model raises is named with its path
                    raise ModelProbeError(f"{what}: the model fails its {_WHERE[path]} on a test batch, before any "
                                          f"training: {type(e).__name__}: {e}") from e
    finally:
        model.load_state_dict(saved)
        model.train(mode)
        model.zero_grad(set_to_none=True)


_WHERE = {"train": "training forward(x1, x2) and losses", "embed": "test embedding embed(x)",
          "export": "exported (MLflow LoggedModel) forward"}


def _run(path, model, xa, xb, labels, num_classes, device, precision, what, verification_weight, pair_loss,
         export_cls) -> None:
    batch = xa.shape[0]
    if path == "train":
        model.train()
        with torch.no_grad(), autocast(device, precision):
            out = model(xa, xb)
            check_pair_output(out, batch, num_classes, what)
            pair_loss(out, labels, labels.flip(0), labels == labels.flip(0), verification_weight=verification_weight)
    elif path == "embed":
        model.eval()
        with torch.inference_mode(), autocast(device, precision):
            check_embedding(model.embed(xa), batch, what)
    elif path == "export":
        with torch.inference_mode():
            emb = export_cls(model)(xa)
        check_embedding(emb, batch, f"{what} (exported)")
    else:
        raise ValueError(f"unknown probe path {path!r}; known: {', '.join(PATHS)}")
