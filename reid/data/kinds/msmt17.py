"""MSMT17 (Wei, Zhang, Gao, Tian, "Person Transfer GAN to Bridge Domain Gap for Person
Re-Identification", CVPR 2018; http://www.pkuvmc.com/publications/msmt17.html).

Published counts (the CVPR 2018 paper, Sec. 3): 126,441 images of 4,101 identities from 15 cameras
(12 outdoor, 3 indoor); training set 32,621 images of 1,041 identities; test set 3,060 identities,
of which 11,659 images are queries and 82,161 the gallery. No junk, no distractors, no multi-query.

Native layout (read from the reference loaders for facts: torchreid
``torchreid/data/datasets/image/msmt17.py`` and fast-reid ``fastreid/data/datasets/msmt17.py``)::

    MSMT17_V1/                         MSMT17_V2/ (faces blurred; only the folder names differ)
      train/0000/0000_000_01_0303morning_0015_0.jpg      mask_train_v2/0000/...
      test/0000/...                                        mask_test_v2/0000/...
      list_train.txt  list_val.txt  list_query.txt  list_gallery.txt

Each list line is ``<identity folder>/<file name> <label>``, relative to the train folder
(list_train, list_val) or the test folder (list_query, list_gallery). list_train.txt and
list_val.txt together are the 32,621 training images (the official "train" of the paper; val is a
held-out part of it that the benchmark trains on). Labels start at 0 in the training lists and again
at 0 in the test lists. The camera is the third ``_`` field of the file name (``01``..``15``).

Laid out as Market-1501: training label L becomes pid L+1, test label L becomes pid L+1+T where T
is the number of training labels (so train and test identities never share a pid, and no pid is 0,
Market-1501's distractor pid); names are ``PPPP_cCCs0_NNNNNN_00.jpg`` (see
``reid.data.kinds.layouts.place_renamed``; ``original_names.tsv`` maps back).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from reid.data.kinds.base import DatasetKind, DatasetLayoutError, SplitCounts, Transfer
from reid.data.kinds.layouts import NativeImage, find_folder, list_lines, place_renamed

# (train folder, test folder) of each release version
VERSIONS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
LISTS = {"list_train.txt": "train", "list_val.txt": "train", "list_query.txt": "query", "list_gallery.txt": "gallery"}


def _version(folder: Path) -> str | None:
    if not all((folder / name).is_file() for name in LISTS):
        return None
    for version, (train, test) in VERSIONS.items():
        if (folder / train).is_dir() and (folder / test).is_dir():
            return version
    return None


def _read_list(path: Path) -> list[tuple[str, int, int, int]]:
    """(relative path, label, camera, line number) of each line of a list file, read as people save
    them (reid.data.kinds.layouts.list_lines: a byte-order mark, CRLF or CR line ends). A line that is
    not ``<identity>/<file> <label>`` is refused with the file, its line number and its repr (every
    invisible character shown)."""
    entries = []
    for number, line in list_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        try:
            rel, label = parts[0], int(parts[1])
            camera = int(Path(rel).name.split("_")[2])
            if len(parts) != 2 or label < 0 or not rel.isprintable():
                raise ValueError
        except (ValueError, IndexError):
            raise DatasetLayoutError(
                f"{path}, line {number}: expected '<identity>/<pid>_<index>_<camera>_<...>.jpg <label>', got {line!r}"
            ) from None
        entries.append((rel, label, camera, number))
    return entries


class MSMT17Layout:
    def find(self, root: Path, label: str, expected_name: str | None) -> Path:
        return find_folder(root, lambda d: _version(d) is not None,
                           "list_train.txt, list_val.txt, list_query.txt, list_gallery.txt and train/ + test/ "
                           "(MSMT17_V1) or mask_train_v2/ + mask_test_v2/ (MSMT17_V2)", label, expected_name)

    def lay_out(self, folder: Path, staged: Path, transfer: Transfer) -> dict:
        version = _version(folder)
        train_dir, test_dir = VERSIONS[version]
        lists = {name: _read_list(folder / name) for name in LISTS}
        train_labels = {label for name in ("list_train.txt", "list_val.txt") for _, label, _, _ in lists[name]}
        offset = max(train_labels, default=-1) + 1
        images, seen = [], {}
        for name, split in LISTS.items():
            base = train_dir if split == "train" else test_dir
            for rel, label, camera, number in lists[name]:
                original = f"{base}/{rel}"
                if original in seen:
                    raise DatasetLayoutError(f"{folder / name}, line {number}: {original!r} is also listed in "
                                             f"{seen[original]}")
                seen[original] = name
                source = folder / base / rel
                if not source.is_file():
                    raise DatasetLayoutError(f"{folder / name}, line {number}: lists {original!r}, which is not "
                                             "in the release")
                pid = label + 1 + (0 if split == "train" else offset)
                images.append(NativeImage(source, original, split, pid, camera))
        unlisted = sorted(  # reported: the release lists every image it holds
            p.relative_to(folder).as_posix() for base in (train_dir, test_dir) for p in (folder / base).rglob("*")
            if p.is_file() and p.relative_to(folder).as_posix() not in seen
        )
        info = place_renamed(images, staged, transfer)
        return {"version": version, "train_folders": [train_dir], "test_folder": test_dir,
                "images_per_list": {name: len(entries) for name, entries in lists.items()},
                "test_pid_offset": offset, "unlisted_files": unlisted[:50], "unlisted_count": len(unlisted), **info}


KIND = DatasetKind(
    name="msmt17",
    display_name="MSMT17",
    layout=MSMT17Layout(),
    folder="MSMT17_V1 or MSMT17_V2",
    splits=MappingProxyType(
        {
            "train": SplitCounts(images=32621, identities=1041, cameras=None),
            # the paper gives the test identities (3,060) for query and gallery together, and the
            # cameras (15) for the whole dataset: checked as totals below
            "query": SplitCounts(images=11659, identities=None, cameras=None),
            "gallery": SplitCounts(images=82161, identities=None, cameras=None),
        }
    ),
    total_identities=4101,
    total_cameras=15,
    has_multi_query=False,
    how_to_get=(
        "MSMT17 is released by its authors on request (Wei et al., CVPR 2018): see "
        "http://www.pkuvmc.com/publications/msmt17.html and sign its release agreement. Place the "
        "archive you receive (holding MSMT17_V1/ or MSMT17_V2/) under resources/, or point a "
        "`source: folder` entry at the extracted folder."
    ),
)
