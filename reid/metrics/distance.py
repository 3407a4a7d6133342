"""Distances between feature sets (numpy or torch in; the type of `a` out)."""

from __future__ import annotations

import numpy as np
import torch

from . import _inputs


def euclidean_distance(a, b, *, device=None, block_rows=4096):
    """Plain (not squared) Euclidean distances, len(a) x len(b), float32 (any float input dtype).

    Computed as sqrt(|a|^2 + |b|^2 - 2 a.b) clamped at zero, by blocks of rows; numpy in gives
    numpy out, torch in gives a tensor on the working device (`device`, else where `a` lives).
    """
    out = squared_euclidean_distance(a, b, device=device, block_rows=block_rows)
    return out.sqrt_() if _inputs.is_tensor(out) else np.sqrt(out, out=out)


def squared_euclidean_distance(a, b, *, device=None, block_rows=4096):
    """|a_i - b_j|^2, len(a) x len(b), float32, clamped at zero."""
    ta, tb = _pair(a, b, device)
    sa, sb = (ta * ta).sum(1), (tb * tb).sum(1)
    out = torch.empty((ta.shape[0], tb.shape[0]), dtype=torch.float32, device=ta.device)
    for s in range(0, ta.shape[0], block_rows):
        e = min(s + block_rows, ta.shape[0])
        torch.addmm(sa[s:e, None] + sb[None, :], ta[s:e], tb.T, alpha=-2.0, out=out[s:e])
    out.clamp_(min=0)
    _inputs.finite_result(out.amax() if out.numel() else out, "squared_euclidean_distance")
    return out if _inputs.is_tensor(a) else out.cpu().numpy()


def l2_normalize(x, eps: float = 1e-12):
    """Rows scaled to unit L2 norm (rows of zeros stay zero). Same type as `x`, float32."""
    t = _inputs.float_tensor(x, "features")
    t = t / t.norm(dim=1, keepdim=True).clamp_min(eps)
    _inputs.finite_result(t, "l2_normalize")
    return t if _inputs.is_tensor(x) else t.numpy()


def _pair(a, b, device):
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    if len(shape_a) != 2 or len(shape_b) != 2:
        raise ValueError(f"features: expected 2-D (images x dims) matrices, got {shape_a} and {shape_b}")
    if shape_a[1] != shape_b[1]:
        raise ValueError(f"features: dimension mismatch, {shape_a[1]} vs {shape_b[1]}")
    _inputs.matrix(a, "a")
    _inputs.matrix(b, "b")
    dev = _inputs.resolve_device(device, a, b)
    return _inputs.float_tensor(a, "a", dev), _inputs.float_tensor(b, "b", dev)
