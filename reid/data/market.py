"""The Market-1501 / DukeMTMC-reID file naming and folder layout: the one place that knows them.

Market-1501:    ``0002_c1s1_000451_03.jpg``  pid, camera, sequence, frame, bounding box
DukeMTMC-reID:  ``0001_c2_f0046182.jpg``     pid, camera, frame
pid ``-1`` marks junk images (ignored by evaluation), pid ``0`` distractors (counted as negatives).
Cameras take one or two digits (MSMT17 has 15, laid out as ``c1``..``c15``); CUHK03-NP keeps its PNG
images, so ``.png`` is read beside ``.jpg``.
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
IMAGE_SUFFIXES = (".jpg", ".png")  # what the published datasets ship; other kinds are laid out into these

JUNK_PID = -1
DISTRACTOR_PID = 0

_MARKET = re.compile(r"^(?P<pid>-1|\d{4})_c(?P<cam>\d{1,2})s(?P<seq>\d)_(?P<frame>\d{6})_(?P<bbox>\d{2})$")
_DUKE = re.compile(r"^(?P<pid>-1|\d{4})_c(?P<cam>\d{1,2})_f(?P<frame>\d{7})$")


class NamingError(ValueError):
    """A file name that follows neither the Market-1501 nor the DukeMTMC-reID convention."""


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
    """Parse a Market-1501 or DukeMTMC-reID image name; raise NamingError naming the file."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise NamingError(f"{path}: not a {' or '.join(IMAGE_SUFFIXES)} image name")
    stem = path.stem
    m = _MARKET.match(stem)
    if m:
        seq, bbox = int(m["seq"]), int(m["bbox"])
    else:
        m = _DUKE.match(stem)
        if not m:
            raise NamingError(
                f"{path}: malformed re-ID image name (expected Market-1501 'PPPP_cCsS_FFFFFF_BB.jpg' "
                f"or DukeMTMC-reID 'PPPP_cC_fFFFFFFF.jpg', pid -1 for junk)"
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


def scan_split(folder: str | Path) -> list[Record]:
    """All images of one split folder, sorted by name. Non-image files (e.g. Thumbs.db) are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: split folder missing")
    records = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        name = parse_name(p)
        records.append(Record(path=str(p), pid=name.pid, camid=name.camid))
    return records


def scan_dataset(root: str | Path) -> dict[str, list[Record]]:
    """The splits of a dataset in Market-1501 layout; ``multi_query`` only where ``gt_bbox/`` exists."""
    root = Path(root)
    out = {}
    for split, sub in SPLIT_DIRS.items():
        d = root / sub
        if split in REQUIRED_SPLITS or d.is_dir():
            out[split] = scan_split(d)
    return out
