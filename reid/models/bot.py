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

Self-attention (variant ``bot_self_attention``, not in Luo et al.): the paper's self-attention block
(Jamal et al. 2020, eqs. 1-4, reid.models.attention.SelfAttention) after each residual stage of
``model.attention_layers`` ("At Layer 4 and Layer 3", section 3.1), applied as the project's
single-image path applies it, F = f * SA + f (eqs. 7-8's residual form with SA in place of MA; the
project's reading, docs/model.md choice 1), with the model section's ``attention_norm``, ``attention_init`` and ``attention_channels``; the rest of
the model and the whole recipe are the strong baseline's. It asks whether the paper's attention helps
a strong baseline (issue 23). Mutual attention needs a partner image and a verification loss, which
the recipe does not have: it is not offered here (docs/model.md).

``build(num_classes, config, attention="none")`` is the builder of variants ``bot`` and
``bot_self_attention`` (reid.variants); ``config`` holds the ``model`` section (its ``backbone``,
``pretrained``, ``pretrained_sha256`` and, with attention, its ``attention_*`` keys) and the ``bot`` section.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from reid.models.attention import SelfAttention
from reid.models.backbone import build_resnet, run_stage, run_stem, stage_channels
from reid.models.pretrained import load_pretrained_backbone

NECKS = ("bnneck", "none")
NECK_FEATS = ("after", "before")
ATTENTIONS = ("none", "self")
STAGES = (1, 2, 3, 4)


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

    ``attention="self"`` inserts the paper's self-attention after each stage of ``attention_layers``
    (F = f * SA + f; ``attention_norm``, ``attention_init``, ``attention_channels`` as config
    ``model:``'s keys of the same names). Raises ValueError naming the config key of a value out of range.
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", last_stride: int = 1,
                 neck: str = "bnneck", neck_feat: str = "after", attention: str = "none",
                 attention_layers: tuple[int, ...] = (3, 4), attention_norm: str = "rms",
                 attention_init: str = "kaiming", attention_channels: str = "per_channel"):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"bot model attention {attention!r} is unknown; choose one of {', '.join(ATTENTIONS)}")
        layers = tuple(sorted(attention_layers)) if attention == "self" else ()
        if attention == "self" and (not layers or len(set(layers)) != len(layers) or not set(layers) <= set(STAGES)):
            raise ValueError(f"model.attention_layers must be distinct stages among {list(STAGES)}, "
                             f"at least one, got {list(attention_layers)!r}")
        if neck not in NECKS:
            raise ValueError(f"bot.neck: {neck!r} is unknown; choose one of {', '.join(NECKS)}")
        if neck_feat not in NECK_FEATS:
            raise ValueError(f"bot.neck_feat: {neck_feat!r} is unknown; choose one of {', '.join(NECK_FEATS)}")
        if last_stride not in (1, 2):
            raise ValueError(f"bot.last_stride must be 1 or 2, got {last_stride!r}")
        self.neck, self.neck_feat = neck, neck_feat
        self.backbone = build_resnet(backbone)
        set_last_stride(self.backbone, last_stride)
        self.attention_layers = layers
        # SelfAttention raises naming model.attention_norm / attention_init for an unknown value
        self.self_attention = nn.ModuleDict({str(k): SelfAttention(stage_channels(backbone, k), attention_norm,
                                                                   attention_init, attention_channels)
                                             for k in layers})
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

    def _stages(self, x: Tensor, last: int = 4) -> Tensor:
        """Stem .. stage ``last``, each stage of ``attention_layers`` followed by F = f * SA + f (eqs. 1-4)."""
        f = run_stem(self.backbone, x)
        for stage in range(1, last + 1):
            f = run_stage(self.backbone, stage, f)
            if stage in self.attention_layers:
                f = self.self_attention[str(stage)](f).modulate(f)
        return f

    def pooled(self, x: Tensor) -> Tensor:
        """f_t: the globally average-pooled layer4 feature (B, C), in the current mode."""
        return torch.flatten(self.backbone.avgpool(self._stages(x)), 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feature = self.pooled(x)
        neck = feature if self.bottleneck is None else self.bottleneck(feature)
        return {"logits": self.classifier(neck), "feature": feature}

    def activation_maps(self, x: Tensor, partner: Tensor | None = None, stage: int = 4) -> Tensor:
        """(B, h, w) channel mean of |F| after residual stage ``stage`` (with that stage's self-attention
        applied, if it has one), eval mode, no gradients (for the attention figure, reid.report.figures;
        no mutual attention: ``partner`` is refused)."""
        if partner is not None:
            raise ValueError("activation maps with a partner need the mutual variant, not bot")
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {list(STAGES)}, got {stage!r}")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                f = self._stages(x, stage)
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


def build(num_classes: int, config: Mapping[str, Any], attention: str = "none") -> BotModel:
    """The builder of variants ``bot`` and (``attention="self"``) ``bot_self_attention``: ``config["model"]``'s
    backbone and ImageNet weights (and, with attention, its ``attention_layers``, ``attention_norm``,
    ``attention_init``, ``attention_channels``), ``config["bot"]``'s ``last_stride``, ``neck`` and
    ``neck_feat`` (reid.typed_config.BotConfig)."""
    model_cfg, bot = config["model"], config["bot"]
    parts = {}
    if attention != "none":
        parts = {k: model_cfg[k] for k in ("attention_layers", "attention_norm", "attention_init", "attention_channels")}
        parts["attention_layers"] = tuple(parts["attention_layers"])
    model = BotModel(num_classes, backbone=model_cfg["backbone"], last_stride=bot["last_stride"], neck=bot["neck"],
                     neck_feat=bot["neck_feat"], attention=attention, **parts)
    if model_cfg.get("pretrained"):
        load_pretrained_backbone(model, model_cfg["pretrained"], model_cfg.get("pretrained_sha256"))
    else:
        warnings.warn(f"model.pretrained is not set: the bot model's {model_cfg['backbone']} backbone is randomly "
                      "initialised (fine for the CPU demo; the strong baseline fine-tunes ImageNet weights)",
                      UserWarning, stacklevel=2)
    return model
