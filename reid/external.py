"""Features made by any tool, read into the pipeline's features layout for `reid evaluate-features`.

Accepted files (one loader, three containers):

* ``.npz`` (numpy) or ``.pt`` (a dict of tensors/arrays, loaded with ``weights_only=True``) holding
  ``query_features`` and ``gallery_features`` (N x D floats), ``query_pids``, ``gallery_pids``,
  ``query_camids``, ``gallery_camids`` (length-N integers); optionally ``multi_query_features``
  with ``multi_query_pids`` and ``multi_query_camids`` (Market-1501's gt_bbox images), and
  ``query_names`` / ``gallery_names`` (strings, e.g. image file names, used in per_query.csv).
* ``.mat``: the result file of the layumi Person_reID_baseline_pytorch ``test.py``
  (``scipy.io.savemat`` of ``query_f``, ``query_label``, ``query_cam``, ``gallery_f``,
  ``gallery_label``, ``gallery_cam``; labels and cameras are saved as 1 x N rows). Its multi-query
  file uses ``mquery_f``, ``mquery_label``, ``mquery_cam``, and is read when those keys are in the
  same file. Read with ``scipy.io.loadmat`` (MATLAB v5 files; v7.3/HDF5 files are refused with
  a message saying so).

Label conventions are the pipeline's (reid/metrics/rank.py): pid -1 is junk, pid 0 a distractor,
camera ids are compared for equality only (0- or 1-based both work).

Every problem raises `ExternalFeaturesError` naming the file and the key at fault: a missing key,
a length that does not match its features, a NaN or infinite feature, labels that are not
integers, features that are not 2-D, or a query and gallery of different dimension.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# our key -> (npz/pt key, layumi .mat key)
_KEYS = {
    "query_feats": ("query_features", "query_f"),
    "gallery_feats": ("gallery_features", "gallery_f"),
    "query_pids": ("query_pids", "query_label"),
    "gallery_pids": ("gallery_pids", "gallery_label"),
    "query_camids": ("query_camids", "query_cam"),
    "gallery_camids": ("gallery_camids", "gallery_cam"),
}
_MULTI_QUERY_KEYS = {
    "mq_feats": ("multi_query_features", "mquery_f"),
    "mq_pids": ("multi_query_pids", "mquery_label"),
    "mq_camids": ("multi_query_camids", "mquery_cam"),
}
_NAME_KEYS = {"query_paths": "query_names", "gallery_paths": "gallery_names"}
SUFFIXES = (".npz", ".pt", ".pth", ".mat")


class ExternalFeaturesError(ValueError):
    """A features file that cannot be evaluated; the message names the file and the key."""


def load_external_features(path: str | Path) -> dict:
    """Read ``path`` into the layout of the pipeline's features.pt (see reid/features.py).

    Returns a dict: ``query_feats``, ``gallery_feats`` (float32 tensors, N x D), ``query_pids``,
    ``gallery_pids``, ``query_camids``, ``gallery_camids`` (int64 tensors), ``query_paths``,
    ``gallery_paths`` (lists of str: the file's names, or ``query/000123`` when it has none),
    the ``mq_*`` triple when the file has multi-query features, and ``meta`` (source file, and
    ``flip: "unknown"``: how the features were made is not known here).

    Raises ExternalFeaturesError (a ValueError) for any malformed content, FileNotFoundError when
    ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such features file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ExternalFeaturesError(f"{path}: unknown features file type {path.suffix!r}, expected one of {SUFFIXES}")
    raw, column = (_read_mat(path), 1) if suffix == ".mat" else (_read_dict(path), 0)

    out: dict = {}
    for ours, names in _KEYS.items():
        key = names[column]
        if key not in raw:
            raise ExternalFeaturesError(f"{path}: missing key '{key}' (has: {', '.join(sorted(raw)) or 'nothing'})")
        out[ours] = raw[key]
    present = [names[column] for names in _MULTI_QUERY_KEYS.values() if names[column] in raw]
    if present and len(present) != len(_MULTI_QUERY_KEYS):
        missing = [n[column] for n in _MULTI_QUERY_KEYS.values() if n[column] not in raw]
        raise ExternalFeaturesError(f"{path}: has {', '.join(present)} but not {', '.join(missing)}")
    if present:
        for ours, names in _MULTI_QUERY_KEYS.items():
            out[ours] = raw[names[column]]

    for prefix, feat_key in (("query", "query_feats"), ("gallery", "gallery_feats"), ("mq", "mq_feats")):
        if feat_key not in out:
            continue
        name = _KEYS.get(feat_key, _MULTI_QUERY_KEYS.get(feat_key))[column]
        feats = _features(out[feat_key], path, name)
        out[feat_key] = feats
        for kind in ("pids", "camids"):
            lkey = f"{prefix}_{kind}"
            lname = (_KEYS.get(lkey) or _MULTI_QUERY_KEYS[lkey])[column]
            out[lkey] = _labels(out[lkey], path, lname, len(feats))
    dims = {k: out[k].shape[1] for k in ("query_feats", "gallery_feats", "mq_feats") if k in out}
    if len(set(dims.values())) > 1:
        raise ExternalFeaturesError(f"{path}: feature dimensions differ: {dims}")

    for ours, key in _NAME_KEYS.items():
        n = len(out[ours.replace("_paths", "_pids")])
        split = ours.split("_")[0]
        if key in raw:
            names = [str(s).strip() for s in np.asarray(raw[key]).reshape(-1)]
            if len(names) != n:
                raise ExternalFeaturesError(f"{path}: '{key}' has {len(names)} entries, expected {n}")
            out[ours] = names
        else:
            out[ours] = [f"{split}/{i:06d}" for i in range(n)]
    out["meta"] = {"source": str(path), "flip": "unknown"}
    return out


def _read_dict(path: Path) -> dict:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise ExternalFeaturesError(f"{path}: cannot be read as {path.suffix} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise ExternalFeaturesError(f"{path}: expected a dict of arrays, found {type(obj).__name__}")
    return obj


def _read_mat(path: Path) -> dict:
    import scipy.io

    with open(path, "rb") as f:
        head = f.read(128)
    if b"MATLAB 7.3" in head or head.startswith(b"\x89HDF"):
        raise ExternalFeaturesError(f"{path}: a MATLAB v7.3 (HDF5) file; save it with scipy.io.savemat "
                                    "or MATLAB's -v7 flag")
    try:
        raw = scipy.io.loadmat(path)
    except Exception as exc:
        raise ExternalFeaturesError(f"{path}: cannot be read as a .mat file ({type(exc).__name__}: {exc})") from exc
    return {k: v for k, v in raw.items() if not k.startswith("__")}


def _array(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _features(x, path: Path, key: str) -> torch.Tensor:
    arr = _array(x)
    if arr.ndim != 2:
        raise ExternalFeaturesError(f"{path}: '{key}' must be a 2-D (images x dims) matrix, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ExternalFeaturesError(f"{path}: '{key}' must hold numbers, got dtype {arr.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).float()  # float16/bfloat16 inputs widen here
    bad = ~torch.isfinite(t)
    if bad.any():
        row = int(bad.any(dim=1).nonzero()[0])
        raise ExternalFeaturesError(f"{path}: '{key}' has {int(bad.sum())} NaN or infinite values (first in row {row})")
    return t


def _labels(x, path: Path, key: str, length: int) -> torch.Tensor:
    arr = _array(x)
    if arr.ndim == 2 and 1 in arr.shape:  # savemat stores vectors as 1 x N rows
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ExternalFeaturesError(f"{path}: '{key}' must be a vector, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ExternalFeaturesError(f"{path}: '{key}' must hold integers, found non-integral values")
    elif arr.dtype.kind not in "iu":
        raise ExternalFeaturesError(f"{path}: '{key}' must hold integers, got dtype {arr.dtype}")
    if len(arr) != length:
        raise ExternalFeaturesError(f"{path}: '{key}' has {len(arr)} entries but its features have {length} rows")
    return torch.from_numpy(arr.astype(np.int64))
