"""model.pt, written by ``reid train`` (reid.train): its writer and its checking loader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reid import io
from reid.files.base import check, load_torch, require


def load_model_file(path: str | Path) -> dict:
    """model.pt: ``{"state_dict": {name: tensor}, "meta": {...}}`` as written by ``reid train``.

    ``meta`` holds at least height and width (int > 0) and builder (dict with entry, num_classes,
    config and args: how reid.models.builder rebuilds the model). A file written before every model
    was recorded by its builder holds model_kwargs (a dict: a paper variant's) instead; it is returned
    as it is, and reid.models.runtime.load_trained_model reads it through the paper's builder
    (reid.models.builder.legacy_builder). Raises as load_torch.
    """
    import torch

    path = Path(path)
    blob = load_torch(path, "model")
    require(blob, ("state_dict", "meta"), path, "model")
    sd, meta = blob["state_dict"], blob["meta"]
    check(isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values()), path, "model",
           "state_dict is not a non-empty dict of tensors")
    check(isinstance(meta, dict), path, "model", "meta is not a dict")
    require(meta, ("model_kwargs" if "builder" not in meta else "builder", "height", "width"), path, "model")
    if "builder" not in meta:
        check(isinstance(meta["model_kwargs"], dict), path, "model", "meta.model_kwargs is not a dict")
    else:
        builder = meta["builder"]
        check(isinstance(builder, dict) and isinstance(builder.get("entry"), str)
               and isinstance(builder.get("num_classes"), int) and isinstance(builder.get("config"), dict),
               path, "model", "meta.builder is not a dict with entry (str), num_classes (int) and config (dict)")
    for key in ("height", "width"):
        check(isinstance(meta[key], int) and meta[key] > 0, path, "model", f"meta.{key} is not a positive integer")
    return blob


def model_meta(described: dict, *, height: int, width: int, dataset: str, variant: str, seed: int, config_hash: str,
               precision: str, pid_to_label: dict, input_normalisation: str | None) -> dict:
    """model.pt's ``meta``: ``described`` (how the model is rebuilt: reid.models.builder's ``builder``, ...),
    the training input size (pixels), the run's identity, the training precision, ``label_to_pid``
    (classifier row -> person id) and, when not the default, ``input_normalisation``. Key order is the file's."""
    return {**described, "height": height, "width": width,
            "dataset": dataset, "variant": variant, "seed": seed, "config_hash": config_hash,
            "precision": precision, "label_to_pid": {v: k for k, v in pid_to_label.items()},
            **({"input_normalisation": input_normalisation} if input_normalisation is not None else {})}


def model_writer(state_dict: dict, meta: dict, name: str) -> Callable[[Path], None]:
    """A ``write(tmp)`` of model.pt for reid.io.commit_together: ``{"state_dict": tensors moved to the CPU,
    "meta": meta}`` (read back by load_model_file). ``name``: the file's name for messages."""
    return io.torch_writer({"state_dict": {k: v.cpu() for k, v in state_dict.items()}, "meta": meta}, name)
