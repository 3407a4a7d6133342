"""The paper's training recipe: Siamese pairs, identification + verification losses, SGD with a step decay.

Jamal et al. (Symmetry 2020), section 3: each batch holds pairs of images, half of the same identity
(reid.data.pairs, reshuffled each epoch from (seed, epoch)); the loss is the identification
cross-entropy of both images plus ``train.verification_weight`` x the same/different cross-entropy
(reid.models.losses.pair_loss); SGD with momentum, the learning rate x ``train.lr_gamma`` every
``train.lr_step`` epochs. Augmentation: mean-image normalisation, horizontal flip and random erasing
(reid.data.transforms.TrainAugment). Every key is config ``train:``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch.utils.data import DataLoader

from reid.data.pairs import PairDataset
from reid.data.transforms import training_augment
from reid.models.losses import pair_loss
from reid.models.runtime import autocast
from reid import schedules
from reid.recipes.base import Plan, Setting
from reid.typed_config import TrainConfig

COLUMNS = ("loss_total", "loss_id", "loss_verif", "acc_id", "acc_verif")


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """The learning rate of ``epoch`` (counted from 0): config ``train.lr_decay``'s schedule
    (reid.schedules: ``step``, lr x lr_gamma^(epoch // lr_step), the default; or ``gradual``)."""
    return schedules.learning_rate(epoch, cfg.as_dict())


class SiamesePlan(Plan):
    columns = COLUMNS
    probe_paths = ("train", "embed", "export")  # the pair forward and losses too (reid.models.probe)

    def __init__(self, model, setting: Setting):
        cfg = setting.train
        self.model, self.cfg, self.device = model, cfg, setting.device
        self.epochs, self.height, self.width = cfg.epochs, cfg.height, cfg.width
        # train.input_norm / mean_image_size choose the normalisation (model.pt keeps it for extraction)
        augment, self.normalisation = training_augment(setting.mean_image, [r.path for r in setting.records],
                                                       cfg.as_dict())
        self.data = PairDataset(setting.records, setting.pid_to_label, augment, setting.seed, cfg.positive_pairs)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.check = None
        if setting.custom_entry is not None:  # a model the package does not define: its outputs are checked
            from reid.models.custom import check_pair_output

            classes, entry = setting.num_classes, setting.custom_entry
            self.check = lambda out, batch: check_pair_output(out, batch, classes, entry)

    def begin_epoch(self, epoch: int) -> tuple[float, Iterable]:
        lr = lr_at(epoch, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.data.set_epoch(epoch)
        size = self.cfg.batch_pairs
        loader = DataLoader(self.data, batch_size=size, shuffle=False, drop_last=len(self.data) > size,
                            num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        self.model.train()
        return lr, loader

    def step(self, batch) -> tuple[Mapping[str, torch.Tensor], int]:
        xa, xb, la, lb, same = batch
        device = self.device
        xa, xb = xa.to(device, non_blocking=True), xb.to(device, non_blocking=True)
        la, lb, same = la.to(device), lb.to(device), same.to(device)
        xa = xa.contiguous(memory_format=torch.channels_last)
        xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, self.cfg.precision):
            out = self.model(xa, xb)
            if self.check is not None:
                self.check(out, xa.shape[0])
            losses = pair_loss(out, la, lb, same, verification_weight=self.cfg.verification_weight)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        return {"loss_total": losses["total"], "loss_id": losses["id"], "loss_verif": losses["verif"],
                "acc_id": losses["id_acc"], "acc_verif": losses["verif_acc"]}, 2 * xa.shape[0]

    def optimizer_state(self) -> dict:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def plan(model, setting: Setting) -> SiamesePlan:
    """The paper's recipe for ``model`` (a variant whose ``forward(x1, x2)`` returns pair outputs)."""
    return SiamesePlan(model, setting)
