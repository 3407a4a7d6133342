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
from typing import Any, Callable, Iterator, Mapping


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


def _temp_beside(target: Path) -> Path:
    """An empty temporary file in ``target``'s folder, with the permissions a plain ``open(target, "w")``
    would give (0666 less the umask; mkstemp's own 0600 would make every committed file private to
    its owner, unreadable by a cluster group or a web server)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
    finally:
        os.close(fd)
    return Path(tmp_name)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit it replaces ``path`` atomically.

    The caller writes the temporary file by any means (``torch.save``, pandas, PIL, ...). On an
    exception the temporary file is removed and ``path`` is left exactly as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class WriteError(OSError):
    """A file could not be written; ``str()`` names the file and the cause (errno kept)."""


def _named(path: Path, err: OSError) -> WriteError:
    cause = err.strerror or str(err)
    return WriteError(err.errno, f"could not write {path}: {cause}")


def commit_together(writes: Mapping[str | Path, Callable[[Path], Any]]) -> list[Path]:
    """Write several files as one unit: all of them are replaced, or none is.

    ``writes`` maps each target path to a ``write(tmp_path)`` callable. Every file is first written
    to a temporary file beside its target and fsynced; only when all of them are complete are they
    renamed over their targets, in the mapping's order, and their folders fsynced. A failure while
    writing (a full disk, a file-size limit, an exception in a writer) removes every temporary file
    and leaves every target exactly as it was; an ``OSError`` is raised again as :class:`WriteError`
    naming the file it was writing. Renames need no space, so the only window in which a reader can
    see a mix of old and new files is a crash between two renames (microseconds); loaders that pair
    files (metrics.json and per_query.csv) check that they belong together.

    Returns the target paths, in order.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for target, write in writes.items():
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temp_beside(target)
            staged.append((target, tmp))
            try:
                write(tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            except WriteError:
                raise
            except OSError as err:
                raise _named(target, err) from err
    except BaseException:
        for _, tmp in staged:
            tmp.unlink(missing_ok=True)
        raise
    for target, tmp in staged:
        os.replace(tmp, target)
    for folder in dict.fromkeys(target.parent for target, _ in staged):
        fsync_dir(folder)
    return [target for target, _ in staged]


def text_writer(text: str) -> Callable[[Path], Any]:
    """A ``write(tmp)`` for :func:`commit_together` that writes ``text`` as UTF-8."""
    return lambda tmp: tmp.write_text(text, encoding="utf-8")


def json_writer(obj: Any) -> Callable[[Path], Any]:
    """A ``write(tmp)`` for :func:`commit_together`: JSON as :func:`write_json` writes it."""
    return text_writer(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_writer(obj: Any, name: str) -> Callable[[Path], Any]:
    """A ``write(tmp)`` for :func:`commit_together`: ``torch.save`` as :func:`torch_save` does it,
    so that the bytes do not depend on the temporary name (``name`` is the target's file name)."""

    def write(tmp: Path) -> None:
        import torch

        with tempfile.TemporaryDirectory(prefix=f".{name}.dir-", dir=tmp.parent) as folder:
            inner = Path(folder) / f"{name}.tmp"
            torch.save(obj, inner)
            os.replace(inner, tmp)

    return write


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result over ``path`` atomically; returns ``path``."""
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except WriteError:
        raise
    except OSError as err:
        raise _named(Path(path), err) from err
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, text_writer(text))


def write_json(path: str | Path, obj: Any) -> Path:
    """JSON with sorted keys and a final newline (stable bytes for the same content)."""
    return atomic_write(path, json_writer(obj))


def torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; store tensors and plain types only, so that the
    file loads with ``torch.load(..., weights_only=True)`` (reid.files reads it back that way).

    torch names the records inside its zip archive after the file it writes (``<name>/data.pkl``,
    the name minus its last suffix), so the object is saved as ``<path name>.tmp`` in a private
    folder: the bytes are the same for the same object, whatever the random temporary name.
    """
    path = Path(path)
    return atomic_write(path, torch_writer(obj, path.name))
