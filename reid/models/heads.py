"""The heads on the pooled backbone feature: 512-d embedding, identity classifier, pair verifier."""

from __future__ import annotations

from torch import Tensor, nn

# The slope used by the common re-ID "ClassBlock" baseline for this embedding layer.
LEAKY_SLOPE = 0.1


class Embedding(nn.Module):
    """The "sequential" layer that replaces ResNet's fc: linear -> batch norm -> LeakyReLU.

    Dropout, the last element of the paper's sequence, is applied by the model on the way to each
    classifier, so that this module's output is the test-time embedding.
    """

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(in_features, dim)
        self.norm = nn.BatchNorm1d(dim)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        nn.init.kaiming_normal_(self.linear.weight, a=LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
        nn.init.zeros_(self.linear.bias)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.act(self.norm(self.linear(pooled)))


def linear_head(in_features: int, classes: int) -> nn.Linear:
    """A Kaiming-initialised linear classifier (linear gain: a softmax, not a ReLU, follows)."""
    head = nn.Linear(in_features, classes)
    nn.init.kaiming_normal_(head.weight, mode="fan_in", nonlinearity="linear")
    nn.init.zeros_(head.bias)
    return head
