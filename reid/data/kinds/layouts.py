"""Layout code shared by the kinds: finding a dataset folder, Market-1501 as it is, and renaming.

``MarketLayout`` serves every kind that already ships Market-1501's folders and names (Market-1501,
DukeMTMC-reID, a user's own dataset). ``place_renamed`` serves kinds whose native names differ: it
gives each image a Market-1501 name and records the original path beside it, in
``data/{dataset}/original_names.tsv`` (tab-separated: split folder, new name, original path), so a
ranked list or a suspicious image can always be traced back to the release's own file.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from reid.data import market
from reid.data.kinds.base import DatasetLayoutError, Transfer
from reid.io import write_text

MAX_DEPTH = 4  # how deep inside an archive or folder the dataset folder may sit
ORIGINAL_NAMES = "original_names.tsv"


def find_folder(root: Path, is_dataset: Callable[[Path], bool], holding: str, label: str,
                expected_name: str | None) -> Path:
    """The one folder at most MAX_DEPTH below ``root`` (``root`` included) for which ``is_dataset``
    holds. ``holding`` says what such a folder holds, for the error message."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):  # does not follow links
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        # macOS zips carry __MACOSX/ shadow copies; hidden folders are never the dataset
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("__MACOSX", "."))) if depth < MAX_DEPTH else []
        if is_dataset(here):
            found.append(here)
            dirnames[:] = []  # a dataset folder does not hold another one
    if not found:
        top = sorted(_shown(p) for p in root.iterdir())
        raise DatasetLayoutError(
            f"{label}: no folder holding {holding} was found"
            + (f" (expected {expected_name}/)" if expected_name else "")
            + f"; its top level holds: {top[:20]}"
        )
    if len(found) > 1:
        rels = sorted(p.relative_to(root).as_posix() or "." for p in found)
        raise DatasetLayoutError(f"{label}: several dataset folders found, cannot choose: {rels}")
    return found[0]


def list_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each line of a release's list file, read as people keep them: UTF-8
    with or without a byte-order mark (Windows Notepad writes one), line ends LF, CRLF or CR (a
    file edited on another OS). Raises DatasetLayoutError naming the file and the line of bytes that
    are not UTF-8, shown with repr."""
    raw = path.read_bytes()
    lines = raw.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            out.append((number, line.decode("utf-8")))
        except UnicodeDecodeError:
            raise DatasetLayoutError(f"{path}, line {number}: not UTF-8 text: {line!r}") from None
    return out


def _shown(path: Path) -> str:
    """How an entry of a folder is listed in a message: ``query/``, ``query/ -> /disk2/query`` for a
    symbolic link, ``query -> /gone (dangling link)`` for one whose target does not exist."""
    if not path.is_symlink():
        return path.name + ("/" if path.is_dir() else "")
    target = os.readlink(path)
    if not path.exists():
        return f"{path.name} -> {target} (dangling link)"
    return f"{path.name}{'/' if path.is_dir() else ''} -> {target}"


def _is_folder(path: Path) -> bool:
    """A split folder: a folder, or a symbolic link to one (a user's folder may link a split from
    another disk; links inside an archive are checked by reid.data.extract before they get here)."""
    return path.is_dir()


class MarketLayout:
    """Already Market-1501: the split folders are taken as they are (names are judged by verification)."""

    def find(self, root: Path, label: str, expected_name: str | None) -> Path:
        required = [market.SPLIT_DIRS[s] for s in market.REQUIRED_SPLITS]
        return find_folder(root, lambda d: all(_is_folder(d / r) for r in required),
                           ", ".join(r + "/" for r in required), label, expected_name)

    def lay_out(self, folder: Path, staged: Path, transfer: Transfer) -> dict:
        placed = []
        for sub in market.SPLIT_DIRS.values():
            if _is_folder(folder / sub):
                transfer.tree(folder / sub, staged / sub)
                placed.append(sub)
        return {"split_folders": placed}


@dataclass(frozen=True)
class NativeImage:
    """One image of a release whose names are not Market-1501's, with what its layout says about it."""

    source: Path  # the file
    original: str  # its path as the release names it (relative to the dataset folder)
    split: str  # a key of market.SPLIT_DIRS
    pid: int  # already in Market-1501's convention: >= 1 for a person
    camid: int  # 1-based


def place_renamed(images: Iterable[NativeImage], staged: Path, transfer: Transfer) -> dict:
    """Give each image a Market-1501 name and place it in its split folder; write ORIGINAL_NAMES.

    Name fields: pid and camera from the release, sequence 0, frame = the image's ordinal among the
    images of its identity (in the order given, which callers make the release's sorted order), box 00;
    the suffix is kept. Raises DatasetLayoutError for a pid or camera a Market-1501 name cannot hold.
    """
    images = list(images)
    ordinal: dict[int, int] = defaultdict(int)
    rows = []
    per_split: dict[str, int] = defaultdict(int)
    for im in images:
        if not (1 <= im.pid <= 9999 and 1 <= im.camid <= 99):
            raise DatasetLayoutError(f"{im.original}: pid {im.pid} / camera {im.camid} out of range "
                                     f"for a Market-1501 name (pid 1..9999, camera 1..99)")
        ordinal[im.pid] += 1
        name = market.format_market_name(im.pid, im.camid, 0, ordinal[im.pid], 0, suffix=im.source.suffix.lower())
        sub = market.SPLIT_DIRS[im.split]
        transfer.file(im.source, staged / sub / name)
        rows.append(f"{sub}\t{name}\t{im.original}")
        per_split[sub] += 1
    for sub in per_split:
        (staged / sub).mkdir(exist_ok=True)
    write_text(staged / ORIGINAL_NAMES, "split\tname\toriginal\n" + "".join(r + "\n" for r in rows))
    return {"renamed": dict(sorted(per_split.items())), "original_names": ORIGINAL_NAMES}
