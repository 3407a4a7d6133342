"""The feature-extraction stage: embed query, gallery and (where present) gt_bbox images.

Writes features.pt, a dict of tensors and path lists loadable with ``torch.load(weights_only=True)``.
Features are L2-normalised embeddings from the model's single-image (test) path. With ``flip``
(config ``evaluate.flip``, the common "flip test") an image's feature is the normalised sum of the
normalised embeddings of the image and of its mirror image: the person is the same either way round,
and the training data was flipped at random.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reid import files, io
from reid.data.market import Record, scan_dataset
from reid.data.transforms import load_eval_transform
from reid.train import load_trained_model, select_device

SPLIT_PREFIX = {"query": "query", "gallery": "gallery", "multi_query": "mq"}


@torch.inference_mode()
def embed_records(model, records: list[Record], transform, batch_size: int, device: torch.device,
                  flip: bool = False) -> torch.Tensor:
    cuda = device.type == "cuda"
    feats = []
    for start in range(0, len(records), batch_size):
        batch = torch.stack([transform(r.path) for r in records[start:start + batch_size]]).to(device)
        views = [batch, batch.flip(dims=[3])] if flip else [batch]  # dim 3: width
        emb = 0
        for view in views:
            view = view.contiguous(memory_format=torch.channels_last)  # 2-2.5x faster on CPU too
            amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
            with amp:
                emb = emb + F.normalize(model.embed(view).float(), dim=1)
        feats.append(F.normalize(emb, dim=1).cpu())
    if not feats:
        return torch.empty(0, 0)
    return torch.cat(feats)


def extract(*, model_path: Path, data_root: Path, mean_image: Path, out: Path, batch_size: int,
            device: str = "auto", threads: int = 1, flip: bool = False) -> dict:
    torch.set_num_threads(max(1, threads))
    dev = select_device(device)
    model, meta = load_trained_model(model_path, dev)
    model.to(memory_format=torch.channels_last)
    transform = load_eval_transform(mean_image, meta["height"], meta["width"])
    splits = scan_dataset(data_root)
    result: dict = {}
    timings = {}
    for split, prefix in SPLIT_PREFIX.items():
        if split not in splits:
            continue
        records = splits[split]
        t0 = time.perf_counter()
        result[f"{prefix}_feats"] = embed_records(model, records, transform, batch_size, dev, flip)
        timings[split] = (len(records), time.perf_counter() - t0)
        result[f"{prefix}_pids"] = torch.tensor([r.pid for r in records], dtype=torch.long)
        result[f"{prefix}_camids"] = torch.tensor([r.camid for r in records], dtype=torch.long)
        result[f"{prefix}_paths"] = [r.path for r in records]
        n, s = timings[split]
        print(f"{split}: {n} images in {s:.1f} s ({n / max(s, 1e-9):.1f} img/s)", flush=True)
    result["meta"] = {k: str(meta[k]) for k in ("dataset", "variant", "seed", "config_hash")}
    result["meta"]["flip"] = "true" if flip else "false"
    io.torch_save(out, result)
    return {split: n for split, (n, _) in timings.items()}


def load_features(path: str | Path) -> dict:
    """features.pt, checked (reid.files.load_features)."""
    return files.load_features(path)
