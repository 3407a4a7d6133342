"""Distances between feature sets (numpy or torch in; the type of `a` out)."""

from __future__ import annotations

import numpy as np
import torch

from . import _inputs

SPAN = 2048  # rows and columns per matrix-product block, here and in re-ranking (rerank.py, stream.py)
# float32 normalisation leaves norms within about 3e-7 of 1 (measured for 64- to 4096-d rows);
# a row this close to unit length is unit length up to rounding
UNIT_NORM_TOLERANCE = 1e-6


def euclidean_distance(a, b, *, device=None, block_rows=4096):
    """Plain (not squared) Euclidean distances, len(a) x len(b), float32 (any float input dtype).

    The square root of `squared_euclidean_distance` (same arithmetic, same blocks); numpy in gives
    numpy out, torch in gives a tensor on the working device (`device`, else where `a` lives).
    """
    out = squared_euclidean_distance(a, b, device=device, block_rows=block_rows)
    return out.sqrt_() if _inputs.is_tensor(out) else np.sqrt(out, out=out)


def squared_euclidean_distance(a, b, *, device=None, block_rows=4096):
    """|a_i - b_j|^2, len(a) x len(b), float32, clamped at zero.

    Computed as (|b_j|^2 - 2 a_i.b_j) + |a_i|^2: one matrix product (`torch.addmm` with |b|^2 as
    its input) per block of block_rows rows of `a` and SPAN columns of `b`, then the row
    constant added. That is exactly how k-reciprocal re-ranking (`re_ranking_features`, and the
    streamed evaluation in `stream.py`) computes a query's distances to the gallery, so the plain
    and the re-ranked protocols can share one product and still match this function bit for bit.
    The column spans matter: BLAS computes the entries of a narrow product (under about 12
    columns) differently from the same entries of a wide one.
    """
    ta, tb = _pair(a, b, device)
    sa, sb = (ta * ta).sum(1), (tb * tb).sum(1)
    out = torch.empty((ta.shape[0], tb.shape[0]), dtype=torch.float32, device=ta.device)
    for s in range(0, ta.shape[0], block_rows):
        e = min(s + block_rows, ta.shape[0])
        for c in range(0, tb.shape[0], SPAN):
            d = min(c + SPAN, tb.shape[0])
            out[s:e, c:d] = torch.addmm(sb[None, c:d], ta[s:e], tb[c:d].T, alpha=-2.0)
        out[s:e] += sa[s:e, None]
    out.clamp_(min=0)
    _inputs.finite_result(out.amax() if out.numel() else out, "squared_euclidean_distance")
    return out if _inputs.is_tensor(a) else out.cpu().numpy()


def l2_normalize(x, eps: float = 1e-12):
    """Rows scaled to unit L2 norm (rows of zeros stay zero). Same type as `x`, float32.

    Rows that already have unit norm, to within UNIT_NORM_TOLERANCE (their float32 norm), are
    returned unchanged: dividing them by their float32 norm again would change only their last
    bits (about 40% of the rows of 512-d features from `reid extract`). So normalising is
    idempotent, and the features `reid extract` writes (F.normalize, norms within 3e-7 of 1)
    are ranked as written by the multi-query protocols too, which then share the single-query
    gallery and its re-ranking neighbour search (`stream.py`).
    """
    t = _inputs.float_tensor(x, "features")
    norm = t.norm(dim=1, keepdim=True)
    unit = (norm - 1.0).abs_() <= UNIT_NORM_TOLERANCE
    if bool(unit.all()):
        t = t.clone()  # a new array, as when rows are scaled: never an alias of the caller's
    else:
        t = torch.where(unit, t, t / norm.clamp_min(eps))
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
