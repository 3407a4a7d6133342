"""Image preprocessing: resize, mean-image subtraction, flip and random erasing.

The mean image (and a per-channel std, so ImageNet-pretrained filters see inputs of the scale they
were trained on) is computed once from the training split by the verify stage and stored, at
MEAN_SIZE; every run loads it instead of recomputing. Two readings of the paper's "the mean image
computed from all training was subtracted from all the images" (section 5.1) are config keys
(docs/model.md, "Readings"): ``train.input_norm`` (``mean_std``: subtract the mean image and
divide by the per-channel std, the default; ``mean``: subtract only) and ``train.mean_image_size``
(``stored``: the stored MEAN_SIZE mean resized to the input size, the default; ``input``: the mean
of the training images each resized to the input size, recomputed by the training stage and kept in
model.pt so that extraction subtracts the same image). Random draws come from a generator seeded per (seed, epoch,
sample), so augmentation does not depend on worker scheduling and a resumed run repeats it exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

MEAN_SIZE = (256, 128)  # (height, width) at which the mean image is stored; resized to the input size
INPUT_NORMS = ("mean_std", "mean")  # config train.input_norm
MEAN_IMAGE_SIZES = ("stored", "input")  # config train.mean_image_size


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned the way its EXIF orientation tag says it is seen (a phone photo stored sideways
    is shown upright by every viewer: PIL.ImageOps.exif_transpose); an image without the tag (every
    image of the synthetic dataset, the re-ID benchmarks' crops) keeps its pixels exactly."""
    return ImageOps.exif_transpose(image)


def load_image(path: str | Path) -> torch.Tensor:
    """An RGB image, upright (EXIF orientation applied, ``upright``), as a float tensor (3, H, W) in
    [0, 1]. The one image loader of training, the mean image, extraction and ``reid rank``."""
    with Image.open(path) as im:
        arr = np.asarray(upright(im).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if img.shape[-2:] == (height, width):
        return img
    return F.interpolate(img.unsqueeze(0), size=(height, width), mode="bilinear",
                         align_corners=False, antialias=True).squeeze(0)


def compute_mean_image(paths: Sequence[str | Path], size: tuple[int, int] = MEAN_SIZE) -> dict:
    """Mean image (3, *size) and per-channel std over the training images, each resized to ``size``
    (height, width) first; float32, pixel values in [0, 1]. ValueError when ``paths`` is empty."""
    if not paths:
        raise ValueError("compute_mean_image: no training images")
    total = torch.zeros(3, *size, dtype=torch.float64)
    sq = torch.zeros(3, dtype=torch.float64)
    for p in paths:
        x = resize(load_image(p), *size).double()
        total += x
        sq += (x * x).mean(dim=(1, 2))
    mean = total / len(paths)
    chan_mean = mean.mean(dim=(1, 2))
    std = (sq / len(paths) - chan_mean**2).clamp_min(1e-12).sqrt()
    return {"mean": mean.float(), "std": std.float(), "count": len(paths)}


class Normalizer:
    """Resize, subtract the mean image, and with ``input_norm`` "mean_std" (the default) divide by the
    per-channel std; "mean" subtracts only (section 5.1's words). ValueError on another value."""

    def __init__(self, stats: dict, height: int, width: int, input_norm: str = "mean_std"):
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"train.input_norm {input_norm!r} is unknown; choose one of {', '.join(INPUT_NORMS)}")
        self.height, self.width = height, width
        self.mean = resize(stats["mean"], height, width)
        self.std = stats["std"].view(3, 1, 1) if input_norm == "mean_std" else None

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        centred = resize(img, self.height, self.width) - self.mean
        return centred / self.std if self.std is not None else centred


def training_normalisation(train_paths: Sequence[str | Path], cfg: dict) -> dict:
    """How a model's inputs are normalised, from config ``train`` (input_norm, mean_image_size, height,
    width): {"input_norm", "mean_image_size"}, plus "mean" (float32 (3, height, width)) with
    mean_image_size "input", the mean of ``train_paths`` each resized to the input size. Kept in
    model.pt's meta (``input_normalisation``); ``normalisation_stats`` turns it back into stats."""
    size = cfg["mean_image_size"]
    if size not in MEAN_IMAGE_SIZES:
        raise ValueError(f"train.mean_image_size {size!r} is unknown; choose one of {', '.join(MEAN_IMAGE_SIZES)}")
    if cfg["input_norm"] not in INPUT_NORMS:
        raise ValueError(f"train.input_norm {cfg['input_norm']!r} is unknown; choose one of {', '.join(INPUT_NORMS)}")
    out = {"input_norm": cfg["input_norm"], "mean_image_size": size}
    if size == "input":
        out["mean"] = compute_mean_image(train_paths, (cfg["height"], cfg["width"]))["mean"]
    return out


def normalisation_stats(mean_image: str | Path, normalisation: dict | None) -> tuple[dict, str]:
    """(stats for Normalizer, input_norm) of a model: mean_image.pt's mean and std, the mean replaced
    by the model's own when it has one. ``normalisation`` is model.pt's meta ``input_normalisation``;
    None (a model trained before the key existed) is the default reading, mean_std with the stored mean."""
    from reid.files import load_mean_image

    stats = load_mean_image(mean_image)
    normalisation = normalisation or {"input_norm": "mean_std", "mean_image_size": "stored"}
    if "mean" in normalisation:
        stats = {**stats, "mean": normalisation["mean"]}
    return stats, normalisation["input_norm"]


def load_eval_transform(mean_image_path: str | Path, height: int, width: int,
                        normalisation: dict | None = None) -> Callable:
    """PIL image or path -> normalised tensor (3, height, width), as used at test time.

    ``normalisation``: the model's meta ``input_normalisation`` (training_normalisation); None is
    the default reading (subtract the stored mean image, divide by the per-channel std)."""
    stats, input_norm = normalisation_stats(mean_image_path, normalisation)
    norm = Normalizer(stats, height, width, input_norm)

    def transform(image) -> torch.Tensor:
        if isinstance(image, Image.Image):
            arr = np.asarray(upright(image).convert("RGB"), dtype=np.uint8)
            img = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
        else:
            img = load_image(image)
        return norm(img)

    return transform


def random_erase(img: torch.Tensor, gen: torch.Generator, probability: float,
                 area=(0.02, 0.4), aspect=(0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): a rectangle set to 0, i.e. to the mean image."""
    if probability <= 0 or torch.rand((), generator=gen).item() >= probability:
        return img
    _, h, w = img.shape
    for _ in range(10):
        a = (area[0] + (area[1] - area[0]) * torch.rand((), generator=gen).item()) * h * w
        log_r = np.log(aspect[0]) + (np.log(aspect[1]) - np.log(aspect[0])) * torch.rand((), generator=gen).item()
        r = float(np.exp(log_r))
        eh, ew = int(round((a * r) ** 0.5)), int(round((a / r) ** 0.5))
        if 0 < eh < h and 0 < ew < w:
            y = int(torch.randint(0, h - eh + 1, (), generator=gen))
            x = int(torch.randint(0, w - ew + 1, (), generator=gen))
            img = img.clone()
            img[:, y:y + eh, x:x + ew] = 0.0
            return img
    return img


class TrainAugment:
    """Normalise (``input_norm``: see Normalizer), then flip and erase with draws from the given generator."""

    def __init__(self, stats: dict, height: int, width: int, flip: float, erasing: float,
                 input_norm: str = "mean_std"):
        self.norm = Normalizer(stats, height, width, input_norm)
        self.flip, self.erasing = flip, erasing

    def __call__(self, img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = self.norm(img)
        if self.flip > 0 and torch.rand((), generator=gen).item() < self.flip:
            x = x.flip(-1)
        return random_erase(x, gen, self.erasing)


def training_augment(mean_image: str | Path, train_paths: Sequence[str | Path], cfg: dict) -> tuple[TrainAugment, dict]:
    """(the training stage's TrainAugment, its normalisation for model.pt's meta ``input_normalisation``)
    from mean_image.pt, the training images and config ``train`` (height, width, horizontal_flip,
    random_erasing, input_norm, mean_image_size)."""
    normalisation = training_normalisation(train_paths, cfg)
    stats, input_norm = normalisation_stats(mean_image, normalisation)
    augment = TrainAugment(stats, cfg["height"], cfg["width"], cfg["horizontal_flip"], cfg["random_erasing"],
                           input_norm)
    return augment, normalisation
