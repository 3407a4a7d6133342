"""Pair sampling for Siamese training: half positive, half negative pairs, reshuffled each epoch.

Deterministic by (seed, epoch) alone, so a resumed run draws exactly the pairs an uninterrupted
run would have drawn.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np


def sample_pairs(pids: Sequence[int], camids: Sequence[int], seed: int, epoch: int) -> np.ndarray:
    """One epoch of pairs: an array (n, 3) of (index_a, index_b, same) with n = len(pids).

    Every image is the first member of exactly one pair. Even positions of the shuffled anchors
    get a positive partner (same identity, a different camera where one exists, never the image
    itself), odd positions a negative (a different identity). Identities with a single image only
    ever get negative partners.
    """
    pids = np.asarray(pids)
    camids = np.asarray(camids)
    n = len(pids)
    if n < 2 or len(np.unique(pids)) < 2:
        raise ValueError("pair sampling needs at least two identities")
    rng = np.random.default_rng([seed, epoch])
    by_pid: dict[int, np.ndarray] = defaultdict(list)
    for i, p in enumerate(pids):
        by_pid[int(p)].append(i)
    by_pid = {p: np.asarray(ix) for p, ix in by_pid.items()}

    anchors = rng.permutation(n)
    pairs = np.empty((n, 3), dtype=np.int64)
    for pos, a in enumerate(anchors):
        same_pid = by_pid[int(pids[a])]
        want_positive = pos % 2 == 0 and len(same_pid) > 1
        if want_positive:
            others = same_pid[same_pid != a]
            cross = others[camids[others] != camids[a]]
            pool = cross if len(cross) else others
            b = int(pool[rng.integers(len(pool))])
        else:
            while True:
                b = int(rng.integers(n))
                if pids[b] != pids[a]:
                    break
        pairs[pos] = (a, b, int(want_positive))
    return pairs
