"""Extract a .zip or .tar(.gz/.bz2/.xz) archive into a fresh folder, refusing anything that could write
outside it.

Every member is checked before a single byte is written; one bad member rejects the archive whole:
- absolute names (``/x``, ``C:x``), ``..`` components, NUL bytes;
- devices, FIFOs and other special files; encrypted zip members;
- symbolic links that are absolute or resolve outside the folder, and hard links to anything but an
  earlier regular file of the archive;
- names that pass *through* a symbolic link or a file (``link/x``), duplicate names.
Case-insensitive filesystems are considered: ``A`` and ``a/x`` count as the same path.

Why the "no path through a link" rule: with it, every path resolves purely lexically, so the
lexical checks above are exact. Without it ``a/b/L -> ../..`` followed by ``a/b/L/../../..`` looks
inside lexically but escapes on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_LISTED = 20


class ArchiveError(ValueError):
    """The archive cannot be read (corrupt, truncated, unsupported)."""


class UnsafeArchiveError(ArchiveError):
    """The archive has members that could write outside the target folder; nothing was extracted."""


@dataclass(frozen=True)
class Member:
    name: str  # normalised: '/'-separated, no '.', '' or '..' components
    kind: str  # file | dir | symlink | hardlink
    size: int
    link: str | None  # symlink: its raw target; hardlink: the normalised archive path it links to
    source: object  # the ZipInfo / TarInfo


def _normalise(raw: str, problems: list[str], what: str) -> str | None:
    """Archive name -> safe relative POSIX path, or None (with a problem recorded)."""
    if "\x00" in raw:
        problems.append(f"{what} {raw!r}: NUL byte in name")
        return None
    if raw.startswith(("/", "\\")) or _DRIVE.match(raw):
        problems.append(f"{what} {raw!r}: absolute path")
        return None
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        problems.append(f"{what} {raw!r}: '..' component")
        return None
    return "/".join(parts)


def _zip_members(zf: zipfile.ZipFile, problems: list[str]) -> list[Member]:
    members = []
    for info in zf.infolist():
        # zip names use '/' (APPNOTE 4.4.17); some Windows tools wrote '\', which we read as a separator
        name = _normalise(info.filename, problems, "member")
        if name is None:
            continue
        if info.flag_bits & 0x1:
            problems.append(f"member {info.filename!r}: encrypted")
            continue
        mode = info.external_attr >> 16
        if info.is_dir() or (mode and stat.S_ISDIR(mode)):
            kind = "dir"
        elif mode and stat.S_ISLNK(mode):
            kind = "symlink"
        elif mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            problems.append(f"member {info.filename!r}: special file (mode {oct(mode)})")
            continue
        else:
            kind = "file"
        if not name and kind != "dir":
            problems.append(f"member {info.filename!r}: empty name")
            continue
        link = zf.read(info).decode("utf-8", "surrogateescape") if kind == "symlink" else None
        members.append(Member(name, kind, info.file_size, link, info))
    return members


def _tar_members(tf: tarfile.TarFile, problems: list[str]) -> list[Member]:
    members = []
    for info in tf.getmembers():
        name = _normalise(info.name, problems, "member")
        if name is None:
            continue
        if info.isdir():
            kind, link = "dir", None
        elif info.isreg():
            kind, link = "file", None
        elif info.issym():
            kind, link = "symlink", info.linkname
        elif info.islnk():
            kind = "hardlink"
            link = _normalise(info.linkname, problems, f"hard link {info.name!r} -> target")
            if link is None:
                continue
        else:
            problems.append(f"member {info.name!r}: device, FIFO or other special file")
            continue
        if not name and kind != "dir":
            problems.append(f"member {info.name!r}: empty name")
            continue
        members.append(Member(name, kind, info.size if kind == "file" else 0, link, info))
    return members


def _prefixes(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _check_tree(members: list[Member], problems: list[str]) -> None:
    """Duplicates, paths through links or files, and where each link points."""
    fold = str.casefold
    symlinks = {fold(m.name) for m in members if m.kind == "symlink"}
    non_dirs = {}
    dirs = set()
    for m in members:
        key = fold(m.name)
        if m.kind == "dir":
            dirs.add(key)
            continue
        if key in non_dirs:
            problems.append(f"member {m.name!r}: duplicate name (also {non_dirs[key]!r})")
        non_dirs[key] = m.name
    for key in dirs & non_dirs.keys():
        problems.append(f"member {non_dirs[key]!r}: is both a folder and a file or link")
    for m in members:
        for prefix in _prefixes(m.name):
            if fold(prefix) in symlinks:
                problems.append(f"member {m.name!r}: path goes through the symbolic link {prefix!r}")
                break
            if fold(prefix) in non_dirs:
                problems.append(f"member {m.name!r}: path goes through the file {prefix!r}")
                break
    regular_seen = set()
    for m in members:
        if m.kind == "file":
            regular_seen.add(m.name)
        elif m.kind == "hardlink":
            if m.link not in regular_seen:
                problems.append(
                    f"hard link {m.name!r} -> {m.link!r}: target is not an earlier regular file of the archive"
                )
        elif m.kind == "symlink":
            problem = _symlink_problem(m, symlinks)
            if problem:
                problems.append(f"symbolic link {m.name!r} -> {m.link!r}: {problem}")


def _symlink_problem(m: Member, symlinks: set[str]) -> str | None:
    target = m.link or ""
    if not target:
        return "empty target"
    if "\x00" in target:
        return "NUL byte in target"
    if "\\" in target:  # a separator on Windows: refuse rather than guess
        return "backslash in target"
    if target.startswith(("/", "\\")) or _DRIVE.match(target):
        return "absolute target (points outside the folder)"
    resolved = m.name.split("/")[:-1]
    parts = [p for p in target.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            if not resolved:
                return "points outside the folder"
            resolved.pop()
        else:
            resolved.append(part)
            if i < len(parts) - 1 and "/".join(resolved).casefold() in symlinks:
                return f"target goes through the symbolic link {'/'.join(resolved)!r}"
    return None


def _open(archive: Path):
    """(kind, handle) for a zip or tar archive; ArchiveError when it is neither or cannot be read."""
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            return "zip", zipfile.ZipFile(archive)
        if name.endswith(_TAR_SUFFIXES):
            return "tar", tarfile.open(archive, "r:*")
        if zipfile.is_zipfile(archive):
            return "zip", zipfile.ZipFile(archive)
        if tarfile.is_tarfile(archive):
            return "tar", tarfile.open(archive, "r:*")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ArchiveError(f"{archive}: not a readable archive (corrupt or truncated?): {e}") from e
    raise ArchiveError(f"{archive}: neither a zip nor a tar archive")


def list_members(archive: str | Path) -> list[Member]:
    """All members of ``archive``, normalised and checked; UnsafeArchiveError lists every problem."""
    archive = Path(archive)
    kind, handle = _open(archive)
    problems: list[str] = []
    with handle:
        try:
            members = _zip_members(handle, problems) if kind == "zip" else _tar_members(handle, problems)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
            raise ArchiveError(f"{archive}: cannot list members (corrupt or truncated?): {e}") from e
    _check_tree(members, problems)
    if problems:
        shown = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise UnsafeArchiveError(
            f"{archive}: rejected, nothing extracted ({len(problems)} unsafe member(s)):\n  {shown}{more}"
        )
    return members


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract ``archive`` into ``dest``, which must not exist yet (or be an empty folder).

    All members are checked first (see the module doc); on any failure during extraction the
    partly written ``dest`` is removed. Returns ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    members = list_members(archive)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest}: extraction target must be a new or empty folder")
    needed = sum(m.size for m in members)
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if needed > free:
        raise OSError(f"{archive}: needs {needed} bytes to extract, only {free} free at {dest}")
    kind, handle = _open(archive)
    try:
        with handle:
            _write_members(handle, kind, members, dest)
    except BaseException as e:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(e, (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)):
            raise ArchiveError(f"{archive}: corrupt or truncated archive data: {e}") from e
        raise
    return dest


def _write_members(handle, kind: str, members: list[Member], dest: Path) -> None:
    def target(name: str) -> Path:
        return dest.joinpath(*name.split("/")) if name else dest

    for m in members:  # folders first, so files never need to create them implicitly under a link
        if m.kind == "dir":
            target(m.name).mkdir(parents=True, exist_ok=True)
    for m in members:
        if m.kind != "file":
            continue
        path = target(m.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        src = handle.open(m.source) if kind == "zip" else handle.extractfile(m.source)
        with src, open(path, "xb") as out:  # 'x': never write through an existing file or link
            try:
                shutil.copyfileobj(src, out, 1 << 20)
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
                raise ArchiveError(f"member {m.name!r}: corrupt data: {e}") from e
    for m in members:
        if m.kind == "hardlink":
            path = target(m.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target(m.link), path)  # a copy: no shared inode to surprise anyone later
    for m in members:  # links last: nothing is written after them
        if m.kind == "symlink":
            path = target(m.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(m.link, path)
