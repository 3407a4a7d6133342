"""features.pt, written by ``reid extract``: its writer and its checking loader."""

from __future__ import annotations

from pathlib import Path

from reid import io
from reid.files.base import check, load_torch, require


FEATURE_SPLITS = ("query", "gallery", "mq")  # "mq" (gt_bbox, multi-query) is present where the dataset has it


def load_features(path: str | Path) -> dict:
    """features.pt as written by ``reid extract``.

    Keys, per split prefix ``query``, ``gallery`` and (optional) ``mq``: ``<p>_feats`` float (N, D),
    ``<p>_pids`` and ``<p>_camids`` int64 (N,), ``<p>_paths`` list of N strings (optional); all
    feature matrices share D. Raises as load_torch, and DamagedFileError when keys are missing or
    shapes disagree.
    """
    import torch

    path = Path(path)
    blob = load_torch(path, "features")
    require(blob, [f"{p}_{k}" for p in ("query", "gallery") for k in ("feats", "pids", "camids")], path, "features")
    dims = set()
    for prefix in FEATURE_SPLITS:
        keys = [f"{prefix}_{k}" for k in ("feats", "pids", "camids")]
        if prefix == "mq" and not any(k in blob for k in keys):
            continue
        require(blob, keys, path, "features")
        feats, pids, camids = (blob[k] for k in keys)
        check(all(isinstance(t, torch.Tensor) for t in (feats, pids, camids)), path, "features",
               f"{prefix}_feats/_pids/_camids are not all tensors")
        n = len(pids)
        check(feats.dim() == 2 and feats.shape[0] == n and camids.shape == pids.shape and pids.dim() == 1,
               path, "features", f"{prefix}: feats {tuple(feats.shape)}, pids {tuple(pids.shape)}, "
                                 f"camids {tuple(camids.shape)} do not describe the same N images")
        check(feats.is_floating_point() and not pids.is_floating_point() and not camids.is_floating_point(),
               path, "features", f"{prefix}: feats must be floating point, pids and camids integers")
        if n:
            dims.add(feats.shape[1])
        paths = blob.get(f"{prefix}_paths")
        if paths is not None:
            check(isinstance(paths, (list, tuple)) and len(paths) == n and all(isinstance(p, str) for p in paths),
                   path, "features", f"{prefix}_paths is not a list of {n} strings")
    check(len(dims) <= 1, path, "features", f"feature dimensions differ between splits: {sorted(dims)}")
    return blob


FEATURES_META_KEYS = ("dataset", "variant", "seed", "config_hash")  # copied from model.pt's meta


def write_features(path: str | Path, arrays: dict, model_meta: dict, *, flip: bool, feature_norm: str,
                   test_embedding: str) -> Path:
    """Write features.pt: ``arrays`` (the per-split tensors and paths load_features describes) and
    ``meta`` (strings: the model's dataset, variant, seed and config hash from ``model_meta``, then
    flip, precision, feature_norm and test_embedding), atomically (reid.io.torch_save).

    Returns the path written; raises reid.io.WriteError naming it.
    """

    meta = {k: str(model_meta[k]) for k in FEATURES_META_KEYS}
    meta["flip"] = "true" if flip else "false"
    meta["precision"] = str(model_meta.get("precision", "fp32"))
    meta["feature_norm"] = feature_norm
    meta["test_embedding"] = test_embedding
    return io.torch_save(path, {**arrays, "meta": meta})
