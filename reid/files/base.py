"""What every file kind shares: its description (KINDS), the error for a damaged file, and the
generic torch and JSON loaders every kind's checking loader is built on. Nothing here writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def missing_file(path: Path, kind: str) -> FileNotFoundError:
    k = KINDS[kind]
    return FileNotFoundError(f"{path}: {k.what} not found (it is written by the Snakemake rule `{k.rule}`, "
                             f"`{k.command}`)")


def file_size(path: Path, kind: str) -> int:
    """The size of an existing, non-empty regular file; the errors for anything else."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise missing_file(path, kind) from None
    if path.is_dir():
        raise DamagedFileError(path, kind, "is a folder, not a file")
    if st.st_size == 0:
        raise DamagedFileError(path, kind, "empty file (0 bytes)")
    return st.st_size


def read_bytes(path: Path, kind: str) -> bytes:
    file_size(path, kind)
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
    size = file_size(path, kind)
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
    data = read_bytes(path, kind)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DamagedFileError(path, kind, f"not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise DamagedFileError(path, kind, f"not valid JSON, or cut short ({len(data)} bytes; {e})") from None
    if not isinstance(value, dict):
        raise DamagedFileError(path, kind, f"holds a JSON {type(value).__name__}, expected an object")
    return value


def require(blob: dict, keys, path: Path, kind: str) -> None:
    missing = [k for k in keys if k not in blob]
    if missing:
        raise DamagedFileError(path, kind, f"missing key(s) {', '.join(missing)}")


def check(ok: bool, path: Path, kind: str, problem: str) -> None:
    if not ok:
        raise DamagedFileError(path, kind, problem)


