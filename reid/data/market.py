"""The Market-1501 / DukeMTMC-reID file naming and folder layout: the one place that knows them.

Market-1501:    ``0002_c1s1_000451_03.jpg``  pid, camera, sequence, frame, bounding box
DukeMTMC-reID:  ``0001_c2_f0046182.jpg``     pid, camera, frame
pid ``-1`` marks junk images (ignored by evaluation), pid ``0`` distractors (counted as negatives).
Cameras take one or two digits (MSMT17 has 15, laid out as ``c1``..``c15``); CUHK03-NP keeps its PNG
images.

Every entry of a split folder is accounted for (``scan_entries``): a file whose name (without its
suffix) follows one of the conventions is an image, whatever its suffix and its case (``.jpg``,
``.JPG``, ``.png``, ``.jpeg``, ``.bmp``, ...; verification then checks that Pillow decodes it); known
operating-system clutter (``Thumbs.db``, ``.DS_Store``, ``desktop.ini``, macOS ``._*`` files) is
ignored and counted; anything else (a file with another name, a sub-folder) is an error naming its
path, split folder included. Verification, training and extraction all read the splits through
this module, so they see the same images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TRAIN_DIR = "bounding_box_train"
GALLERY_DIR = "bounding_box_test"
QUERY_DIR = "query"
MULTI_QUERY_DIR = "gt_bbox"
SPLIT_DIRS = {"train": TRAIN_DIR, "gallery": GALLERY_DIR, "query": QUERY_DIR, "multi_query": MULTI_QUERY_DIR}
REQUIRED_SPLITS = ("train", "gallery", "query")
IMAGE_SUFFIX = ".jpg"
IMAGE_SUFFIXES = (".jpg", ".png")  # what the published datasets ship and format_market_name writes;
# images of any suffix are read (parse_name, scan_entries)
# Files that file managers and operating systems drop into folders; compared case-insensitively.
OS_CLUTTER = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", ".ds_store"})
APPLEDOUBLE_PREFIX = "._"  # macOS resource-fork companions ("._0001_c1s1_000451_03.jpg"), never images

JUNK_PID = -1
DISTRACTOR_PID = 0

_MARKET = re.compile(r"^(?P<pid>-1|\d{4})_c(?P<cam>\d{1,2})s(?P<seq>\d)_(?P<frame>\d{6})_(?P<bbox>\d{2})$")
_DUKE = re.compile(r"^(?P<pid>-1|\d{4})_c(?P<cam>\d{1,2})_f(?P<frame>\d{7})$")


class NamingError(ValueError):
    """A file name that follows neither the Market-1501 nor the DukeMTMC-reID convention."""


class SplitFolderError(NamingError):
    """A split folder holding entries that are neither images nor known clutter (all are listed)."""


@dataclass(frozen=True)
class ImageName:
    pid: int
    camid: int  # 1-based, as in the file name
    sequence: int  # Market-1501 only; 0 for DukeMTMC-reID
    frame: int
    bbox: int  # Market-1501 only; 0 for DukeMTMC-reID

    @property
    def is_junk(self) -> bool:
        return self.pid == JUNK_PID

    @property
    def is_distractor(self) -> bool:
        return self.pid == DISTRACTOR_PID


def parse_name(path: str | Path) -> ImageName:
    """Parse a Market-1501 or DukeMTMC-reID image name, whatever its suffix (``.jpg``, ``.PNG``, none);
    raise NamingError naming the file (``path`` as given: pass the full path to name the folder)."""
    path = Path(path)
    stem = path.stem
    m = _MARKET.match(stem)
    if m:
        seq, bbox = int(m["seq"]), int(m["bbox"])
    else:
        m = _DUKE.match(stem)
        if not m:
            raise NamingError(
                f"{path}: malformed re-ID image name (expected Market-1501 'PPPP_cCsS_FFFFFF_BB.<suffix>' "
                f"or DukeMTMC-reID 'PPPP_cC_fFFFFFFF.<suffix>', pid -1 for junk)"
            )
        seq, bbox = 0, 0
    cam = int(m["cam"])
    if cam == 0:
        raise NamingError(f"{path}: camera index 0 is invalid (cameras are numbered from 1)")
    return ImageName(pid=int(m["pid"]), camid=cam, sequence=seq, frame=int(m["frame"]), bbox=bbox)


def format_market_name(pid: int, camid: int, sequence: int, frame: int, bbox: int, suffix: str = IMAGE_SUFFIX) -> str:
    """The Market-1501 file name for these fields (inverse of parse_name)."""
    if not (pid == JUNK_PID or 0 <= pid <= 9999):
        raise ValueError(f"pid {pid} out of range (-1 or 0..9999)")
    if suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"suffix {suffix!r}: expected one of {IMAGE_SUFFIXES}")
    if not (1 <= camid <= 99 and 0 <= sequence <= 9 and 0 <= frame <= 999999 and 0 <= bbox <= 99):
        raise ValueError(f"field out of range: camid={camid} sequence={sequence} frame={frame} bbox={bbox}")
    pid_text = "-1" if pid == JUNK_PID else f"{pid:04d}"
    return f"{pid_text}_c{camid}s{sequence}_{frame:06d}_{bbox:02d}{suffix}"


@dataclass(frozen=True)
class Record:
    path: str
    pid: int
    camid: int


def is_os_clutter(name: str) -> bool:
    """True for files that operating systems leave in folders (Thumbs.db, .DS_Store, desktop.ini, ._*)."""
    return name.casefold() in OS_CLUTTER or name.startswith(APPLEDOUBLE_PREFIX)


@dataclass(frozen=True)
class SplitScan:
    """Every entry of one split folder, sorted by name; paths are the full paths (folder included).

    records: the images (names that parse) with their names parsed; ``names[i]`` belongs to
    ``records[i]``. ignored: OS clutter. malformed: (path, error) for files whose names do not parse.
    unexpected: (path, error) for entries that are not files (sub-folders, ...).
    """

    folder: Path
    records: list[Record]
    names: list[ImageName]
    ignored: list[str]
    malformed: list[tuple[str, str]]
    unexpected: list[tuple[str, str]]

    @property
    def problems(self) -> list[str]:
        return [e for _, e in self.malformed] + [e for _, e in self.unexpected]


def scan_entries(folder: str | Path) -> SplitScan:
    """Classify every entry of a split folder (see the module doc); raises FileNotFoundError if missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: split folder missing")
    records, names, ignored, malformed, unexpected = [], [], [], [], []
    for p in sorted(folder.iterdir()):
        if is_os_clutter(p.name):
            ignored.append(str(p))
        elif not p.is_file():
            unexpected.append((str(p), f"{p}: not an image file ({'a folder' if p.is_dir() else 'not a regular file'}"
                                       f" inside the split folder {folder.name}/)"))
        else:
            try:
                name = parse_name(p)
            except NamingError as e:
                malformed.append((str(p), str(e)))
                continue
            records.append(Record(path=str(p), pid=name.pid, camid=name.camid))
            names.append(name)
    return SplitScan(folder, records, names, ignored, malformed, unexpected)


def scan_split(folder: str | Path) -> list[Record]:
    """All images of one split folder, sorted by name; OS clutter (Thumbs.db, ...) is ignored.

    Raises FileNotFoundError when the folder is missing, SplitFolderError (listing every one, with
    its path) when it holds anything else than images and clutter.
    """
    scan = scan_entries(folder)
    if scan.problems:
        listed = "\n  ".join(scan.problems[:20])
        more = f"\n  ... and {len(scan.problems) - 20} more" if len(scan.problems) > 20 else ""
        raise SplitFolderError(f"{scan.folder}: {len(scan.problems)} entr{'y' if len(scan.problems) == 1 else 'ies'} "
                               f"that are not re-ID images:\n  {listed}{more}")
    return scan.records


def scan_dataset(root: str | Path) -> dict[str, list[Record]]:
    """The splits of a dataset in Market-1501 layout; ``multi_query`` only where ``gt_bbox/`` exists."""
    root = Path(root)
    out = {}
    for split, sub in SPLIT_DIRS.items():
        d = root / sub
        if split in REQUIRED_SPLITS or d.is_dir():
            out[split] = scan_split(d)
    return out
