"""The worked example of docs/extending.md: a custom model, a model variant and a dataset kind, all
defined outside the ``reid`` package. tests/extending/test_extending.py runs them through the whole
workflow (``snakemake``: prepare -> verify -> train -> extract -> evaluate -> tables) on a tiny config.

Config that uses it (the module must be importable by every job: on PYTHONPATH, or in the working
directory)::

    plugins: [reid_example_plugin]                  # registers `tiny_ide` and the `flat_list` kind
    custom_models:
      tiny_net: {entry: "reid_example_plugin:build_tiny_net", label: "tiny CNN + verifier"}
    models: [tiny_net, tiny_ide]
    dataset:
      flat: {source: archive, archive: flat.zip, kind: flat_list, custom: true}
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from reid.data.kinds import DatasetKind, DatasetLayoutError, register as register_kind
from reid.data.kinds.layouts import NativeImage, find_folder, place_renamed
from reid.variants import Variant, register as register_variant


# ----------------------------------------------------------------------------- a model of your own

class TinyNet(nn.Module):
    """Two strided convolutions, global average pooling: a D-dimensional embedding.

    ``forward(x1, x2)`` follows the custom-model interface: identity logits of both images of each
    pair, and (with ``verifier``) same/different logits of the pair from (e1 - e2)^2.
    """

    def __init__(self, num_classes: int, dim: int, verifier: bool = True):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(dim, num_classes)
        self.verifier = nn.Linear(dim, 2) if verifier else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) test-time features of (B, 3, H, W) images (the pipeline calls it in eval mode)."""
        return self.features(x)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> dict:
        e1, e2 = self.embed(x1), self.embed(x2)
        out = {"logits1": self.classifier(e1), "logits2": self.classifier(e2)}
        if self.verifier is not None:
            out["verif_logits"] = self.verifier((e1 - e2).pow(2))  # class 1 = same identity
        return out


def build_tiny_net(num_classes: int, config: dict) -> nn.Module:
    """The `custom_models:` entry: ``config`` holds the validated ``model`` and ``train`` sections."""
    return TinyNet(num_classes, dim=config["model"]["embedding_dim"])


def build_tiny_ide(num_classes: int, config: dict) -> nn.Module:
    """The builder of the `tiny_ide` variant below: no verifier, identification loss only."""
    return TinyNet(num_classes, dim=config["model"]["embedding_dim"], verifier=False)


# A variant registered from here: what the built-ins declare in reid/variants.py, in one call.
register_variant(Variant(
    name="tiny_ide", label="tiny CNN, identification only", short_label="tiny IDE", colour="#17becf",
    attention="none", verifier=False, test_embeddings=("single",), builder=f"{__name__}:build_tiny_ide"))


# ----------------------------------------------------------------------------- a dataset kind of your own

LIST_FILE = "split.csv"  # file,split,person,camera; split is train | query | gallery


class FlatListLayout:
    """Every image in one folder ``images/``, and a list ``split.csv`` saying each image's split,
    person (>= 1) and camera (>= 1): the kind of layout a lab's own export has."""

    def find(self, root: Path, label: str, expected_name: str | None) -> Path:
        return find_folder(root, lambda d: (d / LIST_FILE).is_file() and (d / "images").is_dir(),
                           f"{LIST_FILE} and images/", label, expected_name)

    def lay_out(self, folder: Path, staged: Path, transfer) -> dict:
        with open(folder / LIST_FILE, newline="") as f:
            rows = list(csv.DictReader(f))
        images = []
        for line, row in enumerate(rows, start=2):
            try:
                split, pid, camid = row["split"], int(row["person"]), int(row["camera"])
            except (KeyError, TypeError, ValueError):
                raise DatasetLayoutError(f"{folder / LIST_FILE}:{line}: expected file,split,person,camera") from None
            if split not in ("train", "query", "gallery"):
                raise DatasetLayoutError(f"{folder / LIST_FILE}:{line}: split {split!r} is not train, query or gallery")
            source = folder / "images" / row["file"]
            if not source.is_file():
                raise DatasetLayoutError(f"{folder / LIST_FILE}:{line}: {row['file']} is not in images/")
            images.append(NativeImage(source=source, original=f"images/{row['file']}", split=split, pid=pid,
                                      camid=camid))
        return {"listed": len(images), **place_renamed(images, staged, transfer)}


register_kind(DatasetKind(
    name="flat_list", display_name="flat-list export", layout=FlatListLayout(), splits=None,
    has_multi_query=False, how_to_get="Export your images into images/ and their split list into split.csv."))
