"""The one place that writes the pipeline's files: atomically, or not at all.

Every file a stage writes and a later stage (or a re-run) reads back goes through `atomic_write`:
the content is written to a temporary file in the same folder, flushed and fsynced, renamed over
the target (``os.replace``, atomic on POSIX within one filesystem), and the folder is fsynced so
that the rename itself survives a power cut. A reader therefore sees either the previous complete
file or the new complete file, never a prefix; a crash leaves at most a ``.<name>.tmp-*`` file,
which is removed when the writer fails in Python and is never read by anything.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit it replaces ``path`` atomically.

    The caller writes the temporary file by any means (``torch.save``, pandas, PIL, ...). On an
    exception the temporary file is removed and ``path`` is left exactly as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result over ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """JSON with sorted keys and a final newline (stable bytes for the same content)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; store tensors and plain types only, so that the
    file loads with ``torch.load(..., weights_only=True)`` (reid.files reads it back that way).

    torch names the records inside its zip archive after the file it writes (``<name>/data.pkl``,
    the name minus its last suffix), so the object is saved as ``<path name>.tmp`` in a private
    folder: the bytes are the same for the same object, whatever the random temporary name.
    """
    import torch

    path = Path(path)

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.dir-", dir=tmp.parent) as folder:
            inner = Path(folder) / f"{path.name}.tmp"
            torch.save(obj, inner)
            os.replace(inner, tmp)

    return atomic_write(path, write)
