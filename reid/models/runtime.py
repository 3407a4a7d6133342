"""Running a model: the device, the precision (autocast) and a trained model rebuilt from model.pt.

Shared by every stage that runs a network (training, extraction, ``reid rank``, the attention
figure), so that none of them imports another stage for it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


def select_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu`` or ``cuda`` (config ``train.device``).

    Raises RuntimeError for ``cuda`` on a machine without a CUDA device.
    """
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str):
    """The autocast context of config ``train.precision`` on ``device``: bf16 autocast, or none for fp32.

    bf16 needs no loss scaling (its exponent range is fp32's). Raises ValueError for another value.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision: {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def load_trained_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a trained model from model.pt; returns (model in eval mode, meta).

    Every model, the paper's variants included, is rebuilt by calling its builder again
    (``meta["builder"]``, reid.models.builder.rebuild: ImportError naming the entry when this process
    cannot import it); files that hold ``model_kwargs`` (written before every model was recorded by
    its builder) are read through the paper's builder, and the returned meta holds it as
    ``meta["builder"]`` (reid.models.builder.legacy_builder). Raises DamagedFileError when the
    model_kwargs or the weights do not fit this code's model.
    """
    from reid.files import DamagedFileError, load_model_file
    from reid.models.builder import rebuild
    from reid.models.custom import CustomModelError

    blob = load_model_file(path)
    meta = blob["meta"]
    if "builder" not in meta:
        meta["builder"] = _legacy_builder(meta["model_kwargs"], Path(path))
    try:
        model = rebuild(meta["builder"], str(path))
        model.load_state_dict(blob["state_dict"])
    except CustomModelError:  # a builder that breaks the interface: its own message names it
        raise
    except (TypeError, ValueError, RuntimeError) as e:  # kwargs or weights that do not fit this code's models
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DamagedFileError(path, "model", f"its weights do not fit the model its meta describes ({first})") \
            from None
    model.to(device).eval()
    return model, meta


def _legacy_builder(model_kwargs: dict, path: Path) -> dict:
    """``meta["builder"]`` for a model file that holds ``model_kwargs``; DamagedFileError naming ``path``
    when they lack a key or do not fit this code's model."""
    from reid.files import DamagedFileError
    from reid.models.builder import legacy_builder

    try:
        return legacy_builder(model_kwargs)
    except KeyError as e:
        raise DamagedFileError(path, "model", f"meta.model_kwargs lacks {e}") from None
    except TypeError as e:
        raise DamagedFileError(path, "model", f"meta.model_kwargs does not fit this code's model ({e})") from None
