"""A dataset of your own, already in Market-1501 layout (``bounding_box_train/``,
``bounding_box_test/``, ``query/``, optionally ``gt_bbox/``; Market-1501 or DukeMTMC-reID names).

No counts are published for it, so only the structure, the names and the images are verified. This
is the kind of an archive or folder entry that names no ``kind``.
"""

from __future__ import annotations

from reid.data.kinds.base import DatasetKind
from reid.data.kinds.layouts import MarketLayout

KIND = DatasetKind(
    name="custom",
    display_name="a dataset in Market-1501 layout",
    layout=MarketLayout(),
    splits=None,
    has_multi_query=False,  # gt_bbox/ is used when present, never required
    how_to_get=(
        "A custom dataset is yours to provide: an archive under resources/ (`source: archive`) or a "
        "folder (`source: folder`, `path:`) holding bounding_box_train/, bounding_box_test/ and query/."
    ),
)
