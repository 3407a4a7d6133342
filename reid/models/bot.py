"""The strong baseline's model (Luo et al., "Bag of Tricks and A Strong Baseline for Deep Person
Re-identification", CVPR workshops 2019; released as reid-strong-baseline, reproduced by fast-reid
as BoT(R50)): a ResNet with last stride 1, global average pooling and a BNNeck.

BNNeck (the paper's section 4.6): the pooled feature f_t (B, C) feeds the triplet (and center) loss;
a batch norm without shift (its bias is frozen at 0) turns it into f_i, which feeds a bias-free
linear identity classifier; test images are embedded by f_i (config ``bot.neck_feat: after``; the
paper reports f_i slightly better than f_t). ``bot.neck: none`` drops the batch norm (the
"standard baseline"): the classifier (with a bias) sits on f_t and tests use f_t.

Last stride (section 4.5): the stride of layer4's first block set to 1, so a 256 x 128 image gives a
16 x 8 feature map instead of 8 x 4 (``bot.last_stride``: 1 or the backbone's 2).

``build(num_classes, config)`` is the builder of variant ``bot`` (reid.variants); ``config`` holds the
``model`` section (its ``backbone``, ``pretrained``, ``pretrained_sha256``) and the ``bot`` section.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from reid.models.backbone import build_resnet, run_stage, run_stem, stage_channels
from reid.models.pretrained import load_pretrained_backbone

NECKS = ("bnneck", "none")
NECK_FEATS = ("after", "before")


def set_last_stride(net: nn.Module, stride: int) -> None:
    """Set the stride of layer4's first block (its 3 x 3 convolution and its downsampling shortcut)
    in place: torchvision's Bottleneck strides ``conv2``, its BasicBlock ``conv1``."""
    block = net.layer4[0]
    conv = block.conv2 if hasattr(block, "conv3") else block.conv1
    conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


class BotModel(nn.Module):
    """ResNet (last stride ``last_stride``) -> GAP -> f_t -> [BNNeck] -> f_i -> bias-free classifier.

    ``forward(x)`` (B, 3, H, W) returns ``{"logits": (B, num_classes), "feature": f_t (B, C)}``
    (C = 2048 for ResNet-50, 512 for ResNet-18/34); ``embed(x)`` the (B, C) test features, f_i or
    f_t by ``neck_feat``, in eval mode (the batch norm's running statistics).
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", last_stride: int = 1,
                 neck: str = "bnneck", neck_feat: str = "after"):
        super().__init__()
        if neck not in NECKS:
            raise ValueError(f"bot.neck: {neck!r} is unknown; choose one of {', '.join(NECKS)}")
        if neck_feat not in NECK_FEATS:
            raise ValueError(f"bot.neck_feat: {neck_feat!r} is unknown; choose one of {', '.join(NECK_FEATS)}")
        if last_stride not in (1, 2):
            raise ValueError(f"bot.last_stride must be 1 or 2, got {last_stride!r}")
        self.neck, self.neck_feat = neck, neck_feat
        self.backbone = build_resnet(backbone)
        set_last_stride(self.backbone, last_stride)
        channels = stage_channels(backbone, 4)
        self.feature_dim = channels
        if neck == "bnneck":
            self.bottleneck = nn.BatchNorm1d(channels)
            self.bottleneck.bias.requires_grad_(False)  # no shift (Luo et al., Fig. 5)
            nn.init.ones_(self.bottleneck.weight)
            nn.init.zeros_(self.bottleneck.bias)
            self.classifier = nn.Linear(channels, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)
        else:
            self.bottleneck = None
            self.classifier = nn.Linear(channels, num_classes)  # torch's default initialisation, as released

    def pooled(self, x: Tensor) -> Tensor:
        """f_t: the globally average-pooled layer4 feature (B, C), in the current mode."""
        f = run_stem(self.backbone, x)
        for stage in (1, 2, 3, 4):
            f = run_stage(self.backbone, stage, f)
        return torch.flatten(self.backbone.avgpool(f), 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feature = self.pooled(x)
        neck = feature if self.bottleneck is None else self.bottleneck(feature)
        return {"logits": self.classifier(neck), "feature": feature}

    def activation_maps(self, x: Tensor, partner: Tensor | None = None, stage: int = 4) -> Tensor:
        """(B, h, w) channel mean of |f| after residual stage ``stage``, eval mode, no gradients (for
        the attention figure, reid.report.figures; the model has no attention: ``partner`` is refused)."""
        if partner is not None:
            raise ValueError("activation maps with a partner need the mutual variant, not bot")
        if stage not in (1, 2, 3, 4):
            raise ValueError(f"stage must be one of [1, 2, 3, 4], got {stage!r}")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                f = run_stem(self.backbone, x)
                for s in range(1, stage + 1):
                    f = run_stage(self.backbone, s, f)
        finally:
            self.train(was_training)
        return f.abs().mean(dim=1).float()

    def embed(self, x: Tensor) -> Tensor:
        """The (B, C) test features: f_i (after the BNNeck) or f_t, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            feature = self.pooled(x)
            if self.neck_feat == "after" and self.bottleneck is not None:
                return self.bottleneck(feature)
            return feature
        finally:
            self.train(was_training)


def build(num_classes: int, config: Mapping[str, Any]) -> BotModel:
    """The builder of variant ``bot``: ``config["model"]``'s backbone and ImageNet weights, ``config["bot"]``'s
    ``last_stride``, ``neck`` and ``neck_feat`` (reid.typed_config.BotConfig)."""
    model_cfg, bot = config["model"], config["bot"]
    model = BotModel(num_classes, backbone=model_cfg["backbone"], last_stride=bot["last_stride"], neck=bot["neck"],
                     neck_feat=bot["neck_feat"])
    if model_cfg.get("pretrained"):
        load_pretrained_backbone(model, model_cfg["pretrained"], model_cfg.get("pretrained_sha256"))
    else:
        warnings.warn(f"model.pretrained is not set: the bot model's {model_cfg['backbone']} backbone is randomly "
                      "initialised (fine for the CPU demo; the strong baseline fine-tunes ImageNet weights)",
                      UserWarning, stacklevel=2)
    return model
