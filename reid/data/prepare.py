"""Turn a dataset archive or folder into data/{dataset}/ in Market-1501 layout, all or nothing.

An archive is extracted safely into a work folder beside ``out_dir`` (same filesystem, so the
final moves are renames); a folder (``source: folder``, how most users hold Market-1501) is read in
place and never modified: its images are hard-linked into the work folder, or copied where links
are impossible. The kind's layout (reid.data.kinds) finds the dataset folder and places its images
into a staged Market-1501 layout, the staged layout is verified, and only then does it replace
``out_dir``. Any failure leaves ``out_dir`` exactly as it was and removes the work folder.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from reid.data.extract import safe_extract
from reid.data.install import replace_dir
from reid.data.kinds import DatasetLayoutError, Transfer, get_kind
from reid.data.verify import DatasetVerificationError, verify_dataset

__all__ = ["DatasetLayoutError", "prepare_dataset"]


def _reject_links(staged: Path, archive: Path) -> None:
    """Links inside the laid-out dataset would point elsewhere once moved: the published archives have none."""
    links = [p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_symlink()]
    if links:
        raise DatasetLayoutError(f"{archive}: symbolic links inside the split folders are not supported: {links[:10]}")


def _check_apart(source: Path, target: Path) -> None:
    """A folder source must not be, hold or sit inside the output: laying out would touch it."""
    s, t = source.resolve(), target.resolve()
    if s == t or s in t.parents or t in s.parents:
        raise ValueError(f"{source}: the dataset folder and the output {target} must be apart "
                         f"(neither may contain the other)")


def prepare_dataset(
    archive: str | Path,
    kind: str | None,
    out_dir: str | Path,
    *,
    custom: bool = False,
    decode: bool = True,
    workers: int | None = None,
) -> dict:
    """Lay the dataset of ``archive`` (an archive file, or an already-extracted folder) out at
    ``out_dir`` (Market-1501 layout); return the verification report (the same dict verify_dataset
    returns, for out_dir), with a ``source`` entry saying what was taken from where.

    ``kind`` names an entry of reid.data.kinds.REGISTRY (None: ``custom``, a dataset already in
    Market-1501 layout); its published counts are checked unless ``custom``. Raises
    DatasetVerificationError (out_dir untouched) when verification fails, UnsafeArchiveError /
    ArchiveError for a bad archive, DatasetLayoutError when the kind's layout is not found,
    FileNotFoundError when the archive or folder is missing.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    known = get_kind(kind)
    from_folder = archive.is_dir()
    if not (from_folder or archive.is_file()):
        raise FileNotFoundError(f"{archive}: archive or dataset folder not found")
    # a symlinked data/{dataset} (data on another disk): work where its target lives
    target = out_dir.resolve() if out_dir.is_symlink() else out_dir
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    if from_folder:
        _check_apart(archive, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.prepare-", dir=target.parent))
    try:
        root = archive if from_folder else safe_extract(archive, work / "extracted")
        source = known.layout.find(root, str(archive), known.folder)
        staged = work / "staged"
        staged.mkdir()
        transfer = Transfer(move=not from_folder)
        laid_out = known.layout.lay_out(source, staged, transfer)
        _reject_links(staged, archive)
        try:
            report = verify_dataset(staged, kind, custom, decode=decode, workers=workers)
        except DatasetVerificationError as e:
            e.report["root"] = str(out_dir)
            message = str(e).replace(str(staged), f"{out_dir} (from {archive.name}, not installed)")
            raise DatasetVerificationError(f"{message}\n{out_dir} was left unchanged.", e.report) from None
        report["root"] = str(out_dir)
        report["source"] = {
            "kind": known.name,
            ("folder" if from_folder else "archive"): str(archive) if from_folder else archive.name,
            "dataset_folder": source.relative_to(root).as_posix() or ".",
            **laid_out,
            **transfer.summary(),
        }
        if not from_folder:  # what stayed behind in the extraction (e.g. Market-1501's gt_query/, readme.txt)
            report["source"]["not_copied"] = sorted(
                p.name for p in source.iterdir() if not p.is_dir() or any(q.is_file() for q in p.rglob("*")))
        replace_dir(staged, target, work)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prepare_into(spec: dict, source: Path, out: Path, failed_report: Path | None = None,
                 manifest: str | Path | None = None) -> dict:
    """``reid prepare``: the archive (checksums of config section ``spec`` checked first) or folder
    ``source`` laid out in Market-1501 layout at ``out`` and verified (prepare_dataset); then the
    ``manifest`` when given. Returns the report's ``source`` section.

    A failed verification writes its full report to ``failed_report`` (default ``<out>.failed.json``)
    and raises; any failure keeps the previous ``out`` and says so on stderr.
    """
    import sys

    from reid.data.fetch import verify_checksum
    from reid.data.install import install_failed_note, write_manifest
    from reid.data.verify import remove_stale_failed_report, write_failed_report

    existed = out.is_dir()
    failed = failed_report or Path(f"{out}.failed.json")
    try:
        sums = None
        if spec["source"] == "archive":
            sums = verify_checksum(source, md5=spec.get("md5"), sha256=spec.get("sha256"))
        try:
            report = prepare_dataset(source, spec.get("kind"), out, custom=bool(spec.get("custom", False)))
        except DatasetVerificationError as e:
            write_failed_report(e, failed)
            raise
    except BaseException:
        print(install_failed_note(out, existed), file=sys.stderr)
        raise
    remove_stale_failed_report(failed)
    if manifest:
        write_manifest(out, manifest, {**report["source"], **(sums or {}), "custom": bool(spec.get("custom", False))})
    return report["source"]

