"""Self-attention (eqs. 1-4) and mutual attention (eqs. 5-8) of Jamal et al., Symmetry 2020.

Every attention tensor of the paper is a sum of a few outer products of a spatial map (H x W) and a
channel vector (C):

* SA = conv1x1(SPA * CA) = SPA (x) (W_sa CA) + b_sa             -- 2 terms (the bias is "1 (x) b_sa")
* SA_1 * SA_2                                                     -- 2 x 2 = 4 terms
* MA = conv1x1(SA_1 * SA_2)                                       -- the conv acts on the channel vectors only

A 1x1 convolution is a linear map of the channel vector at each position, so applying it to
``s (x) v`` gives ``s (x) (W v)``. :class:`LowRankMap` keeps that factored form, which makes the
convolutions of eqs. 4 and 6 cost C^2 per image instead of C^2 * H * W; with ResNet-50's C = 2048
the dense version would add ~20% FLOPs to a training step, the factored one well under 1%. The
result is the same tensor (checked against the literal equations in tests/models/test_model_attention.py).

Scale. Written on the raw feature map, SA grows like |f|^2 and MA like |f|^4, so a pair whose
features are twice as strong gets a 16x larger MA. Within a batch one such pair dominates the
batch-norm statistics downstream and flattens everyone else's pair features (seen: the verifier
collapsed to a constant on a 6-pair toy batch, and the eval-mode loss reached 1e12). With
``input_norm="rms"`` (the default) eqs. 1-4 are evaluated on f / RMS(f), RMS taken per image over
C x H x W: the maps become invariant to the feature scale and F = f * MA + f stays linear in f, as
the baseline is. ``input_norm="none"`` is the verbatim reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LowRankMap:
    """``X[n, c, i, j] = sum_t spatial[n, t, i, j] * channel[n, c, t]`` -- a C x H x W map of rank T."""

    spatial: Tensor  # (N, T, H, W)
    channel: Tensor  # (N, C, T)

    def __post_init__(self) -> None:
        n, t = self.spatial.shape[:2]
        matching = self.channel.dim() == 3 and self.channel.shape[0] == n and self.channel.shape[2] == t
        if self.spatial.dim() != 4 or not matching:
            raise ValueError(
                f"LowRankMap needs spatial (N, T, H, W) and channel (N, C, T) with matching N and T; "
                f"got {tuple(self.spatial.shape)} and {tuple(self.channel.shape)}"
            )

    @property
    def rank(self) -> int:
        return self.spatial.shape[1]

    def dense(self, channels_last: bool = False) -> Tensor:
        """The full (N, C, H, W) tensor, laid out channels-last if asked (to match a channels-last f)."""
        n, t, h, w = self.spatial.shape
        c = self.channel.shape[1]
        spatial = self.spatial.reshape(n, t, h * w)
        if channels_last:
            # (N, HW, T) @ (N, T, C) -> (N, HW, C): memory order N, H, W, C
            out = torch.bmm(spatial.transpose(1, 2), self.channel.transpose(1, 2))
            return out.view(n, h, w, c).permute(0, 3, 1, 2)
        return torch.bmm(self.channel, spatial).view(n, c, h, w)

    def rows(self, index: slice) -> LowRankMap:
        """The maps of a slice of the batch."""
        return LowRankMap(self.spatial[index], self.channel[index])

    def repeat(self, times: int) -> LowRankMap:
        """The batch repeated ``times`` times, e.g. one MA for both members of every pair."""
        return LowRankMap(self.spatial.repeat(times, 1, 1, 1), self.channel.repeat(times, 1, 1))

    def __mul__(self, other: LowRankMap) -> LowRankMap:
        """Element-wise product: (sum_t s_t v_t)(sum_u s'_u v'_u) = sum_{t,u} (s_t s'_u)(v_t v'_u)."""
        n, t, h, w = self.spatial.shape
        u = other.rank
        spatial = (self.spatial.unsqueeze(2) * other.spatial.unsqueeze(1)).reshape(n, t * u, h, w)
        channel = (self.channel.unsqueeze(3) * other.channel.unsqueeze(2)).reshape(n, -1, t * u)
        return LowRankMap(spatial, channel)

    def modulate(self, f: Tensor) -> Tensor:
        """``f * X + f`` (eqs. 7-8), computed as ``f * (X + 1)`` with the 1 folded in as one more term."""
        plus_one = LowRankMap(
            torch.cat([self.spatial, torch.ones_like(self.spatial[:, :1])], dim=1),
            torch.cat([self.channel, torch.ones_like(self.channel[:, :, :1])], dim=2),
        )
        return f * plus_one.dense(channels_last=_is_channels_last(f)).to(f.dtype)


def conv1x1_lowrank(conv: nn.Conv2d, x: LowRankMap) -> LowRankMap:
    """``conv(x)`` for a 1x1 convolution: W acts on each channel vector; the bias is a rank-1 term ``1 (x) b``."""
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels)
    channel = torch.matmul(weight, x.channel)  # (C_out, C_in) @ (N, C_in, T) -> (N, C_out, T)
    spatial = x.spatial
    if conv.bias is not None:
        n = spatial.shape[0]
        spatial = torch.cat([spatial, torch.ones_like(spatial[:, :1])], dim=1)
        channel = torch.cat([channel, conv.bias.to(channel.dtype).view(1, -1, 1).expand(n, -1, 1)], dim=2)
    return LowRankMap(spatial, channel)


def spatial_attention(f: Tensor) -> Tensor:
    """Eq. 1: SPA(i, j) = (1/C) sum_c f_c(i, j), shape (N, 1, H, W)."""
    return f.mean(dim=1, keepdim=True)


INPUT_NORMS = ("rms", "none")
# How many channels SA (eq. 4) and MA (eq. 6) have (config model.attention_channels; docs/model.md,
# "Readings"). The paper gives SPA as "H x W x 1" and CA as "1x1xC", not the size of their product
# after eq. 4's 1 x 1 convolution.
#   per_channel - C x H x W: a weight for every channel and position (the default)
#   shared      - 1 x H x W: eq. 4's and eq. 6's convolutions give one map, which rescales every channel
ATTENTION_CHANNELS = ("per_channel", "shared")
# How the last 1x1 conv of self-attention (eq. 4) starts:
#   kaiming - Kaiming-normal, linear gain, as the paper says for new layers
#   zero    - zero weights: SA = 0, so every F = f * SA + f (and f * MA + f) starts equal to f
ATTENTION_INITS = ("kaiming", "zero")
_EPS = 1e-6


def rms_normalize(f: Tensor) -> Tensor:
    """f / sqrt(mean over C, H, W of f^2) per image (accumulated in float32 under autocast)."""
    mean_square = f.float().pow(2).mean(dim=(1, 2, 3), keepdim=True)
    return f / mean_square.add(_EPS).sqrt().to(f.dtype)


class SelfAttention(nn.Module):
    """Eqs. 1-4: SA = conv1x1(SPA * CA) with SPA the channel mean and CA = conv1x1(avgpool(f)).

    ``input_norm="rms"`` evaluates them on f / RMS(f) (see the module docstring), ``"none"`` on f.
    ``init`` is one of ATTENTION_INITS, ``maps`` one of ATTENTION_CHANNELS (SA of C channels or of 1).
    """

    def __init__(self, channels: int, input_norm: str = "rms", init: str = "kaiming", maps: str = "per_channel"):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"model.attention_norm {input_norm!r} is unknown; choose one of {', '.join(INPUT_NORMS)}")
        if init not in ATTENTION_INITS:
            raise ValueError(f"model.attention_init {init!r} is unknown; choose one of {', '.join(ATTENTION_INITS)}")
        self.input_norm = input_norm
        self.init = init
        self.channel_conv = nn.Conv2d(channels, channels, kernel_size=1)  # eq. 3
        self.fuse_conv = nn.Conv2d(channels, _map_channels(channels, maps), kernel_size=1)  # eq. 4
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # No non-linearity follows either conv, hence the linear gain. Even so, on f / RMS(f) a
        # Kaiming-initialised SA has entries of order 0.5: F = f * SA + f starts as f scaled by a
        # random ~50% per channel and position, which a network trained from scratch takes epochs
        # to undo (docs/model.md, "Initialisation"). "zero" starts SA, and with it MA, at 0.
        for conv in (self.channel_conv, self.fuse_conv):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
            nn.init.zeros_(conv.bias)
        if self.init == "zero":
            nn.init.zeros_(self.fuse_conv.weight)

    def channel_attention(self, f: Tensor) -> Tensor:
        """Eqs. 2-3: CA = conv1x1(avgpool(f)), returned as (N, C)."""
        pooled = f.mean(dim=(2, 3))  # eq. 2, global average pooling
        weight = self.channel_conv.weight.reshape(self.channel_conv.out_channels, -1)
        return torch.nn.functional.linear(pooled, weight, self.channel_conv.bias)

    def forward(self, f: Tensor) -> LowRankMap:
        """SA as a rank-2 map: SPA (x) W_sa CA  +  1 (x) b_sa (eq. 4 on the rank-1 product SPA * CA)."""
        if self.input_norm == "rms":
            f = rms_normalize(f)
        spa = spatial_attention(f)  # (N, 1, H, W)
        ca = self.channel_attention(f)  # (N, C)
        product = LowRankMap(spa, ca.unsqueeze(2))  # SPA * CA, broadcast to C x H x W
        return conv1x1_lowrank(self.fuse_conv, product)


class MutualAttention(nn.Module):
    """Eqs. 5-6: MA = conv1x1(SA_1 * SA_2). Symmetric in its two inputs because * commutes.

    ``zero`` starts the conv's weights at 0 (MA = 0: the pair path starts as the plain backbone).
    ``maps`` (ATTENTION_CHANNELS) must be the SelfAttention's: MA has as many channels as SA.
    """

    def __init__(self, channels: int, zero: bool = False, maps: str = "per_channel"):
        super().__init__()
        self.zero = zero
        width = _map_channels(channels, maps)
        self.conv = nn.Conv2d(width, width, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(self.conv.bias)
        if self.zero:  # MA = 0 at the start: F = f * MA + f = f
            nn.init.zeros_(self.conv.weight)

    def forward(self, sa1: LowRankMap, sa2: LowRankMap) -> LowRankMap:
        return conv1x1_lowrank(self.conv, sa1 * sa2)


def _is_channels_last(f: Tensor) -> bool:
    return f.dim() == 4 and not f.is_contiguous() and f.is_contiguous(memory_format=torch.channels_last)


def _map_channels(channels: int, maps: str) -> int:
    """The channels of SA and MA: ``channels`` (per_channel) or 1 (shared); ValueError otherwise."""
    if maps not in ATTENTION_CHANNELS:
        raise ValueError(f"model.attention_channels {maps!r} is unknown; choose one of {', '.join(ATTENTION_CHANNELS)}")
    return channels if maps == "per_channel" else 1
