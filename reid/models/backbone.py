"""The torchvision ResNet trunk, cut into the stages the attention blocks are inserted between."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision import models as tv_models

# Output channels of layer1..layer4: BasicBlock nets (18/34) and Bottleneck nets (50).
_STAGE_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
}
BACKBONES = tuple(_STAGE_CHANNELS)
STAGES = (1, 2, 3, 4)


def build_resnet(name: str) -> nn.Module:
    """A randomly initialised torchvision ResNet with its ImageNet classifier removed (``fc`` = Identity).

    The module keeps torchvision's parameter names, so torchvision's own state dicts load into it
    unchanged (minus ``fc.*``).
    """
    if name not in _STAGE_CHANNELS:
        raise ValueError(f"model.backbone: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    net = getattr(tv_models, name)(weights=None)
    net.fc = nn.Identity()
    return net


def stage_channels(name: str, stage: int) -> int:
    return _STAGE_CHANNELS[name][stage - 1]


def run_stem(net: nn.Module, x: Tensor) -> Tensor:
    return net.maxpool(net.relu(net.bn1(net.conv1(x))))


def run_stage(net: nn.Module, stage: int, x: Tensor) -> Tensor:
    return getattr(net, f"layer{stage}")(x)
