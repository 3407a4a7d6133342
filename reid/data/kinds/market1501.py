"""Market-1501 (Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015).

Native layout is the pipeline's layout: ``Market-1501-v15.09.15/`` with ``bounding_box_train/``,
``bounding_box_test/``, ``query/``, ``gt_bbox/`` (multi-query) and ``gt_query/`` (not used), images
named ``PPPP_cCsS_FFFFFF_BB.jpg``. Counts of the authors' release Market-1501-v15.09.15.zip (the
paper's Table 1 and the archive itself): 12,936 training images of 751 identities; 3,368 queries of
750 identities; a gallery of 19,732 images (13,120 of the 750 test identities, 2,793 distractors with
pid 0000 and 3,819 junk images with pid -1); 6 cameras. Project page:
https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html
"""

from __future__ import annotations

from types import MappingProxyType

from reid.data.kinds.base import DatasetKind, SplitCounts
from reid.data.kinds.layouts import MarketLayout

KIND = DatasetKind(
    name="market1501",
    display_name="Market-1501",
    layout=MarketLayout(),
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
    paper_key="market1501",
    how_to_get=(
        "Market-1501 is distributed by its authors (Liang Zheng et al.): see "
        "https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html (older mirror of the page: "
        "http://liangzheng.com.cn/Project/project_reid.html). Download Market-1501-v15.09.15.zip "
        "(MD5 65005ab7d12ec1c44de4eeafe813e68a); the URL baked into some toolkits is dead. If you "
        "already hold the extracted folder, use `source: folder` with its `path` instead."
    ),
)
