"""The worked example of a training recipe defined outside the ``reid`` package (docs/extending.md,
"A training recipe"): identification only, on P x K batches, with SGD and the paper's step schedule.

It registers the recipe ``pk_softmax`` and a variant ``tiny_pk`` trained by it when imported::

    plugins: [reid_recipe_example]
    models: [tiny_pk]

A plug-in's recipe reads config ``train:`` (it cannot add a config section: the schema is the
package's); one in the package may have its own section, as ``bot`` has ``bot:``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from reid.data.transforms import TrainAugment
from reid.models.runtime import autocast
from reid.recipes import RecipeEntry, register as register_recipe
from reid.recipes.base import Plan, Setting
from reid.recipes.bot import PKDataset
from reid.variants import Variant, register as register_variant


class TinyEmbedder(nn.Module):
    """A small CNN: ``forward(x)`` gives identity logits, ``embed(x)`` the (B, D) test features."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(dim, num_classes)

    def embed(self, x):
        return self.features(x)

    def forward(self, x):
        return self.classifier(self.features(x))


def build_tiny(num_classes: int, config: dict) -> nn.Module:
    return TinyEmbedder(num_classes, config["model"]["embedding_dim"])


class PKSoftmaxPlan(Plan):
    """P x K batches (4 identities x 2 images), the identity cross-entropy, SGD with config train:'s step decay."""

    columns = ("loss_total", "loss_id", "acc_id")

    def __init__(self, model, setting: Setting):
        cfg = setting.train
        self.model, self.cfg, self.device = model, cfg, setting.device
        self.epochs, self.height, self.width = cfg.epochs, cfg.height, cfg.width
        augment = TrainAugment(setting.stats, cfg.height, cfg.width, cfg.horizontal_flip, cfg.random_erasing)
        # the strong baseline's sampler, reused: (augment(image, generator) -> tensor is all it needs)
        self.data = PKDataset(setting.records, setting.pid_to_label, augment, 4, 2, setting.seed)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)

    def begin_epoch(self, epoch):
        lr = self.cfg.lr * self.cfg.lr_gamma ** (epoch // self.cfg.lr_step)  # depends on the epoch alone
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.data.set_epoch(epoch)
        self.model.train()
        return lr, DataLoader(self.data, batch_size=8, shuffle=False, num_workers=self.cfg.workers)

    def step(self, batch):
        images, labels = (t.to(self.device) for t in batch)
        with autocast(self.device, self.cfg.precision):
            logits = self.model(images)
        loss = F.cross_entropy(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss_total": loss, "loss_id": loss, "acc_id": acc}, images.shape[0]

    def optimizer_state(self):
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state):
        self.optimizer.load_state_dict(state)


def plan(model, setting: Setting) -> PKSoftmaxPlan:
    return PKSoftmaxPlan(model, setting)


register_recipe(RecipeEntry("pk_softmax", f"{__name__}:plan", None,
                            "identification only on P x K batches, SGD with train:'s step decay"))
register_variant(Variant(name="tiny_pk", label="tiny CNN, P x K softmax", short_label="tiny P x K", colour=None,
                         attention="none", verifier=False, test_embeddings=("single",),
                         builder=f"{__name__}:build_tiny", recipe="pk_softmax"))
