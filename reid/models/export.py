"""The trained model as MLflow serves it: single test images in, L2-normalised embeddings out."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class EmbeddingNet(nn.Module):
    """A trained model's test path (``embed``), for the MLflow LoggedModel.

    Input: float32 (N, 3, H, W) images as ``reid.data.transforms.load_eval_transform`` makes them
    (RGB in [0, 1] minus the training mean image, resized to the training H x W). Output: float32
    (N, D) L2-normalised embeddings from the model's test path (``embed``; ReIDModel: the single-image path),
    without the flip test: rank a gallery by the Euclidean (or cosine) distance between them.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        # embed(x): the test-time features of every model, built-in or custom (docs/extending.md)
        return F.normalize(self.model.embed(images).float(), dim=1)

    def train(self, mode: bool = True) -> "EmbeddingNet":
        # the test path always runs in eval mode (running batch-norm statistics, no dropout)
        return super().train(False)
