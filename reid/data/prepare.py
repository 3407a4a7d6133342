"""Turn a dataset archive into data/{dataset}/ in Market-1501 layout, all or nothing.

The archive is extracted safely into a work folder beside ``out_dir`` (same filesystem, so the
final moves are renames), the dataset folder is found inside it, its split folders are moved into a
staged layout, the staged layout is verified, and only then does it replace ``out_dir``. Any failure
leaves ``out_dir`` exactly as it was and removes the work folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from reid.data import market
from reid.data.extract import safe_extract
from reid.data.fetch import fsync_dir
from reid.data.known_splits import known_dataset
from reid.data.verify import DatasetVerificationError, verify_dataset

_MAX_DEPTH = 4  # how deep inside the archive the dataset folder may sit


class DatasetLayoutError(ValueError):
    """The archive does not hold a dataset in the expected layout."""


def _find_dataset_folder(extracted: Path, expected_name: str | None, archive: Path) -> Path:
    required = [market.SPLIT_DIRS[s] for s in market.REQUIRED_SPLITS]
    found = []
    for dirpath, dirnames, _ in os.walk(extracted):  # does not follow links
        here = Path(dirpath)
        depth = len(here.relative_to(extracted).parts)
        # macOS zips carry __MACOSX/ shadow copies; hidden folders are never the dataset
        dirnames[:] = [d for d in dirnames if not d.startswith(("__MACOSX", "."))] if depth < _MAX_DEPTH else []
        if all((here / r).is_dir() and not (here / r).is_symlink() for r in required):
            found.append(here)
            dirnames[:] = []  # a dataset folder does not hold another one
    if not found:
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in extracted.iterdir())
        raise DatasetLayoutError(
            f"{archive}: no folder holding {', '.join(r + '/' for r in required)} was found"
            + (f" (expected {expected_name}/)" if expected_name else "")
            + f"; the archive's top level holds: {top[:20]}"
        )
    if len(found) > 1:
        rels = sorted(p.relative_to(extracted).as_posix() or "." for p in found)
        raise DatasetLayoutError(f"{archive}: several dataset folders found, cannot choose: {rels}")
    return found[0]


def _reject_links(staged: Path, archive: Path) -> None:
    """Links inside the laid-out dataset would point elsewhere once moved: the published archives have none."""
    links = [p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_symlink()]
    if links:
        raise DatasetLayoutError(f"{archive}: symbolic links inside the split folders are not supported: {links[:10]}")


def _replace_dir(staged: Path, target: Path, work: Path) -> None:
    """Put ``staged`` at ``target``; an existing ``target`` is kept until the new one is in place."""
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
    fsync_dir(target.parent)


def prepare_dataset(
    archive: str | Path,
    kind: str | None,
    out_dir: str | Path,
    *,
    custom: bool = False,
    decode: bool = True,
    workers: int | None = None,
) -> dict:
    """Extract ``archive`` and lay its dataset out at ``out_dir`` (Market-1501 layout); return the
    verification report (the same dict verify_dataset returns, for out_dir).

    ``kind`` names the published dataset (market1501 | dukemtmcreid) whose counts are checked unless
    ``custom``; None checks nothing but the structure. Raises DatasetVerificationError (out_dir
    untouched) when verification fails, UnsafeArchiveError / ArchiveError for a bad archive,
    DatasetLayoutError when no dataset folder is found.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    known = known_dataset(kind) if kind is not None else None
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive not found")
    # a symlinked data/{dataset} (data on another disk): work where its target lives
    target = out_dir.resolve() if out_dir.is_symlink() else out_dir
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.prepare-", dir=target.parent))
    try:
        extracted = safe_extract(archive, work / "extracted")
        source = _find_dataset_folder(extracted, known.folder if known else None, archive)
        staged = work / "staged"
        staged.mkdir()
        moved = []
        for sub in market.SPLIT_DIRS.values():
            if (source / sub).is_dir() and not (source / sub).is_symlink():
                os.rename(source / sub, staged / sub)
                moved.append(sub)
        not_copied = sorted(p.name for p in source.iterdir())
        _reject_links(staged, archive)
        try:
            report = verify_dataset(staged, kind, custom, decode=decode, workers=workers)
        except DatasetVerificationError as e:
            e.report["root"] = str(out_dir)
            message = str(e).replace(str(staged), f"{out_dir} (from {archive.name}, not installed)")
            raise DatasetVerificationError(f"{message}\n{out_dir} was left unchanged.", e.report) from None
        report["root"] = str(out_dir)
        report["archive"] = {
            "file": archive.name,
            "dataset_folder": source.relative_to(extracted).as_posix() or ".",
            "split_folders": moved,
            "not_copied": not_copied,  # e.g. Market-1501's gt_query/ and readme.txt
        }
        _replace_dir(staged, target, work)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)
