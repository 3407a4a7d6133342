"""What a dataset kind is: published split counts, where it comes from, and how it becomes Market-1501.

A kind (``dataset.<name>.kind`` in config.yaml) is one ``DatasetKind``; each lives in its own module
of this package and is listed once in ``reid.data.kinds.REGISTRY``. Layout code (``Layout``) finds
the dataset inside an extracted archive or a user's folder and places its images into the staged
Market-1501 layout that verification then checks (``reid.data.prepare``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol


@dataclass(frozen=True)
class SplitCounts:
    """Published counts of one split. ``identities`` counts real persons only (junk pid -1 and
    distractors pid 0 apart); ``cameras`` means cameras 1..cameras, all present. None: not published,
    so not checked (reported only)."""

    images: int
    identities: int | None
    cameras: int | None
    junk: int = 0
    distractors: int = 0


class DatasetLayoutError(ValueError):
    """The archive or folder does not hold a dataset in the kind's expected layout."""


def resolved_file(path: Path) -> Path:
    """``path`` with every symbolic link resolved (a user's folder may link its images from elsewhere).
    Raises DatasetLayoutError naming the link and its target when the target does not exist."""
    try:
        return path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):  # RuntimeError: a loop of links
        raise DatasetLayoutError(f"{path}: a symbolic link whose target {os.readlink(path)!r} does not exist "
                                 "(a dangling link): fix or remove it") from None


class Transfer:
    """How images reach the staged layout: moved out of our own extraction folder (renames, instant),
    or hard-linked / copied out of a user's folder, which is never modified."""

    def __init__(self, move: bool):
        self.move = move
        self.linked = 0
        self.copied = 0
        self.moved = 0

    def file(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self.move:
            os.rename(src, dst)
            self.moved += 1
            return
        src = resolved_file(src)  # a symlinked image: its target (os.link would link the link itself)
        try:
            # a hard link costs no space; the pipeline never writes into data/{dataset}/ in place
            os.link(src, dst)
            self.linked += 1
        except OSError:  # another filesystem, or links not permitted: copy
            shutil.copy2(src, dst)
            self.copied += 1

    def tree(self, src: Path, dst: Path) -> None:
        """A whole split folder, kept as it is (its non-image files included: verification judges them)."""
        if self.move:
            os.rename(src, dst)
            self.moved += 1
            return
        dst.mkdir(parents=True)
        for entry in sorted(src.iterdir()):
            if entry.is_dir():
                self.tree(entry, dst / entry.name)
            else:
                self.file(entry, dst / entry.name)

    def summary(self) -> dict:
        return {"moved": self.moved} if self.move else {"hard_linked": self.linked, "copied": self.copied}


class Layout(Protocol):
    """A kind's native layout, and how to turn it into Market-1501's."""

    def find(self, root: Path, label: str, expected_name: str | None) -> Path:
        """The dataset folder inside ``root`` (an extracted archive or a user's folder); raise
        DatasetLayoutError naming ``label`` (the archive or folder) when it is missing or ambiguous."""

    def lay_out(self, folder: Path, staged: Path, transfer: Transfer) -> dict:
        """Place ``folder``'s images under ``staged`` in Market-1501 layout; return what was done
        (JSON-serialisable, kept in the preparation report)."""


@dataclass(frozen=True)
class DatasetKind:
    name: str  # the value of dataset.<name>.kind
    display_name: str
    layout: Layout
    splits: Mapping[str, SplitCounts] | None  # keys as in reid.data.market.SPLIT_DIRS; None = nothing checked
    has_multi_query: bool  # gt_bbox/ present after layout
    how_to_get: str  # shown when the archive or folder is missing
    folder: str | None = None  # the dataset folder's usual name inside the archive
    archive: str | None = None  # the archive's usual file name
    md5: str | None = None  # the archive's MD5 where it is known for certain
    total_identities: int | None = None  # published identities over all splits (checked when set)
    total_cameras: int | None = None  # published cameras over all splits (checked when set)
    paper_key: str | None = None  # the dataset's key in reid/report/paper_numbers.yaml; None = the paper has no numbers
    notes: tuple[str, ...] = field(default=())

    @property
    def checks_counts(self) -> bool:
        return self.splits is not None
