"""The feature-extraction stage: embed query, gallery and (where present) gt_bbox images.

Writes features.pt, a dict of tensors and path lists loadable with ``torch.load(weights_only=True)``.
Features are L2-normalised embeddings from the model's single-image (test) path. With ``flip``
(config ``evaluate.flip``, the common "flip test") an image's feature is the normalised sum of the
normalised embeddings of the image and of its mirror image: the person is the same either way round,
and the training data was flipped at random. The model runs in the precision it was trained in
(config ``train.precision``, kept in model.pt's meta: bf16 autocast, or fp32 for files without it).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reid import contracts, files
from reid.data.market import Record, scan_dataset
from reid.data.transforms import load_eval_transform
from reid.models.custom import check_embedding
from reid.models.probe import probe
from reid.models.runtime import autocast, load_trained_model, select_device
from reid.variants import REGISTRY

SPLIT_PREFIX = {"query": "query", "gallery": "gallery", "multi_query": "mq"}


# Whether test features are scaled to unit length before the Euclidean ranking (config
# evaluate.feature_norm; docs/model.md, "Readings"). The paper: "The final ranking was performed by
# calculating the Euclidean distance between each query image and all galleries" (section 5.1).
#   l2   - each view's embedding L2-normalised, summed over the views (flip test), normalised again (default)
#   none - the embedding as the model gives it; with the flip test, the mean of the two views'
FEATURE_NORMS = ("l2", "none")


@torch.inference_mode()
def embed_records(model, records: list[Record], transform, batch_size: int, device: torch.device,
                  flip: bool = False, precision: str = "fp32", entry: str | None = None,
                  feature_norm: str = "l2") -> torch.Tensor:
    """(N, D) float32 features, L2-normalised unless ``feature_norm`` is "none" (FEATURE_NORMS);
    ``precision`` bf16 runs the model under bf16 autocast.

    ``entry``: the model's builder; each ``embed`` output is then checked to be (B, D)
    (reid.models.custom.CustomModelError naming the entry otherwise).
    """
    if feature_norm not in FEATURE_NORMS:
        raise ValueError(f"evaluate.feature_norm {feature_norm!r} is unknown; choose one of {', '.join(FEATURE_NORMS)}")
    unit = feature_norm == "l2"
    feats = []
    for start in range(0, len(records), batch_size):
        batch = torch.stack([transform(r.path) for r in records[start:start + batch_size]]).to(device)
        views = [batch, batch.flip(dims=[3])] if flip else [batch]  # dim 3: width
        emb = 0
        for view in views:
            view = view.contiguous(memory_format=torch.channels_last)  # 2-2.5x faster on CPU too
            with autocast(device, precision):
                out = model.embed(view)
                if entry is not None:
                    check_embedding(out, view.shape[0], entry)
                emb = emb + (F.normalize(out.float(), dim=1) if unit else out.float())
        feats.append((F.normalize(emb, dim=1) if unit else emb / len(views)).cpu())
    if not feats:
        return torch.empty(0, 0)
    return torch.cat(feats)


def load_embedding_model(model_path: Path, device: torch.device, test_embedding: str | None = None):
    """The trained model of ``model_path`` ready to embed test images: (model in eval mode, meta).

    ``test_embedding`` (mutual models: single | mutual_self | plain) switches its single-image path;
    a model that embeds one way only accepts its variant's one way (``single`` for bot, the readings'
    rules pass it for every model) and raises ValueError for another. Its test embedding is run once on a test batch
    in the model's precision (meta ``precision``) before any image is read (reid.models.probe), which
    also checks a custom model's output. Raises as reid.models.runtime.load_trained_model.
    """
    model, meta = load_trained_model(model_path, device)
    entry = meta["builder"]["entry"]
    if test_embedding is not None:
        if callable(getattr(model, "set_test_embedding", None)):
            model.set_test_embedding(test_embedding)
        else:
            from reid.variants import REGISTRY

            spec = REGISTRY.get(str(meta.get("variant")))
            only = spec.test_embeddings[0] if spec is not None else "single"
            if test_embedding != only:
                raise ValueError(f"{model_path}: model {meta.get('variant')!r} embeds test images one way only "
                                 f"({only!r}); --test-embedding {test_embedding!r} does not apply")
    model.to(memory_format=torch.channels_last)
    probe(model, num_classes=1, height=meta["height"], width=meta["width"], device=device, paths=("embed",),
          precision=meta.get("precision", "fp32"), what=entry or f"model variant {meta.get('variant')!r} ({model_path})")
    return model, meta


def extract(*, model_path: Path, data_root: Path, mean_image: Path, out: Path, batch_size: int,
            device: str = "auto", threads: int = 1, flip: bool = False, test_embedding: str | None = None,
            feature_norm: str = "l2") -> dict:
    """Embed every split of ``data_root`` with the model in ``model_path``; writes ``out``, returns image counts.

    ``test_embedding`` (mutual models: single | mutual_self | plain) embeds with another single-image
    path than the one the model was trained with, from the same weights (``ReIDModel.set_test_embedding``).
    """
    torch.set_num_threads(max(1, threads))
    dev = select_device(device)
    model, meta = load_embedding_model(model_path, dev, test_embedding)
    variant = REGISTRY.get(str(meta.get("variant")))
    entry = meta["builder"]["entry"]
    transform = load_eval_transform(mean_image, meta["height"], meta["width"], meta.get("input_normalisation"))
    splits = scan_dataset(data_root)
    result: dict = {}
    timings = {}
    for split, prefix in SPLIT_PREFIX.items():
        if split not in splits:
            continue
        records = splits[split]
        t0 = time.perf_counter()
        result[f"{prefix}_feats"] = embed_records(model, records, transform, batch_size, dev, flip,
                                                  meta.get("precision", "fp32"), entry, feature_norm)
        timings[split] = (len(records), time.perf_counter() - t0)
        result[f"{prefix}_pids"] = torch.tensor([r.pid for r in records], dtype=torch.long)
        result[f"{prefix}_camids"] = torch.tensor([r.camid for r in records], dtype=torch.long)
        result[f"{prefix}_paths"] = [r.path for r in records]
        n, s = timings[split]
        print(f"{split}: {n} images in {s:.1f} s ({n / max(s, 1e-9):.1f} img/s)", flush=True)
    contracts.check_features(result, {SPLIT_PREFIX[s]: n for s, (n, _) in timings.items()}, out, model_path)
    chooses = variant is not None and variant.chooses_test_embedding  # only then has the model a choice
    files.write_features(out, result, meta, flip=flip, feature_norm=feature_norm,
                         test_embedding=model.test_embedding if chooses else "single")
    return {split: n for split, (n, _) in timings.items()}


def gallery_images(folder: str | Path) -> list[str]:
    """Every image under ``folder`` (recursively, sorted): any file Pillow can identify, whatever its
    name or suffix; OS clutter (Thumbs.db, .DS_Store, ._*) is skipped. Raises FileNotFoundError when
    the folder is missing, ValueError when it holds no image, naming the folder."""
    from PIL import Image, UnidentifiedImageError

    from reid.data.market import is_os_clutter

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: gallery folder not found")
    found = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or is_os_clutter(p.name):
            continue
        try:
            with Image.open(p):
                found.append(str(p))
        except (UnidentifiedImageError, OSError):
            continue  # not an image: a gallery folder may hold lists, notes, ...
    if not found:
        raise ValueError(f"{folder}: no image that Pillow can read")
    return found


def rank_gallery_folder(*, model_path: Path, mean_image: Path, query: Path, gallery: Path, top: int = 10,
                        batch_size: int = 64, device: str = "auto", threads: int = 1,
                        flip: bool = False) -> list[tuple[str, float]]:
    """The ``top`` gallery images nearest to one query image, nearest first: (path, distance).

    Both are embedded by the trained model's test path as in ``extract`` (load_embedding_model and
    embed_records: its precision, the probe and a custom model's output check; L2-normalised, optional
    flip test); distance is Euclidean between the embeddings (in [0, 2]), ties broken by file name
    order. No identity labels are needed, so nothing is left out as the evaluation protocol would
    (same identity and camera, junk): this is the paper's Figure 5 for any image a user brings.
    """
    from reid.metrics import euclidean_distance

    torch.set_num_threads(max(1, threads))
    dev = select_device(device)
    model, meta = load_embedding_model(model_path, dev)
    transform = load_eval_transform(mean_image, meta["height"], meta["width"], meta.get("input_normalisation"))
    if not Path(query).is_file():
        raise FileNotFoundError(f"{query}: query image not found")
    paths = gallery_images(gallery)
    records = [Record(path=p, pid=0, camid=0) for p in [str(query), *paths]]
    feats = embed_records(model, records, transform, batch_size, dev, flip, meta.get("precision", "fp32"),
                          meta["builder"]["entry"])
    dist = euclidean_distance(feats[:1], feats[1:])[0].double().cpu().numpy()
    import numpy as np

    order = np.argsort(dist, kind="stable")[:top]
    return [(paths[i], float(dist[i])) for i in order]
