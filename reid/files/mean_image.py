"""mean_image.pt, written by ``reid verify``: its writer and its checking loader."""

from __future__ import annotations

from pathlib import Path

from reid import io
from reid.files.base import check, load_torch, require


def load_mean_image(path: str | Path) -> dict:
    """mean_image.pt as written by ``reid verify``: ``mean`` float (3, H, W), ``std`` float (3,) > 0, finite.

    Raises as load_torch.
    """
    import torch

    path = Path(path)
    blob = load_torch(path, "mean_image")
    require(blob, ("mean", "std"), path, "mean_image")
    mean, std = blob["mean"], blob["std"]
    check(isinstance(mean, torch.Tensor) and mean.dim() == 3 and mean.shape[0] == 3 and mean.is_floating_point(),
           path, "mean_image", "mean is not a float tensor of shape (3, H, W)")
    check(isinstance(std, torch.Tensor) and tuple(std.shape) == (3,) and std.is_floating_point(),
           path, "mean_image", "std is not a float tensor of shape (3,)")
    check(bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all()) and bool((std > 0).all()),
           path, "mean_image", "mean or std holds non-finite values, or std is not positive")
    return blob


def write_mean_image(stats: dict, path: str | Path) -> Path:
    """mean_image.pt: ``stats`` as reid.data.transforms.compute_mean_image returns it (``mean`` float
    (3, H, W), ``std`` float (3,)), atomically (reid.io.torch_save)."""
    return io.torch_save(path, stats)
