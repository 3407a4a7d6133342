"""ImageNet weights from a local torchvision file, verified by SHA-256 before anything is unpickled."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import nn

# torchvision names its files "<arch>-<first hex digits of the file's sha256>.pth", e.g. resnet50-0676ba61.pth
_TORCHVISION_HASH = re.compile(r"-(?P<prefix>[0-9a-f]{8,64})\.pth?$")
_CHUNK = 1 << 20


class PretrainedWeightsError(ValueError):
    """The configured weights file is missing, fails its checksum, or does not fit the backbone."""


def sha256_of_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (ResNet-50 weights are ~100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha256(path: str | Path, sha256: str | None) -> str:
    """The full digest if configured, else the hash prefix in a torchvision file name; error if neither."""
    if sha256 is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise PretrainedWeightsError(f"model.pretrained_sha256: {sha256!r} is not 64 hex digits")
        return sha256.lower()
    match = _TORCHVISION_HASH.search(Path(path).name)
    if match is None:
        raise PretrainedWeightsError(
            f"model.pretrained_sha256 is required for {path}: its name carries no torchvision hash prefix "
            "(like resnet50-0676ba61.pth)"
        )
    return match["prefix"]


def verify_sha256(path: str | Path, sha256: str | None = None) -> str:
    """Check the file against ``sha256`` (or its name's prefix); return the file's full digest."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"model.pretrained: weights file {path} does not exist")
    expected = expected_sha256(path, sha256)
    actual = sha256_of_file(path)
    if not actual.startswith(expected):
        what = "sha256" if len(expected) == 64 else "sha256 prefix in its name"
        raise PretrainedWeightsError(
            f"model.pretrained: {path} fails its checksum: expected {what} {expected}, file has sha256 {actual}"
        )
    return actual


def load_pretrained_backbone(model: nn.Module, path: str | Path, sha256: str | None = None) -> str:
    """Verify ``path`` and load it into ``model.backbone`` (or ``model`` itself if it is the ResNet).

    Every backbone key must be present and fit (strict); the file's ImageNet classifier ``fc.*`` is
    dropped, since the re-ID heads replace it. Returns the file's SHA-256.
    """
    digest = verify_sha256(path, sha256)
    backbone = getattr(model, "backbone", model)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise PretrainedWeightsError(f"model.pretrained: {path} is not a torchvision state dict (name -> tensor)")
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise PretrainedWeightsError(
            f"model.pretrained: {path} does not fit the configured backbone: {error}"
        ) from error
    return digest
