"""Input checks shared by the metrics: numpy or torch in, clear errors out.

Everything here raises ValueError naming the argument and the value at fault, so that a caller
three layers up (the pipeline's evaluate stage) can tell which array was wrong.

Precision: every metric computes in at least float32 whatever the input's dtype. Half-precision
input (float16, bfloat16) is widened to float32 before any arithmetic: squaring a float16
distance above 255.9 overflows, and numpy cannot even hold a bfloat16 tensor. float64 input keeps
float64 where a function documents it (ranking a distance matrix, re_ranking's squaring), and is
otherwise narrowed to float32 like everything else.
"""

from __future__ import annotations

import numpy as np
import torch


def is_tensor(x) -> bool:
    return isinstance(x, torch.Tensor)


HALF = (torch.float16, torch.bfloat16)


def to_numpy(x, name: str) -> np.ndarray:
    """A numpy view/copy of an array-like (a torch tensor is moved to the CPU; half precision,
    float16 or bfloat16, comes back as float32)."""
    if is_tensor(x):
        x = x.detach()
        return (x.float() if x.dtype in HALF else x).cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - numpy's own message is kept
        raise ValueError(f"{name}: cannot be read as an array ({exc})") from exc
    return arr.astype(np.float32) if arr.dtype == np.float16 else arr


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """`t` widened to float32 if it is half precision (or an integer type); float32/64 unchanged."""
    return t if t.dtype in (torch.float32, torch.float64) else t.to(torch.float32)


def finite_result(x, what: str):
    """`x` (an array, a tensor or a number), after checking that it holds no NaN or inf."""
    if is_tensor(x):
        ok = bool(torch.isfinite(x).all())
    else:
        ok = bool(np.all(np.isfinite(np.asarray(x, dtype=np.float64))))
    if not ok:
        raise ValueError(f"{what}: the result is not finite (NaN or inf); the input's values are too "
                         f"large for float32 arithmetic, or degenerate")
    return x


def labels(x, name: str, length: int | None = None) -> np.ndarray:
    """A 1-D int64 label vector (pids or camera ids), checked for length and integrality."""
    arr = to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D vector, got shape {tuple(arr.shape)}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: labels must be integers, got non-integral values")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name}: labels must be integers, got dtype {arr.dtype}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name}: length {arr.shape[0]} does not match the {length} expected")
    return arr.astype(np.int64, copy=False)


def matrix(x, name: str, rows: int | None = None, cols: int | None = None) -> None:
    """Check a 2-D distance/feature matrix: shape and no NaN/inf (a NaN silently corrupts any ranking)."""
    shape = tuple(x.shape)
    if len(shape) != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {shape}")
    if rows is not None and shape[0] != rows:
        raise ValueError(f"{name}: {shape[0]} rows, expected {rows}")
    if cols is not None and shape[1] != cols:
        raise ValueError(f"{name}: {shape[1]} columns, expected {cols}")
    # one reduction instead of a full boolean mask: any NaN/inf makes the sum non-finite (a finite
    # sum that overflows only sends us to the exact check below)
    if is_tensor(x):
        finite = bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())
    else:
        finite = bool(np.isfinite(x.sum())) or bool(np.isfinite(x).all())
    if not finite:
        kind = "NaN" if (torch.isnan(x).any() if is_tensor(x) else np.isnan(x).any()) else "infinite"
        raise ValueError(f"{name}: contains {kind} values")


def float_tensor(x, name: str, device=None) -> torch.Tensor:
    """A float32 torch tensor on `device` (default: where it already is; CPU for numpy), whatever
    the input's float dtype (float16, bfloat16, float32, float64)."""
    if is_tensor(x):
        t = x.detach()
    else:
        arr = to_numpy(x, name)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if device is not None:
        t = t.to(device)
    return t.to(torch.float32)


def resolve_device(device, *arrays) -> torch.device:
    """`device` if given, else the device of the first torch tensor among `arrays`, else CPU."""
    if device is not None:
        return torch.device(device)
    for a in arrays:
        if is_tensor(a):
            return a.device
    return torch.device("cpu")
