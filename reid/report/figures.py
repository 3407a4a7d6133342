"""The paper's figures as PNG (matplotlib, Agg): losses (Fig. 6), CMC curves, ranked lists (Fig. 5),
activation maps (Fig. 4: layer4, or a finer attention layer at small inputs, see `figure_resolution`).

Each figure has a pure plotting function fed with arrays/images, and a thin loader where the
inputs are pipeline files, so the plotting is testable without a trained model.
Figures are written at FIG_DPI with a width of at least MIN_WIDTH_PX pixels.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reid.report.runs import ReportInputError, Run, group_runs, pipeline_file  # noqa: E402
from reid.variants import REGISTRY, get_variant  # noqa: E402

FIG_DPI = 120
MIN_WIDTH_PX = 1000
CORRECT, WRONG, QUERY = "#1a9d1a", "#d62020", "#1f3fbf"
plt.rcParams.update({"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 11})


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    width_in = fig.get_size_inches()[0]
    dpi = max(FIG_DPI, math.ceil(MIN_WIDTH_PX / width_in))
    from reid import io

    # the temporary name has no image suffix: the format comes from the target's
    io.atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=dpi, facecolor="white", format=out.suffix.lstrip(".")
                                                 or "png"))
    plt.close(fig)
    return out


# ---------------------------------------------------------------- losses (Figure 6)

LOSS_COLUMNS = ("epoch", "loss_id")
# the second panel: the paper's recipe's verification loss, or the strong baseline's triplet loss
# (reid.recipes); a history has one of them
SECOND_LOSSES = ("loss_verif", "loss_triplet")


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """history.csv -> column arrays; errors name the file and the missing column or bad cell."""
    from reid.files import DamagedFileError, load_history

    path = Path(path)
    with pipeline_file():
        rows = load_history(path, columns=LOSS_COLUMNS)
        if not any(c in rows[0] for c in SECOND_LOSSES):
            raise DamagedFileError(path, "history", f"missing column(s) {' or '.join(SECOND_LOSSES)}")
    return {col: np.array([r[col] for r in rows]) for col in rows[0]}


def losses_figure(histories: Mapping[str, str | Path], out: str | Path, title: str = "",
                  colours: Mapping[str, str] | None = None) -> Path:
    """Identification and verification loss per epoch, one line per model (label -> history.csv); a model
    trained by the strong baseline's recipe shows its triplet loss in the second panel. ``colours``:
    label -> colour (a variant's, reid.variants), matplotlib's cycle otherwise."""
    data = {label: read_history(p) for label, p in histories.items()}
    second = [c for c in SECOND_LOSSES if any(c in h for h in data.values())]
    name2 = " / ".join({"loss_verif": "Verification loss", "loss_triplet": "triplet loss"}[c] for c in second)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for ax, col, name in ((axes[0], "loss_id", "Identification loss"), (axes[1], None, name2[:1].upper() + name2[1:])):
        for i, (label, h) in enumerate(data.items()):
            column = col or next(c for c in SECOND_LOSSES if c in h)
            ax.plot(h["epoch"], h[column], marker="o", markersize=4, linewidth=2,
                    label=label if col or len(second) == 1 else f"{label} ({column.removeprefix('loss_')})",
                    color=(colours or {}).get(label, f"C{i}"))
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel("loss (mean over the epoch)")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, out)


# ---------------------------------------------------------------- CMC curves

def mean_cmc(runs: Sequence[Run], key: str, max_rank: int) -> np.ndarray | None:
    """The CMC (percent, ranks 1..n) averaged over seeds, n = max_rank or, for a gallery smaller than
    max_rank (evaluation then writes one entry per gallery image), the shortest curve's length; None
    when the runs lack ``key``. ReportInputError naming the file for a curve that is not a list of
    fractions."""
    curves = []
    for r in runs:
        cmc = r.info.get(key)
        if cmc is None:
            return None
        if not isinstance(cmc, list) or not cmc or not all(isinstance(c, (int, float)) for c in cmc):
            raise ReportInputError(f"{r.path}: {key} must be a non-empty list of fractions")
        curves.append(np.asarray(cmc[:max_rank], dtype=float) * 100)
    shown = min(len(c) for c in curves)
    return np.mean([c[:shown] for c in curves], axis=0)


def cmc_figure(runs: Sequence[Run], out: str | Path, title: str = "", max_rank: int = 50,
               labels: Mapping[str, str] | None = None) -> Path:
    """CMC, rank 1..max_rank: each model without (solid) and with re-ranking (dashed); mean over seeds."""
    datasets = sorted({r.dataset for r in runs})
    if len(datasets) != 1:
        raise ReportInputError(f"figure-cmc: expected the runs of one dataset, got {', '.join(datasets) or 'none'}")
    by_model = group_runs(list(runs), datasets[0])
    fig, ax = plt.subplots(figsize=(10, 6.5), constrained_layout=True)
    shown = max_rank  # the ranks every curve reaches (a gallery smaller than max_rank gives shorter curves)
    for model, model_runs in by_model.items():
        colour = get_variant(model).colour
        name = (labels or {}).get(model, get_variant(model).short_label)
        seeds = f" ({len(model_runs)} seeds)" if len(model_runs) > 1 else ""
        from reid.metrics.keys import curve_key

        for key, style, suffix in ((curve_key("single"), "-", ""), (curve_key("rerank"), "--", " + re-ranking")):
            curve = mean_cmc(model_runs, key, max_rank)
            if curve is None:
                continue
            shown = min(shown, len(curve))
            ax.plot(np.arange(1, len(curve) + 1), curve, style, color=colour, linewidth=2.2,
                    label=f"{name}{suffix}: R1 {curve[0]:.1f}%{seeds}")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(1, max(2, shown))
    ax.set_xticks([1, *range(5, shown + 1, 5)])
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or f"CMC curves, single query ({datasets[0]})")
    return _save(fig, out)


# ---------------------------------------------------------------- ranked lists (Figure 5)

def load_features(path: str | Path) -> dict:
    from reid import files

    path = Path(path)
    with pipeline_file():
        blob = files.load_features(path)
    need = ("query_feats", "gallery_feats", "query_pids", "query_camids", "gallery_pids", "gallery_camids",
            "query_paths", "gallery_paths")
    missing = [k for k in need if k not in blob]
    if missing:
        raise ReportInputError(f"{path}: missing key(s) {', '.join(missing)}")
    return blob


def ranked_gallery(query_feats: np.ndarray, gallery_feats: np.ndarray, query_pids: np.ndarray,
                   query_camids: np.ndarray, gallery_pids: np.ndarray, gallery_camids: np.ndarray,
                   queries: Sequence[int], top_k: int) -> list[np.ndarray]:
    """For each query index: gallery indices of its top_k matches, nearest first (ties: lower index).

    Distances are those the evaluation ranks by: Euclidean between L2-normalised features
    (reid.metrics.l2_normalize, euclidean_distance). As in the Market-1501 protocol, gallery images
    of the query's identity taken by the query's camera, and junk images, are left out
    (reid.metrics.rank.kept_in_ranking).
    """
    from reid.metrics import euclidean_distance, l2_normalize
    from reid.metrics.rank import kept_in_ranking

    q = l2_normalize(np.asarray(query_feats)[list(queries)])
    g = l2_normalize(np.asarray(gallery_feats))
    dist = euclidean_distance(q, g)
    out = []
    for row, qi in enumerate(queries):
        idx = np.flatnonzero(kept_in_ranking(gallery_pids, gallery_camids, query_pids[qi], query_camids[qi]))
        order = idx[np.argsort(dist[row, idx], kind="stable")]
        out.append(order[:top_k])
    return out


def pick_queries(query_pids: np.ndarray, query_camids: np.ndarray, gallery_pids: np.ndarray,
                 gallery_camids: np.ndarray, n: int, seed: int) -> list[int]:
    """n query indices, drawn reproducibly among queries that have a valid match in the gallery."""
    valid = [i for i in range(len(query_pids))
             if np.any((gallery_pids == query_pids[i]) & (gallery_camids != query_camids[i]))]
    if not valid:
        raise ReportInputError("no query has a valid gallery match (same identity, other camera)")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(valid, size=min(n, len(valid)), replace=False).tolist())


def _open_image(root: Path, rel: str) -> np.ndarray:
    from PIL import Image

    from reid.data.transforms import upright

    path = root / rel
    try:
        with Image.open(path) as im:
            return np.asarray(upright(im).convert("RGB"))
    except FileNotFoundError:
        raise ReportInputError(f"{path}: image listed in features.pt not found (is --root right?)") from None


def _framed(ax, image: np.ndarray, colour: str, width: float = 5) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def ranked_figure(features: Mapping[str, str | Path], out: str | Path, root: Path = Path("."), n_queries: int = 4,
                  top_k: int = 10, seed: int = 0, title: str = "") -> Path:
    """Queries and their top_k gallery images per model (label -> features.pt), correct in green, wrong in red.

    All models show the same queries, drawn from the first model's file (the query set is the same).
    """
    blobs = {label: load_features(p) for label, p in features.items()}
    first = next(iter(blobs.values()))
    as_np = lambda t: t.numpy() if hasattr(t, "numpy") else np.asarray(t)  # noqa: E731
    queries = pick_queries(as_np(first["query_pids"]), as_np(first["query_camids"]),
                           as_np(first["gallery_pids"]), as_np(first["gallery_camids"]), n_queries, seed)
    rows = []  # (label, query index, gallery indices, blob)
    for label, b in blobs.items():
        if list(b["query_paths"]) != list(first["query_paths"]):
            raise ReportInputError(f"{features[label]}: its queries differ from {next(iter(features.values()))}")
        ranked = ranked_gallery(as_np(b["query_feats"]), as_np(b["gallery_feats"]), as_np(b["query_pids"]),
                                as_np(b["query_camids"]), as_np(b["gallery_pids"]), as_np(b["gallery_camids"]),
                                queries, top_k)
        rows += [(label, q, r, b) for q, r in zip(queries, ranked)]
    rows.sort(key=lambda row: queries.index(row[1]))  # group the models' rows of one query together
    return _draw_ranked(rows, out, root, top_k, title)


def _draw_ranked(rows, out, root: Path, top_k: int, title: str) -> Path:
    as_np = lambda t: t.numpy() if hasattr(t, "numpy") else np.asarray(t)  # noqa: E731
    n_rows, n_cols = len(rows), top_k + 1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.25 * n_cols + 1.6, 2.55 * n_rows + 2.0),
                             squeeze=False, gridspec_kw={"wspace": 0.12, "hspace": 0.32})
    for r, (label, qi, ranked, b) in enumerate(rows):
        qpid = int(as_np(b["query_pids"])[qi])
        gpids = as_np(b["gallery_pids"])
        ax = axes[r, 0]
        _framed(ax, _open_image(root, b["query_paths"][qi]), QUERY, 3)
        ax.set_title(f"query\nid {qpid}", fontsize=10)
        ax.set_ylabel(label, fontsize=11, rotation=90, labelpad=8)
        for c in range(1, n_cols):
            ax = axes[r, c]
            if c - 1 >= len(ranked):
                ax.axis("off")
                continue
            gi = int(ranked[c - 1])
            ok = int(gpids[gi]) == qpid
            _framed(ax, _open_image(root, b["gallery_paths"][gi]), CORRECT if ok else WRONG)
            ax.set_title(f"{c}", fontsize=10, color=CORRECT if ok else WRONG)
    handles = [Patch(facecolor="white", edgecolor=QUERY, linewidth=3, label="query"),
               Patch(facecolor="white", edgecolor=CORRECT, linewidth=3, label="same identity (correct)"),
               Patch(facecolor="white", edgecolor=WRONG, linewidth=3, label="other identity (wrong)")]
    # margins in inches, not fractions, so the footer stays clear of the images however many rows there are
    height = fig.get_size_inches()[1]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 0.05 / height))
    fig.suptitle(title or f"Top-{top_k} gallery images per query (numbers are ranks)", fontsize=14,
                 y=1 - 0.15 / height)
    fig.text(0.5, 0.6 / height, "Gallery images of the query's identity from the query's camera, and junk images, "
             "are excluded, as in the evaluation protocol. Distance: Euclidean on L2-normalised features.",
             ha="center", va="center", fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 1.0 / height, bottom=1.05 / height)
    return _save(fig, out)


def query_ranking_figure(query: str | Path, ranked: Sequence[tuple[str, float]], out: str | Path,
                         title: str = "") -> Path:
    """One query image and its ranked gallery images (path, distance), nearest first, as a PNG
    (``reid rank``). Images are shown upright (EXIF orientation applied, as the model saw them);
    captions give the rank, distance and name."""
    from PIL import Image

    from reid.data.transforms import upright

    def read(path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(upright(im).convert("RGB"))

    n_cols = len(ranked) + 1
    fig, axes = plt.subplots(1, n_cols, figsize=(1.4 * n_cols + 1.0, 4.2), squeeze=False,
                             gridspec_kw={"wspace": 0.15})
    _framed(axes[0, 0], read(query), QUERY, 3)
    axes[0, 0].set_title("query", fontsize=10)
    axes[0, 0].set_xlabel(Path(query).name, fontsize=7)
    for c, (path, distance) in enumerate(ranked, start=1):
        _framed(axes[0, c], read(path), "#555555", 1)
        axes[0, c].set_title(f"{c}\nd={distance:.3f}", fontsize=9)
        axes[0, c].set_xlabel(Path(path).name, fontsize=7)
    fig.suptitle(title or f"Top-{len(ranked)} gallery images (Euclidean distance between embeddings)", fontsize=12)
    fig.subplots_adjust(left=0.02, right=0.99, top=0.78, bottom=0.12)
    return _save(fig, out)


# ---------------------------------------------------------------- activation maps (Figure 4)

# A map with fewer rows than this cannot show where on the body a model looks (head, torso, legs).
FIGURE_MIN_ROWS = 8
# Output stride of each ResNet stage (layer1 .. layer4)
STAGE_STRIDE = {1: 4, 2: 8, 3: 16, 4: 32}


@dataclass(frozen=True)
class FigureResolution:
    """Which stage the attention figure shows, and the input size of its forward pass."""

    stage: int
    height: int
    width: int
    train_height: int
    train_width: int

    @property
    def cells(self) -> tuple[int, int]:
        stride = STAGE_STRIDE[self.stage]
        return math.ceil(self.height / stride), math.ceil(self.width / stride)

    def describe(self) -> str:
        rows, cols = self.cells
        if (self.stage, self.height, self.width) == (4, self.train_height, self.train_width):
            return (f"Layer4 outputs at the training input size, {self.height} x {self.width} ({rows} x {cols} "
                    f"cells), as in the paper's Figure 4.")
        l4 = FigureResolution(4, self.train_height, self.train_width, self.train_height, self.train_width).cells
        return (f"Layer{self.stage} outputs (after its attention, where it has one) of a forward pass at "
                f"{self.height} x {self.width}, {self.height // self.train_height}x the training input of "
                f"{self.train_height} x {self.train_width}: {rows} x {cols} cells, where layer4 at the training "
                f"size has only {l4[0]} x {l4[1]}.")


def figure_resolution(height: int, width: int, attention_layers: Sequence[int] = (3, 4)) -> FigureResolution:
    """The stage and input size of the attention figure for models trained at height x width.

    Layer4 at the training size when its map has at least FIGURE_MIN_ROWS rows (the paper's
    256 x 188 gives 8 x 6): faithful to the paper's Figure 4. Otherwise the first attention layer
    (layer3 when no model has attention) with the input enlarged by the smallest integer factor that
    gives its map at least FIGURE_MIN_ROWS rows: the CPU demo's 64 x 32 gives layer4 maps of 2 x 1
    cells, the same vertical gradient for every model, and layer3 at 128 x 64 gives 8 x 4.
    """
    if math.ceil(height / STAGE_STRIDE[4]) >= FIGURE_MIN_ROWS:
        return FigureResolution(4, height, width, height, width)
    stage = min(attention_layers) if attention_layers else 3
    scale = max(1, math.ceil(FIGURE_MIN_ROWS * STAGE_STRIDE[stage] / height))
    return FigureResolution(stage, scale * height, scale * width, height, width)


def compute_activation_maps(model, transform: Callable, images: Sequence, partners: Sequence | None = None,
                            batch_size: int = 32, stage: int = 4) -> np.ndarray:
    """(N, h, w) activation maps after residual stage ``stage`` for PIL images, via ``model.activation_maps``.

    With ``partners`` (mutual attention only) image i is seen under mutual attention with partners[i].
    """
    import torch

    if partners is not None and len(partners) != len(images):
        raise ReportInputError(f"{len(partners)} partner images for {len(images)} images")
    maps = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            batch = torch.stack([transform(im) for im in images[i:i + batch_size]])
            if partners is None:
                out = model.activation_maps(batch, stage=stage)
            else:
                partner_batch = torch.stack([transform(im) for im in partners[i:i + batch_size]])
                out = model.activation_maps(batch, partner_batch, stage=stage)
            maps.append(out.float().cpu().numpy())
    return np.concatenate(maps)


def _heat(amap: np.ndarray, height: int, width: int) -> np.ndarray:
    """The bare activation map: upsampled to height x width (bilinear), scaled to [0, 1] per image, in
    jet colours; float (height, width, 3) in [0, 1]."""
    from PIL import Image

    up = np.asarray(Image.fromarray(amap.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR))
    lo, hi = float(up.min()), float(up.max())
    up = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
    return plt.get_cmap("jet")(up)[..., :3]


def _overlay(image: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """The activation map (``_heat``) blended half and half over the image; float (h, w, 3) in [0, 1]."""
    h, w = image.shape[:2]
    return (0.5 * image / 255.0 + 0.5 * _heat(amap, h, w)).clip(0, 1)


def attention_figure(images: Sequence[np.ndarray], maps: Mapping[str, np.ndarray], out: str | Path,
                     title: str = "", partners: Sequence[np.ndarray] | None = None, note: str = "") -> Path:
    """Row 0: the inputs; [the partner images;] then two rows per label -> (N, h, w) maps: the bare
    activation map, and the same map over the input (the paper's Figure 4: "raw input, activation map
    and activation map superimposed on raw input").

    ``note`` goes into the footer (which layer, at which input size)."""
    n = len(images)
    for label, m in maps.items():
        if len(m) != n:
            raise ReportInputError(f"attention maps for {label}: {len(m)} maps for {n} images")
    plain = [("input", images)] + ([("pair partner", partners)] if partners is not None else [])
    drawn = [row for label, m in maps.items() for row in
             ((f"{label}: activation map", [_heat(m[c], *images[c].shape[:2]) for c in range(n)]),
              (f"{label}: over the input", [_overlay(images[c], m[c]) for c in range(n)]))]
    rows = plain + drawn
    n_rows = len(rows)
    fig, axes = plt.subplots(n_rows, n, figsize=(max(1.7 * n + 2.2, 8.5), 2.9 * n_rows + 0.9), squeeze=False)
    for c in range(n):
        for r, (_, imgs) in enumerate(rows):
            axes[r, c].imshow(imgs[c])
    for r, label in enumerate([name for name, _ in rows]):
        for c in range(n):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label.replace(" (", "\n(").replace(": ", ":\n"), fontsize=10)
    fig.suptitle(title or "Activation maps (channel mean of |features|), red = strongest", fontsize=14)
    footer = ("Each map is scaled to its own range and upsampled to the input's size: shown bare, then "
              "blended over the input.")
    footer = textwrap.fill(f"{note} {footer}" if note else footer, width=int(fig.get_size_inches()[0] * 11))
    lines = footer.count("\n") + 1
    fig.text(0.5, 0.01, footer, ha="center", va="bottom", fontsize=10)
    fig.tight_layout(rect=(0, 0.012 + 0.2 * lines / fig.get_size_inches()[1], 1, 1))
    return _save(fig, out)


def pick_partners(blob: dict, queries: Sequence[int]) -> list[int]:
    """For each query: the first gallery image of the same identity from another camera (a positive pair)."""
    qp, qc = blob["query_pids"], blob["query_camids"]
    gp, gc = np.asarray(blob["gallery_pids"]), np.asarray(blob["gallery_camids"])
    out = []
    for q in queries:
        match = np.flatnonzero((gp == int(qp[q])) & (gc != int(qc[q])))
        if not len(match):
            raise ReportInputError(f"query {blob['query_paths'][q]} has no same-identity gallery image")
        out.append(int(match[0]))
    return out


def attention_figure_from_files(models: Mapping[str, str | Path], features_path: Path, mean_image: Path,
                                out: str | Path, root: Path = Path("."), n_images: int = 6, seed: int = 0,
                                title: str = "") -> Path:
    """Same query images for every model: drawn from features.pt, preprocessed as at test time.

    A mutual-attention model gets two rows: each image alone (as at test time, where it is embedded
    alone) and under mutual attention with a same-identity gallery image (as in a training pair).
    The stage shown and the input size come from `figure_resolution`; the footer says which.
    """
    from PIL import Image

    from reid.data.transforms import load_eval_transform
    from reid.models.runtime import load_trained_model

    blob = load_features(features_path)
    as_np = lambda t: t.numpy() if hasattr(t, "numpy") else np.asarray(t)  # noqa: E731
    blob = {k: (as_np(v) if k.endswith(("pids", "camids")) else v) for k, v in blob.items()}
    idx = pick_queries(blob["query_pids"], blob["query_camids"], blob["gallery_pids"], blob["gallery_camids"],
                       n_images, seed)
    pil = [Image.fromarray(_open_image(root, blob["query_paths"][i])) for i in idx]
    partner_idx = pick_partners(blob, idx)
    partner_pil = [Image.fromarray(_open_image(root, blob["gallery_paths"][i])) for i in partner_idx]
    loaded, size = {}, None
    for label, path in models.items():
        model, meta = load_trained_model(path)
        if size is not None and size != (meta["height"], meta["width"]):
            raise ReportInputError(f"{path}: input size {meta['height']}x{meta['width']} differs from the other "
                                   f"models' {size[0]}x{size[1]}")
        size = (meta["height"], meta["width"])
        loaded[label] = (model, meta)
    layers = [k for model, _ in loaded.values() for k in getattr(model, "attention_layers", ())]
    res = figure_resolution(size[0], size[1], layers)
    maps, paired, without = {}, False, []
    for label, (model, meta) in loaded.items():
        # each model's own input normalisation (train.input_norm, train.mean_image_size)
        tf = load_eval_transform(mean_image, res.height, res.width, meta.get("input_normalisation"))
        variant = REGISTRY.get(str(meta.get("variant")))
        if not callable(getattr(model, "activation_maps", None)):  # a custom model need not have them
            without.append(label)
            continue
        if variant is not None and variant.attention == "mutual":
            maps[f"{label} (single image)"] = compute_activation_maps(model, tf, pil, stage=res.stage)
            maps[f"{label} (paired with partner)"] = compute_activation_maps(model, tf, pil, partner_pil,
                                                                             stage=res.stage)
            paired = True
        else:
            maps[label] = compute_activation_maps(model, tf, pil, stage=res.stage)
    # show each input at the resolution of the figure's forward pass
    shown = lambda ims: [np.asarray(im.convert("RGB").resize((res.width, res.height), Image.BILINEAR)) for im in ims]  # noqa: E731
    if not maps:
        raise ReportInputError(f"figure-attention: none of {', '.join(models)} has activation_maps(x) "
                               "(custom models need not have it)")
    note = res.describe() + (f"; not shown (no activation_maps): {', '.join(without)}" if without else "")
    return attention_figure(shown(pil), maps, out, title, partners=shown(partner_pil) if paired else None,
                            note=note)


__all__ = ["losses_figure", "cmc_figure", "ranked_figure", "ranked_gallery", "pick_queries", "attention_figure",
           "attention_figure_from_files", "compute_activation_maps", "figure_resolution", "read_history",
           "pick_partners"]
