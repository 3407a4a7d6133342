"""model.pt, written by ``reid train`` (reid.train): its checking loader."""

from __future__ import annotations

from pathlib import Path

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
