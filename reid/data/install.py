"""Installing a dataset folder at data/{dataset}/ so that a failing re-run can never cost the last good one.

Snakemake deletes a job's declared outputs before it runs the job. The dataset folder is therefore
*not* a declared output of the rules that make it (synthesize, prepare_dataset, any future source):
each of them declares only its manifest, ``data/{dataset}.manifest.json``, and installs the folder
itself through :func:`replace_dir`: the new dataset is built and checked in a work folder beside it
and swapped in by renames, the previous one staying in place until the new one is complete. When
the job fails, Snakemake removes the manifest only; the folder is the previous good dataset,
untouched, and the rule runs again next time (the manifest is missing).

The manifest records where the dataset came from and a digest of its files (each path and size),
written after the folder is in place (through reid.io). ``reid verify`` checks the folder against it
(:func:`check_manifest`), so a folder changed by hand after it was installed is caught before training.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from reid import io
from reid.config import config_hash

MANIFEST_SUFFIX = ".manifest.json"


class ManifestError(ValueError):
    """A dataset folder that does not match its manifest (or a manifest that cannot be read)."""


def manifest_path(data_dir: str | Path) -> Path:
    """``data/{dataset}`` -> ``data/{dataset}.manifest.json``."""
    data_dir = Path(data_dir)
    return data_dir.with_name(data_dir.name + MANIFEST_SUFFIX)


def folder_digest(root: str | Path) -> tuple[int, str]:
    """(number of files, short hash of every file's path below ``root`` and size in bytes)."""
    root = Path(root)
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            entries.append((p.relative_to(root).as_posix(), p.stat().st_size))
    entries.sort()
    return len(entries), config_hash(entries)


def work_dir(target: str | Path, what: str) -> Path:
    """A fresh work folder beside ``target`` (same filesystem, so the final moves are renames)."""
    target = Path(target)
    target = target.resolve() if target.is_symlink() else target  # data/{dataset} linked to another disk
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{what}-", dir=target.parent))


def replace_dir(staged: Path, target: Path, work: Path) -> None:
    """Put ``staged`` at ``target`` by renames; an existing ``target`` is moved into ``work`` (which the
    caller removes) only once it can be swapped, and is put back if the swap fails."""
    target = target.resolve() if target.is_symlink() else target
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    if target.exists():
        previous = work / "previous"
        os.rename(target, previous)
        try:
            os.rename(staged, target)
        except BaseException:
            os.rename(previous, target)
            raise
    else:
        os.rename(staged, target)
    io.fsync_dir(target.parent)


def write_manifest(data_dir: str | Path, manifest: str | Path, source: dict) -> dict:
    """Describe the installed folder ``data_dir`` in ``manifest`` (atomically); returns the record."""
    files, digest = folder_digest(data_dir)
    record = {"data": str(data_dir), "source": source, "files": files, "digest": digest}
    io.write_json(manifest, record)
    return record


def check_manifest(data_dir: str | Path, manifest: str | Path) -> dict:
    """Raise ManifestError (naming both) unless ``data_dir`` holds the files ``manifest`` describes."""
    manifest = Path(manifest)
    try:
        record = json.loads(manifest.read_text())
        files, digest = int(record["files"]), str(record["digest"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ManifestError(f"{manifest}: unreadable dataset manifest ({e}); written by the rule that "
                            f"makes {data_dir} (synthesize / prepare_dataset): rerun it") from None
    if not Path(data_dir).is_dir():
        raise ManifestError(f"{data_dir}: dataset folder missing although {manifest} describes it; "
                            f"remove {manifest} to make it again")
    found = folder_digest(data_dir)
    if found != (files, digest):
        raise ManifestError(f"{data_dir} changed since it was installed: {found[0]} files (digest {found[1]}), "
                            f"{manifest} says {files} (digest {digest}). Remove {manifest} to make the "
                            f"dataset again, or restore the folder")
    return record


def install_failed_note(data_dir: str | Path, existed: bool) -> str:
    """What a failed install left in place, stated from the files as they are now (never assumed)."""
    data_dir = Path(data_dir)
    manifest = manifest_path(data_dir)
    if existed and data_dir.is_dir():
        note = f"{data_dir} was left unchanged: the previous dataset is still there, and results made from it are untouched."
    elif data_dir.exists():
        note = f"{data_dir} exists but was not installed by this run."
    else:
        note = f"{data_dir} does not exist: nothing was installed."
    if manifest.exists():
        return note + f" Its manifest {manifest} is still there."
    return note + (f" {manifest} does not exist (Snakemake removes a job's outputs before running it), so the "
                   f"rule runs again once its input is fixed.")
