"""What the published archives hold: counts to verify against, where to get them, what they are called.

Counts are those of the authors' releases (Market-1501: Zheng et al., ICCV 2015, archive
Market-1501-v15.09.15.zip; DukeMTMC-reID: Zheng et al., ICCV 2017). "identities" counts real
persons only: junk (pid -1) and distractors (pid 0) are counted separately.
A value of None means "not checked" (reported only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class SplitCounts:
    images: int
    identities: int
    cameras: int  # cameras numbered 1..cameras, all of them present
    junk: int = 0
    distractors: int = 0


@dataclass(frozen=True)
class KnownDataset:
    kind: str
    display_name: str
    folder: str  # the dataset folder inside the archive
    archive: str  # the archive's usual file name
    md5: str | None  # the archive's MD5 where it is known for certain
    splits: Mapping[str, SplitCounts]  # keys as in reid.data.market.SPLIT_DIRS
    has_multi_query: bool  # gt_bbox/ present
    how_to_get: str  # shown when the archive is missing
    notes: tuple[str, ...] = field(default=())


KNOWN_SPLITS: Mapping[str, KnownDataset] = MappingProxyType(
    {
        "market1501": KnownDataset(
            kind="market1501",
            display_name="Market-1501",
            folder="Market-1501-v15.09.15",
            archive="Market-1501-v15.09.15.zip",
            md5="65005ab7d12ec1c44de4eeafe813e68a",
            splits=MappingProxyType(
                {
                    "train": SplitCounts(images=12936, identities=751, cameras=6),
                    "query": SplitCounts(images=3368, identities=750, cameras=6),
                    # 13120 images of the 750 test identities + 2793 distractors + 3819 junk
                    "gallery": SplitCounts(images=19732, identities=750, cameras=6, junk=3819, distractors=2793),
                }
            ),
            has_multi_query=True,
            how_to_get=(
                "Market-1501 is distributed by its authors (Liang Zheng et al.): see "
                "https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html (older mirror of the page: "
                "http://liangzheng.com.cn/Project/project_reid.html). Download Market-1501-v15.09.15.zip "
                "(MD5 65005ab7d12ec1c44de4eeafe813e68a); the URL baked into some toolkits is dead."
            ),
        ),
        "dukemtmcreid": KnownDataset(
            kind="dukemtmcreid",
            display_name="DukeMTMC-reID",
            folder="DukeMTMC-reID",
            archive="DukeMTMC-reID.zip",
            md5=None,  # no checksum of the original release is known for certain
            splits=MappingProxyType(
                {
                    "train": SplitCounts(images=16522, identities=702, cameras=8),
                    "query": SplitCounts(images=2228, identities=702, cameras=8),
                    # 702 test identities + 408 gallery-only distractor identities (real pids, not 0000)
                    "gallery": SplitCounts(images=17661, identities=1110, cameras=8),
                }
            ),
            has_multi_query=False,
            how_to_get=(
                "DukeMTMC-reID's official host (Duke University) has been offline since 2019, when the "
                "dataset was withdrawn; it cannot be downloaded from the authors. If you hold a copy of "
                "DukeMTMC-reID.zip obtained under its license, place it yourself (and set its md5/sha256 "
                "in config.yaml if you know them: the structure and counts are verified either way)."
            ),
        ),
    }
)


def known_dataset(kind: str) -> KnownDataset:
    """The entry for ``kind``; a clear error naming the accepted kinds otherwise."""
    try:
        return KNOWN_SPLITS[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}: expected one of {sorted(KNOWN_SPLITS)}") from None
