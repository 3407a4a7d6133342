"""Reading back the pipeline's own files: one loader per kind of file, each one checking what it reads.

Every file a stage writes and a later stage reads back is written atomically through ``reid.io``, so a
crash leaves the previous complete file or none. A file can still be damaged afterwards (a disk that
filled up before ``reid.io`` existed, a copy cut short, a file edited or replaced by hand, the wrong
file passed to a stage run by hand). The loaders here refuse such a file with a ``DamagedFileError``
that names the file, what is wrong with it, and the Snakemake rule and command that write it, so the
fix (delete it, rerun that rule) is in the message. Nothing here deletes or rewrites a file.

==================  ====================================  =====================  =================
kind                file                                  written by rule        loader
==================  ====================================  =====================  =================
``dataset_report``  ``results/{dataset}/dataset.json``    ``verify_dataset``     load_dataset_report
``mean_image``      ``results/{dataset}/mean_image.pt``   ``verify_dataset``     load_mean_image
``model``           ``.../seed{seed}/model.pt``           ``train``              load_model_file
``history``         ``.../seed{seed}/history.csv``        ``train``              load_history
``run_info``        ``.../seed{seed}/run.json``           ``train``              load_run_info
``features``        ``.../seed{seed}/features.pt``        ``extract``            load_features
``metrics``         ``.../seed{seed}/metrics.json``       ``evaluate``           load_metrics
``per_query``       ``.../seed{seed}/per_query.csv``      ``evaluate``           load_per_query
``comparisons``     ``results/{dataset}/comparisons.json`` ``comparisons``       load_comparisons
==================  ====================================  =====================  =================

Torch files load with ``torch.load(..., weights_only=True)``: they hold tensors and plain Python
types only (dicts, lists, tuples, strings, numbers), never pickled objects.
"""

from __future__ import annotations

import csv
import io as _stdio
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DamagedFileError", "FileKind", "KINDS", "load_torch", "load_json", "load_model_file",
           "load_features", "load_mean_image", "load_run_info", "load_metrics", "load_dataset_report",
           "load_history", "load_per_query", "load_comparisons"]


@dataclass(frozen=True)
class FileKind:
    what: str  # a description for messages
    rule: str  # the Snakemake rule that writes it
    command: str  # the command that rule runs


KINDS: dict[str, FileKind] = {
    "dataset_report": FileKind("dataset verification report", "verify_dataset", "python -m reid verify"),
    "mean_image": FileKind("mean-image file", "verify_dataset", "python -m reid verify"),
    "model": FileKind("trained model file", "train", "python -m reid train"),
    "history": FileKind("training history", "train", "python -m reid train"),
    "run_info": FileKind("training run's provenance file", "train", "python -m reid train"),
    "features": FileKind("features file", "extract", "python -m reid extract"),
    "metrics": FileKind("metrics file", "evaluate", "python -m reid evaluate"),
    "per_query": FileKind("per-query results file", "evaluate", "python -m reid evaluate"),
    "comparisons": FileKind("comparisons file", "comparisons", "python -m reid compare"),
    # for the training stage's own reading of results/checkpoints/ (load_torch(path, "checkpoint"))
    "checkpoint": FileKind("training checkpoint", "train", "python -m reid train"),
}

# MLflow run ids are uuid4 hex strings (32 lowercase hex digits).
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class DamagedFileError(ValueError):
    """A pipeline file that is empty, cut short or not what its kind should hold.

    ``path`` is the file, ``kind`` its key in KINDS, ``problem`` what is wrong.
    """

    def __init__(self, path: str | Path, kind: str, problem: str):
        self.path, self.kind, self.problem = Path(path), kind, problem
        k = KINDS[kind]
        super().__init__(
            f"{path}: {problem}. This {k.what} is written by the Snakemake rule `{k.rule}` (`{k.command}`); "
            f"it is damaged or is not such a file: move it aside or delete it, and run that rule again "
            f"(Snakemake reruns it once the file is gone)."
        )


def _missing(path: Path, kind: str) -> FileNotFoundError:
    k = KINDS[kind]
    return FileNotFoundError(f"{path}: {k.what} not found (it is written by the Snakemake rule `{k.rule}`, "
                             f"`{k.command}`)")


def _size(path: Path, kind: str) -> int:
    """The size of an existing, non-empty regular file; the errors for anything else."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _missing(path, kind) from None
    if path.is_dir():
        raise DamagedFileError(path, kind, "is a folder, not a file")
    if st.st_size == 0:
        raise DamagedFileError(path, kind, "empty file (0 bytes)")
    return st.st_size


def _read_bytes(path: Path, kind: str) -> bytes:
    _size(path, kind)
    return path.read_bytes()


# ---------------------------------------------------------------------------------------------- generic


def load_torch(path: str | Path, kind: str) -> dict:
    """A torch file of the given kind as a dict, loaded with ``weights_only=True`` onto the CPU.

    Raises FileNotFoundError (missing) or DamagedFileError (empty, cut short, not a torch file,
    holding pickled objects, or not a dict), each naming the file and the rule that writes it.
    """
    import pickle

    import torch

    path = Path(path)
    size = _size(path, kind)
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        # weights_only refuses anything but tensors and plain types; a cut-short pickle lands here too.
        # torch's message opens with advice to load untrusted files unsafely: keep only the reason
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else type(e).__name__)
        first = first.split(". ")[0]
        raise DamagedFileError(path, kind, f"cannot be read as tensors and plain types ({first})") from None
    except (EOFError, RuntimeError, ValueError, OSError, KeyError, IndexError, TypeError) as e:
        # a zip cut short: "PytorchStreamReader failed reading zip archive", EOFError "Ran out of input", ...
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise DamagedFileError(path, kind, f"cut short or not a torch file ({size} bytes; "
                                           f"{type(e).__name__}: {first})") from None
    if not isinstance(blob, dict):
        raise DamagedFileError(path, kind, f"holds a {type(blob).__name__}, expected a dict")
    return blob


def load_json(path: str | Path, kind: str) -> dict:
    """A JSON file of the given kind holding an object; errors as for load_torch."""
    path = Path(path)
    data = _read_bytes(path, kind)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DamagedFileError(path, kind, f"not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise DamagedFileError(path, kind, f"not valid JSON, or cut short ({len(data)} bytes; {e})") from None
    if not isinstance(value, dict):
        raise DamagedFileError(path, kind, f"holds a JSON {type(value).__name__}, expected an object")
    return value


def _require(blob: dict, keys, path: Path, kind: str) -> None:
    missing = [k for k in keys if k not in blob]
    if missing:
        raise DamagedFileError(path, kind, f"missing key(s) {', '.join(missing)}")


def _check(ok: bool, path: Path, kind: str, problem: str) -> None:
    if not ok:
        raise DamagedFileError(path, kind, problem)


# ---------------------------------------------------------------------------------------------- kinds


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
    _require(blob, ("state_dict", "meta"), path, "model")
    sd, meta = blob["state_dict"], blob["meta"]
    _check(isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values()), path, "model",
           "state_dict is not a non-empty dict of tensors")
    _check(isinstance(meta, dict), path, "model", "meta is not a dict")
    _require(meta, ("model_kwargs" if "builder" not in meta else "builder", "height", "width"), path, "model")
    if "builder" not in meta:
        _check(isinstance(meta["model_kwargs"], dict), path, "model", "meta.model_kwargs is not a dict")
    else:
        builder = meta["builder"]
        _check(isinstance(builder, dict) and isinstance(builder.get("entry"), str)
               and isinstance(builder.get("num_classes"), int) and isinstance(builder.get("config"), dict),
               path, "model", "meta.builder is not a dict with entry (str), num_classes (int) and config (dict)")
    for key in ("height", "width"):
        _check(isinstance(meta[key], int) and meta[key] > 0, path, "model", f"meta.{key} is not a positive integer")
    return blob


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
    _require(blob, [f"{p}_{k}" for p in ("query", "gallery") for k in ("feats", "pids", "camids")], path, "features")
    dims = set()
    for prefix in FEATURE_SPLITS:
        keys = [f"{prefix}_{k}" for k in ("feats", "pids", "camids")]
        if prefix == "mq" and not any(k in blob for k in keys):
            continue
        _require(blob, keys, path, "features")
        feats, pids, camids = (blob[k] for k in keys)
        _check(all(isinstance(t, torch.Tensor) for t in (feats, pids, camids)), path, "features",
               f"{prefix}_feats/_pids/_camids are not all tensors")
        n = len(pids)
        _check(feats.dim() == 2 and feats.shape[0] == n and camids.shape == pids.shape and pids.dim() == 1,
               path, "features", f"{prefix}: feats {tuple(feats.shape)}, pids {tuple(pids.shape)}, "
                                 f"camids {tuple(camids.shape)} do not describe the same N images")
        _check(feats.is_floating_point() and not pids.is_floating_point() and not camids.is_floating_point(),
               path, "features", f"{prefix}: feats must be floating point, pids and camids integers")
        if n:
            dims.add(feats.shape[1])
        paths = blob.get(f"{prefix}_paths")
        if paths is not None:
            _check(isinstance(paths, (list, tuple)) and len(paths) == n and all(isinstance(p, str) for p in paths),
                   path, "features", f"{prefix}_paths is not a list of {n} strings")
    _check(len(dims) <= 1, path, "features", f"feature dimensions differ between splits: {sorted(dims)}")
    return blob


def load_mean_image(path: str | Path) -> dict:
    """mean_image.pt as written by ``reid verify``: ``mean`` float (3, H, W), ``std`` float (3,) > 0, finite.

    Raises as load_torch.
    """
    import torch

    path = Path(path)
    blob = load_torch(path, "mean_image")
    _require(blob, ("mean", "std"), path, "mean_image")
    mean, std = blob["mean"], blob["std"]
    _check(isinstance(mean, torch.Tensor) and mean.dim() == 3 and mean.shape[0] == 3 and mean.is_floating_point(),
           path, "mean_image", "mean is not a float tensor of shape (3, H, W)")
    _check(isinstance(std, torch.Tensor) and tuple(std.shape) == (3,) and std.is_floating_point(),
           path, "mean_image", "std is not a float tensor of shape (3,)")
    _check(bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all()) and bool((std > 0).all()),
           path, "mean_image", "mean or std holds non-finite values, or std is not positive")
    return blob


RUN_INFO_KEYS = ("dataset", "model", "seed", "config_hash")  # what every run.json records


def load_run_info(path: str | Path) -> dict:
    """run.json as written by ``reid train``: the trained model's provenance, a JSON object with at
    least RUN_INFO_KEYS (``seed`` an integer), ``git_commit`` and ``tracking``; ``mlflow_run_id``
    (32 hex digits) and ``logged_model_id`` when MLflow recorded the run. Raises as load_json."""
    path = Path(path)
    value = load_json(path, "run_info")
    _require(value, RUN_INFO_KEYS, path, "run_info")
    _check(isinstance(value["seed"], int) and not isinstance(value["seed"], bool), path, "run_info",
           f"seed is {value['seed']!r}, not an integer")
    if "mlflow_run_id" in value:
        run_id = value["mlflow_run_id"]
        _check(isinstance(run_id, str) and bool(_RUN_ID.match(run_id)), path, "run_info",
               f"mlflow_run_id is {str(run_id)[:40]!r}, which is not an MLflow run id (32 hex digits)")
    return value


# the inputs every metrics.json records; mlflow_run_id too when MLflow recorded the training run
METRICS_KEYS = ("dataset", "model", "seed")


def load_metrics(path: str | Path) -> dict:
    """metrics.json as written by ``reid evaluate``: a JSON object with at least METRICS_KEYS.

    Numbers are checked by the report (reid.report.runs). Raises as load_json.
    """
    path = Path(path)
    value = load_json(path, "metrics")
    _require(value, METRICS_KEYS, path, "metrics")
    return value


def load_dataset_report(path: str | Path) -> dict:
    """dataset.json as written by ``reid verify``: a JSON object with ``ok`` and ``splits``. Raises as load_json."""
    path = Path(path)
    value = load_json(path, "dataset_report")
    _require(value, ("ok", "splits", "problems"), path, "dataset_report")
    _check(isinstance(value["splits"], dict), path, "dataset_report", "splits is not an object")
    return value


def load_history(path: str | Path, columns=("epoch", "loss_id", "loss_verif")) -> list[dict[str, float]]:
    """history.csv as written by ``reid train``: one row per epoch, every cell a number.

    ``columns`` must be present in the header. Returns the rows as dicts of floats (an empty cell
    becomes NaN). Raises as load_json, DamagedFileError naming the row and column of a bad cell.
    """
    path = Path(path)
    text = _read_bytes(path, "history").decode("utf-8", errors="replace")
    rows = list(csv.DictReader(_stdio.StringIO(text, newline="")))
    if not rows:
        raise DamagedFileError(path, "history", "no epochs recorded")
    missing = [c for c in columns if c not in rows[0]]
    _check(not missing, path, "history", f"missing column(s) {', '.join(missing)}")
    out = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        _check(None not in row and all(v is not None for v in row.values()), path, "history",
               f"line {i} has a different number of cells from the header (cut short?)")
        parsed = {}
        for col, cell in row.items():
            try:
                parsed[col] = float(cell) if cell != "" else math.nan
            except ValueError:
                raise DamagedFileError(path, "history", f"line {i}, column {col}: {cell!r} is not a number") from None
        out.append(parsed)
    return out


def text_sha256(text: str) -> str:
    """The sha256 (hex) of ``text`` as UTF-8: what metrics.json records of its per_query.csv."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_per_query(path: str | Path, metrics: dict | None = None, metrics_path: str | Path | None = None):
    """per_query.csv as written by ``reid evaluate``, parsed by reid.metrics.uncertainty.read_per_query_csv
    (which checks its header, every row's fields and numbers). Raises as load_json.

    ``metrics``: the metrics.json record (``metrics_path``: its file) the per-query rows belong to;
    when it records ``per_query_sha256`` (files written since the evaluate stage commits the two
    together) the file must have that digest, else DamagedFileError naming both files: a pair that
    is not one evaluation (half of it replaced by hand, or an interrupted copy).
    """
    from reid.metrics.uncertainty import read_per_query_csv

    path = Path(path)
    _size(path, "per_query")
    expected = (metrics or {}).get("per_query_sha256")
    if expected is not None:
        actual = text_sha256(_read_bytes(path, "per_query").decode("utf-8", errors="replace"))
        _check(actual == expected, path, "per_query",
               f"it is not the per-query file of {metrics_path or 'its metrics.json'} (sha256 {actual[:12]}..., "
               f"metrics.json records {str(expected)[:12]}...): the two were not written by one evaluation")
    try:
        return read_per_query_csv(path)
    except ValueError as e:
        problem = str(e)
        for prefix in (f"{path}: ", f"{path}, "):  # the reader names the file itself; say it once
            if problem.startswith(prefix):
                problem = problem[len(prefix):]
        raise DamagedFileError(path, "per_query", problem) from None


COMPARISONS_KEYS = ("dataset", "models", "pairs", "bootstrap")


def load_comparisons(path: str | Path) -> dict:
    """comparisons.json as written by ``reid compare``: a JSON object with COMPARISONS_KEYS. Raises as load_json."""
    path = Path(path)
    value = load_json(path, "comparisons")
    _require(value, COMPARISONS_KEYS, path, "comparisons")
    return value
