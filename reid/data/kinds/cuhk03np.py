"""CUHK03 in the new protocol, "CUHK03-NP" (images: Li, Zhao, Xiao, Wang, "DeepReID: Deep Filter
Pairing Neural Network for Person Re-identification", CVPR 2014; protocol: Zhong, Zheng, Cao, Li,
"Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017,
https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP).

The new protocol splits CUHK03's 1,467 identities like Market-1501: 767 for training, 700 for
testing; for each test identity one image per camera is a query, the rest are the gallery. Two
versions of the same split, registered as two kinds (their counts differ, from the page above):

=================  ========  =====  =======
kind               train     query  gallery
=================  ========  =====  =======
cuhk03np_labeled   7,368     1,400  5,328   (boxes drawn by hand)
cuhk03np_detected  7,365     1,400  5,332   (boxes found by the DPM detector)
=================  ========  =====  =======

Native layout: the widely distributed ``cuhk03-np`` folder (the archive linked from that page), as
read by the reference loaders (for facts: reid-strong-baseline / fast-reid style ``cuhk03np`` loaders
reading ``cuhk03-np/{labeled,detected}/{bounding_box_train,query,bounding_box_test}/*.png`` with the
pid and camera from ``<pid>_c<camera>_<index>.png``, cameras 1 and 2, i.e. the two views of a camera
pair)::

    cuhk03-np/labeled/bounding_box_train/0001_c1_1.png    cuhk03-np/detected/...
                      bounding_box_test/  query/

Already Market-1501's folders, but not its names: images are renamed to ``PPPP_cCs0_NNNNNN_00.png``
(pid and camera kept, PNG kept: re-encoding would change the pixels; ``original_names.tsv`` maps
back). No junk, no distractors, no multi-query.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

from reid.data import market
from reid.data.kinds.base import DatasetKind, DatasetLayoutError, SplitCounts, Transfer
from reid.data.kinds.layouts import NativeImage, find_folder, place_renamed

# pid and camera lead the name, as the reference loaders read them (r"([-\d]+)_c(\d)"); whatever
# follows (the image's index) is not needed: the layout numbers each identity's images itself
_NAME = re.compile(r"^(?P<pid>\d+)_c(?P<cam>[12])(?:_[^/]*)?\.png$", re.IGNORECASE)
_CLUTTER = {"thumbs.db", ".ds_store", "desktop.ini"}  # OS files that some copies carry


def _splits_in(folder: Path) -> bool:
    return all((folder / market.SPLIT_DIRS[s]).is_dir() for s in market.REQUIRED_SPLITS)


class CUHK03NPLayout:
    def __init__(self, subset: str):
        self.subset = subset  # labeled | detected

    def find(self, root: Path, label: str, expected_name: str | None) -> Path:
        return find_folder(root, lambda d: _splits_in(d / self.subset),
                           f"{self.subset}/ with bounding_box_train/, bounding_box_test/, query/", label, expected_name)

    def lay_out(self, folder: Path, staged: Path, transfer: Transfer) -> dict:
        source = folder / self.subset
        images, bad, skipped = [], [], []
        for split in market.REQUIRED_SPLITS:
            sub = market.SPLIT_DIRS[split]
            for p in sorted((source / sub).iterdir()):
                rel = f"{self.subset}/{sub}/{p.name}"
                if p.name.lower() in _CLUTTER:
                    skipped.append(rel)
                    continue
                m = _NAME.match(p.name) if p.is_file() else None
                if not m:
                    bad.append(rel)
                    continue
                images.append(NativeImage(p, rel, split, int(m["pid"]), int(m["cam"])))
        if bad:
            raise DatasetLayoutError(
                f"{source}: {len(bad)} entries are not CUHK03-NP images named '<pid>_c<1|2>_<index>.png': {bad[:10]}")
        info = place_renamed(images, staged, transfer)
        return {"subset": self.subset, "skipped_os_files": skipped, **info}


def _kind(subset: str, train: int, gallery: int) -> DatasetKind:
    return DatasetKind(
        name=f"cuhk03np_{subset}",
        display_name=f"CUHK03-NP ({subset})",
        layout=CUHK03NPLayout(subset),
        folder="cuhk03-np",
        splits=MappingProxyType(
            {
                "train": SplitCounts(images=train, identities=767, cameras=2),
                "query": SplitCounts(images=1400, identities=700, cameras=2),
                "gallery": SplitCounts(images=gallery, identities=700, cameras=2),
            }
        ),
        total_identities=1467,
        has_multi_query=False,
        how_to_get=(
            "CUHK03-NP is linked from https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP "
            "(CUHK03's terms of use apply: http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html). "
            "Place the archive holding cuhk03-np/labeled/ and cuhk03-np/detected/ under resources/, or point "
            "a `source: folder` entry at the extracted cuhk03-np/ folder."
        ),
    )


KINDS = (_kind("labeled", 7368, 5328), _kind("detected", 7365, 5332))
