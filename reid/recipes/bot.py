"""The strong baseline's training recipe ("bag of tricks", Luo et al., CVPR workshops 2019).

Every element of the published configuration (the paper, sections 3-4, and the released
reid-strong-baseline's ``configs/softmax_triplet_with_center.yml``), each a key of config ``bot:``
(reid.typed_config.BotConfig, defaults = the published values):

* batches of P identities x K images (``identities_per_batch`` 16, ``images_per_identity`` 4):
  ``pk_batches``;
* augmentation (``BotAugment``): resize to ``height`` x ``width`` (256 x 128), horizontal flip
  (``horizontal_flip`` 0.5), ``padding`` 10 pixels + a random crop back to the input size, random
  erasing (``random_erasing`` 0.5);
* losses on the BNNeck model (reid.models.bot): the identity cross-entropy with label smoothing
  (``label_smoothing`` 0.1) on the classifier after the BNNeck, the batch-hard triplet loss
  (``triplet_margin`` 0.3, Euclidean distances) on the feature before it, and the center loss
  (``center_loss_weight`` 0.0005, the row reporting 94.5 / 85.9; 0 turns it off) on the same feature,
  its centers updated by SGD at ``center_lr`` 0.5 with the gradient divided by the weight, as released;
* Adam (``lr`` 3.5e-4, ``weight_decay`` 5e-4), a linear warm-up over ``warmup_epochs`` 10 from
  ``warmup_factor`` 0.01 x lr, x ``lr_gamma`` 0.1 at ``lr_milestones`` [40, 70], ``epochs`` 120
  (``lr_at``).

Randomness comes from (seed, epoch) for the batches and (seed, epoch, position) for each image's
augmentation, as the paper's recipe's; the learning rate from the epoch index alone; so a resumed run
is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from reid.data.pairs import _sample_seed
from reid.data.transforms import Normalizer, load_image, random_erase, resize
from reid.models.runtime import autocast
from reid.recipes.base import Plan, Setting

COLUMNS = ("loss_total", "loss_id", "loss_triplet", "loss_center", "acc_id")


# ---------------------------------------------------------------- sampling

def pk_batches(labels: Sequence[int], p: int, k: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch of P x K batches: lists of ``p * k`` indices into ``labels``, ``k`` of each of ``p``
    different identities.

    As the released RandomIdentitySampler: each identity's images are shuffled and cut into groups of
    ``k`` (the last, incomplete group dropped); an identity with fewer than ``k`` images gets one group of
    ``k`` drawn from them with replacement (so its images repeat within the batch). Batches are then
    formed by choosing ``p`` identities at random among those with a group left, until fewer than
    ``p`` remain (their groups are not used this epoch). Deterministic by (seed, epoch). Raises
    ValueError when there are fewer than ``p`` identities.
    """
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[int(label)].append(i)
    if len(by_label) < p:
        raise ValueError(f"bot.identities_per_batch is {p} but the training split has {len(by_label)} identities")
    rng = np.random.default_rng([seed, epoch, 1])  # 1: not the stream of the pairs' (seed, epoch)
    groups: dict[int, list[list[int]]] = {}
    for label in sorted(by_label):
        idx = np.asarray(by_label[label])
        idx = rng.choice(idx, size=k, replace=True) if len(idx) < k else rng.permutation(idx)
        groups[label] = [idx[j:j + k].tolist() for j in range(0, len(idx) - k + 1, k)]
    available = sorted(groups)
    batches = []
    while len(available) >= p:
        chosen = rng.choice(len(available), size=p, replace=False)
        batch: list[int] = []
        for j in chosen:
            batch.extend(groups[available[j]].pop(0))
        batches.append(batch)
        available = [label for label in available if groups[label]]
    return batches


# ---------------------------------------------------------------- augmentation

class BotAugment:
    """Resize, flip, pad and randomly crop, normalise (the training mean image), erase; draws from ``gen``.

    The padding is zeros (black) on the [0, 1] image, as torchvision's Pad before the released code's
    normalisation. Erasing is the project's ``random_erase`` (to the mean image, 0 after normalisation);
    the released RandomErasing writes the ImageNet mean's raw values into the normalised image and
    draws the aspect ratio linearly (docs/model.md, "The strong baseline": a departure in detail).
    """

    def __init__(self, stats: Mapping, height: int, width: int, flip: float, padding: int, erasing: float):
        self.height, self.width = height, width
        self.norm = Normalizer(stats, height, width)
        self.flip, self.padding, self.erasing = flip, padding, erasing

    def __call__(self, img: Tensor, gen: torch.Generator) -> Tensor:
        x = resize(img, self.height, self.width)
        if self.flip > 0 and torch.rand((), generator=gen).item() < self.flip:
            x = x.flip(-1)
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
            top = int(torch.randint(0, 2 * self.padding + 1, (), generator=gen))
            left = int(torch.randint(0, 2 * self.padding + 1, (), generator=gen))
            x = x[:, top:top + self.height, left:left + self.width]
        return random_erase(self.norm(x), gen, self.erasing)


class PKDataset(Dataset):
    """The images of one epoch in batch order; item i is (image, label)."""

    def __init__(self, records, pid_to_label, augment: BotAugment, p: int, k: int, seed: int):
        self.records, self.augment, self.p, self.k, self.seed = records, augment, p, k, seed
        self.labels = torch.tensor([pid_to_label[r.pid] for r in records])
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches = pk_batches(self.labels.tolist(), self.p, self.k, self.seed, epoch)
        self.order = [i for batch in self.batches for i in batch]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int):
        gen = torch.Generator().manual_seed(_sample_seed(self.seed, self.epoch, position))
        i = self.order[position]
        return self.augment(load_image(self.records[i].path), gen), self.labels[i]


# ---------------------------------------------------------------- losses

def euclidean_distances(x: Tensor) -> Tensor:
    """(B, B) Euclidean distances of the rows of ``x`` (B, D), as the released code computes them:
    sqrt(max(|a|^2 + |b|^2 - 2 a.b, 1e-12)) (the floor keeps the gradient finite at 0)."""
    sq = x.pow(2).sum(dim=1, keepdim=True)
    return (sq + sq.t() - 2 * x @ x.t()).clamp(min=1e-12).sqrt()


def batch_hard_triplet_loss(features: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017, "In Defense of the Triplet Loss"; Luo et al. eq. 2):
    the mean over anchors a of max(0, max_p d(a, p) - min_n d(a, n) + margin), p over the other
    images of a's identity (the anchor itself included, at distance ~0, as released), n over the
    other identities. ``features`` (B, D) float, ``labels`` (B,) int; a scalar tensor."""
    dist = euclidean_distances(features.float())
    same = labels.view(-1, 1) == labels.view(1, -1)
    hardest_positive = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    hardest_negative = dist.masked_fill(same, float("inf")).min(dim=1).values
    return F.relu(hardest_positive - hardest_negative + margin).mean()


class CenterLoss(nn.Module):
    """Center loss (Wen et al., ECCV 2016; Luo et al. eq. 3 with the 1/2 left out, as released): the mean
    over the batch of |f_i - c_{y_i}|^2, clamped to [1e-12, 1e12]; centers start standard normal."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        diff = features.float() - self.centers[labels]
        return diff.pow(2).sum(dim=1).clamp(min=1e-12, max=1e12).mean()


# ---------------------------------------------------------------- schedule

def lr_at(epoch: int, cfg) -> float:
    """The learning rate of epoch ``epoch`` (0-based): ``lr x warm-up x lr_gamma^(milestones passed)``.

    The released code steps its WarmupMultiStepLR at the start of every epoch, so epoch e trains at the
    scheduler's index t = e + 1: warm-up factor ``warmup_factor (1 - t/w) + t/w`` while t < w =
    ``warmup_epochs`` (1 from epoch w - 1 on), and x ``lr_gamma`` for each milestone <= t (the
    published "x0.1 at epochs 40 and 70", counted from 1).
    """
    t = epoch + 1
    warm = 1.0
    if t < cfg.warmup_epochs:
        alpha = t / cfg.warmup_epochs
        warm = cfg.warmup_factor * (1 - alpha) + alpha
    return cfg.lr * warm * cfg.lr_gamma ** bisect_right(list(cfg.lr_milestones), t)


# ---------------------------------------------------------------- the plan

class BotPlan(Plan):
    columns = COLUMNS

    def __init__(self, model, setting: Setting):
        cfg = setting.recipe
        self.model, self.cfg, self.device, self.precision = model, cfg, setting.device, setting.train.precision
        self.workers = setting.train.workers
        self.epochs, self.height, self.width = cfg.epochs, cfg.height, cfg.width
        augment = BotAugment(setting.stats, cfg.height, cfg.width, cfg.horizontal_flip, cfg.padding,
                             cfg.random_erasing)
        self.data = PKDataset(setting.records, setting.pid_to_label, augment, cfg.identities_per_batch,
                              cfg.images_per_identity, setting.seed)
        params = [p for p in model.parameters() if p.requires_grad]  # the BNNeck's frozen shift left out
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.center = None
        if cfg.center_loss_weight > 0:
            self.center = CenterLoss(setting.num_classes, model.feature_dim).to(setting.device)
            self.center_optimizer = torch.optim.SGD(self.center.parameters(), lr=cfg.center_lr)

    def begin_epoch(self, epoch: int) -> tuple[float, Iterable]:
        lr = lr_at(epoch, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.data.set_epoch(epoch)
        batch = self.cfg.identities_per_batch * self.cfg.images_per_identity
        loader = DataLoader(self.data, batch_size=batch, shuffle=False, drop_last=False, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        self.model.train()
        return lr, loader

    def step(self, batch) -> tuple[Mapping[str, Tensor], int]:
        images, labels = batch
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device)
        cfg = self.cfg
        with autocast(self.device, self.precision):
            out = self.model(images)
        logits, feature = out["logits"].float(), out["feature"].float()
        id_loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
        triplet = batch_hard_triplet_loss(feature, labels, cfg.triplet_margin)
        center = self.center(feature, labels) if self.center is not None else id_loss.new_zeros(())
        total = id_loss + triplet + cfg.center_loss_weight * center
        self.optimizer.zero_grad(set_to_none=True)
        if self.center is not None:
            self.center_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if self.center is not None:
            # the centers learn at center_lr whatever the loss weight (the released trainer)
            for p in self.center.parameters():
                p.grad.mul_(1.0 / cfg.center_loss_weight)
            self.center_optimizer.step()
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss_total": total, "loss_id": id_loss, "loss_triplet": triplet, "loss_center": center,
                "acc_id": acc}, images.shape[0]

    def optimizer_state(self) -> dict:
        state = {"adam": self.optimizer.state_dict()}
        if self.center is not None:
            state["centers"] = self.center.state_dict()
            state["center_sgd"] = self.center_optimizer.state_dict()
        return state

    def load_optimizer_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["adam"])
        if self.center is not None:
            self.center.load_state_dict(state["centers"])
            self.center_optimizer.load_state_dict(state["center_sgd"])


def plan(model, setting: Setting) -> BotPlan:
    """The strong baseline's recipe for ``model`` (reid.models.bot.BotModel); ``setting.recipe`` is config
    ``bot:`` (reid.typed_config.BotConfig)."""
    if setting.recipe is None:
        raise ValueError("training recipe 'bot' needs config section 'bot'")
    return BotPlan(model, setting)
