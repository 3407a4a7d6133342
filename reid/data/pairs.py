"""Pair sampling for Siamese training: half positive, half negative pairs, reshuffled each epoch.

Deterministic by (seed, epoch) alone, so a resumed run draws exactly the pairs an uninterrupted
run would have drawn.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from reid.data.market import TRAIN_DIR, Record, scan_split
from reid.data.transforms import TrainAugment, load_image


# How a positive partner is drawn (config train.positive_pairs; docs/model.md, "Readings"). The paper:
# "Positive and negative pairs were randomly chosen" (section 5.1).
#   cross_camera - another image of the identity from another camera where one exists (the default)
#   random       - any other image of the identity, whatever its camera
POSITIVE_PAIRS = ("cross_camera", "random")


def sample_pairs(pids: Sequence[int], camids: Sequence[int], seed: int, epoch: int,
                 positive: str = "cross_camera") -> np.ndarray:
    """One epoch of pairs: an array (n, 3) of (index_a, index_b, same) with n = len(pids).

    Every image is the first member of exactly one pair. Even positions of the shuffled anchors
    get a positive partner (same identity, never the image itself; with ``positive``
    "cross_camera" from a different camera where one exists, with "random" any of them), odd
    positions a negative (a different identity). Identities with a single image only ever get
    negative partners. Both readings draw the anchors' order first, from the same generator;
    "cross_camera" draws exactly as this function always did.
    """
    if positive not in POSITIVE_PAIRS:
        raise ValueError(f"train.positive_pairs {positive!r} is unknown; choose one of {', '.join(POSITIVE_PAIRS)}")
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
            cross = others[camids[others] != camids[a]] if positive == "cross_camera" else others
            pool = cross if len(cross) else others
            b = int(pool[rng.integers(len(pool))])
        else:
            while True:
                b = int(rng.integers(n))
                if pids[b] != pids[a]:
                    break
        pairs[pos] = (a, b, int(want_positive))
    return pairs


def training_records(data_root: str | Path) -> tuple[list[Record], dict[int, int]]:
    """The training split and the map from pid to class index (junk and distractors excluded)."""
    records = [r for r in scan_split(Path(data_root) / TRAIN_DIR) if r.pid > 0]
    if not records:
        raise ValueError(f"{data_root}/{TRAIN_DIR}: no training images with a positive pid")
    pid_to_label = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return records, pid_to_label


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class PairDataset(Dataset):
    """The pairs of one epoch; item i is (image_a, image_b, label_a, label_b, same)."""

    def __init__(self, records, pid_to_label, augment: TrainAugment, seed: int, positive: str = "cross_camera"):
        self.records, self.augment, self.seed, self.positive = records, augment, seed, positive
        self.labels = torch.tensor([pid_to_label[r.pid] for r in records])
        self.pids = [r.pid for r in records]
        self.camids = [r.camid for r in records]
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.pairs = sample_pairs(self.pids, self.camids, self.seed, epoch, self.positive)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):
        a, b, same = (int(v) for v in self.pairs[i])
        gen = torch.Generator().manual_seed(_sample_seed(self.seed, self.epoch, i))
        xa = self.augment(load_image(self.records[a].path), gen)
        xb = self.augment(load_image(self.records[b].path), gen)
        return xa, xb, self.labels[a], self.labels[b], same
