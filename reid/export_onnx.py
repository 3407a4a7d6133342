"""The export stage: a trained model's test path as an ONNX graph, checked in ONNX Runtime before it is written.

The graph computes what the MLflow LoggedModel computes (reid.models.export.EmbeddingNet) and what
``reid extract`` computes for one image before its flip test: ``F.normalize(model.embed(x).float())``.

- Input ``images``: float32 (N, 3, H, W), N free (the batch axis is dynamic), H x W the training
  size (model.pt ``meta``), preprocessed as the pipeline does (``PREPROCESSING``; the constants it
  needs are in the file's metadata, so a caller needs neither this package nor the dataset).
- Output ``embeddings``: float32 (N, D), each row of unit L2 norm; rank a gallery by the Euclidean
  (or cosine) distance between them.
- Metadata (``metadata_props``, all strings): ``METADATA_KEYS``, see docs/files.md.

The preprocessing stays outside the graph: the graph's input is the LoggedModel's input, so the two
deployments of a model take the same arrays. Parity: before anything is written, ONNX Runtime (CPU)
runs the graph on a batch of real test images of the model's dataset and on one image alone, and
every embedding must equal PyTorch's within ``PARITY_TOLERANCE`` (max absolute difference); else
``ParityError`` and nothing is written (an existing file is left as it was: reid.io writes atomically).

The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``): it exports
every built-in variant in under a second, names an operator it cannot express
(``UnsupportedOperatorError``), and needs no ``onnxscript``; the torch.export-based exporter (torch's
default since 2.9) gave the same parity here but needs onnxscript and took 3-6 s per variant.
"""

from __future__ import annotations

import base64
import io as _bytes_io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reid import files, io

FORMATS = ("onnx",)
OPSET = 17  # ONNX opset of the graph: ONNX Runtime >= 1.14, TensorRT >= 8.6, OpenVINO >= 2022.3 read it
PARITY_TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| over every element of the L2-normalised embeddings
INPUT_NAME, OUTPUT_NAME = "images", "embeddings"
PARITY_IMAGES = 32  # default number of real test images the parity check runs
PREPROCESSING = (
    "x = (resize(rgb, H, W) - mean_image) / std[:, None, None], float32, channels first, batched as (N, 3, H, W). "
    "rgb: the image's RGB channels as (3, h, w) float32 in [0, 1] (8-bit values / 255). "
    "resize: bilinear with antialiasing, in float32 (torch.nn.functional.interpolate(mode='bilinear', "
    "align_corners=False, antialias=True), or PIL's Image.resize((W, H), BILINEAR) of each channel as a float32 "
    "image: equal within 2e-7); skipped when the image already is H x W; resizing the 8-bit image instead "
    "moves pixels by up to 1/255. mean_image: metadata 'mean_image', the training split's mean image at H x W, "
    "base64 of float32 little-endian values in C order, shape (3, H, W). std: metadata 'std', the training "
    "split's per-channel standard deviation [R, G, B] (JSON).")
METADATA_KEYS = ("format", "opset", "dataset", "variant", "seed", "config_hash", "height", "width", "embedding_dim",
                 "test_embedding", "trained_precision", "input", "output", "preprocessing", "mean_image", "std",
                 "parity_max_abs_diff", "parity_images", "exporter")


class ExportError(ValueError):
    """A model whose test path cannot become an ONNX graph; the message names the model and the operation."""


class ParityError(ExportError):
    """The ONNX graph's embeddings differ from PyTorch's by more than PARITY_TOLERANCE: nothing was written."""


@dataclass(frozen=True)
class ExportResult:
    out: Path
    max_abs_diff: float  # worst |ONNX Runtime - PyTorch| over the parity batches
    images: int  # real images in the parity batch
    metadata: dict
    logged: str | None  # where the tracker keeps the file (MLflow: artifact path of the training run), or None


def pipeline_inputs(model_file: str | Path, dataset: str) -> tuple[Path, Path]:
    """(data folder, mean image) of a pipeline model ``results/<dataset>/<model>/seed<seed>/model.pt`` or
    of the readings ablation's ``results/<dataset>/readings/<reading>/seed<seed>/model.pt``:
    ``data/<dataset>`` beside ``results/``, and ``results/<dataset>/mean_image.pt``. The folder
    ``<dataset>`` under a folder ``results`` is looked for among the file's parents; elsewhere, three
    levels up stands for it."""
    path = Path(model_file).resolve()
    dataset_dir = next((a for a in path.parents if a.name == dataset and a.parent.name == "results"),
                       path.parent.parent.parent)  # .parent never fails, even at the root
    return dataset_dir.parent.parent / "data" / dataset, dataset_dir / "mean_image.pt"


def parity_images(data_root: str | Path, mean_image: str | Path, height: int, width: int,
                  count: int = PARITY_IMAGES) -> torch.Tensor:
    """(n, 3, height, width) float32: ``count`` test images (query, then gallery, evenly spaced over
    both) preprocessed as ``reid extract`` does; n = min(count, test images). Raises
    FileNotFoundError naming the folder when it is missing or holds no test image."""
    from reid.data.market import scan_dataset
    from reid.data.transforms import load_eval_transform

    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: the dataset folder for the parity check is not there; give it with --data")
    splits = scan_dataset(root)
    records = list(splits.get("query", [])) + list(splits.get("gallery", []))
    if not records:
        raise FileNotFoundError(f"{root}: no query or gallery image for the parity check")
    picks = np.unique(np.linspace(0, len(records) - 1, num=min(count, len(records))).round().astype(int))
    transform = load_eval_transform(mean_image, height, width)
    return torch.stack([transform(records[i].path) for i in picks])


def preprocessing_metadata(mean_image: str | Path, height: int, width: int) -> dict[str, str]:
    """The constants of PREPROCESSING for a model trained at height x width: ``mean_image`` (base64,
    float32 little-endian, C order, (3, height, width)) and ``std`` (JSON [R, G, B])."""
    from reid.data.transforms import Normalizer
    from reid.files import load_mean_image

    norm = Normalizer(load_mean_image(mean_image), height, width)
    mean = np.ascontiguousarray(norm.mean.numpy(), dtype="<f4")
    return {"preprocessing": PREPROCESSING, "mean_image": base64.b64encode(mean.tobytes()).decode("ascii"),
            "std": json.dumps([float(v) for v in norm.std.flatten()])}


def to_onnx(net: torch.nn.Module, example: torch.Tensor, who: str) -> bytes:
    """``net`` (images -> embeddings) traced on ``example`` as a serialised ONNX graph, opset OPSET,
    dynamic batch axis. Raises ExportError naming ``who`` and the operator the exporter cannot express."""
    buffer = _bytes_io.BytesIO()
    try:
        with warnings.catch_warnings():
            # the legacy exporter's deprecation notice, and tracer notes on shape checks that only
            # raise (LowRankMap): the parity check below is what says the graph is right
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(net, (example,), buffer, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)
    except torch.onnx.errors.UnsupportedOperatorError as e:
        op = re.search(r"operator '([^']+)'", str(e))
        raise ExportError(f"{who}: cannot be exported to ONNX: its test path (embed) uses the operator "
                          f"{op.group(1) if op else '?'!r}, which has no ONNX opset {OPSET} form in torch's exporter "
                          f"({_first_line(e)}); write embed(x) with other operations") from None
    except Exception as e:  # the exporter's other failures (tracing, shapes): name the model and the cause
        raise ExportError(f"{who}: cannot be exported to ONNX: {type(e).__name__}: {_first_line(e)}") from None
    return buffer.getvalue()


def onnx_session(graph: bytes | str | Path, threads: int = 1):
    """An ONNX Runtime CPU session of a serialised graph (or a file), ``threads`` threads per operator."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = max(1, threads), 1
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnx(session, images: np.ndarray) -> np.ndarray:
    """float32 (N, D) ``embeddings`` of ``images`` (float32 (N, 3, H, W)) from an ``onnx_session``."""
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})[0]


def check_parity(graph: bytes, net: torch.nn.Module, images: torch.Tensor, who: str, threads: int = 1) -> float:
    """The worst |ONNX Runtime - PyTorch| over the embeddings of ``images`` (one batch) and of its first
    image alone (a graph fixed to the traced batch size fails here). Raises ParityError above
    PARITY_TOLERANCE or for a non-finite embedding, ExportError when ONNX Runtime cannot run the graph."""
    worst = 0.0
    try:
        session = onnx_session(graph, threads)
    except Exception as e:  # onnxruntime's own exception types
        raise ExportError(f"{who}: ONNX Runtime cannot load the exported graph: {_first_line(e)}") from None
    for batch in (images, images[:1]):
        with torch.inference_mode():
            expected = net(batch).numpy()
        try:
            got = run_onnx(session, batch.numpy())
        except Exception as e:  # onnxruntime's own exception types
            raise ExportError(f"{who}: ONNX Runtime cannot run the exported graph on a batch of {batch.shape[0]} "
                              f"image(s): {_first_line(e)}") from None
        if got.shape != expected.shape:
            raise ParityError(f"{who}: the ONNX graph returned shape {got.shape} for a batch of {batch.shape[0]}, "
                              f"PyTorch {expected.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
        if not diff <= PARITY_TOLERANCE:  # NaN fails too
            raise ParityError(f"{who}: ONNX Runtime's embeddings differ from PyTorch's by up to {diff:.3g} "
                              f"(max abs, batch of {batch.shape[0]}) > {PARITY_TOLERANCE:g}: not written")
        worst = max(worst, diff)
    return worst


def export_model(model: torch.nn.Module, images: torch.Tensor, metadata: dict[str, str], who: str,
                 threads: int = 1) -> tuple[bytes, float]:
    """A model's test path (``EmbeddingNet(model)``) as a checked ONNX graph: (serialised graph with
    ``metadata`` and the parity result in its metadata_props, worst difference).

    ``images``: float32 (N, 3, H, W) preprocessed images (N >= 1) for the trace and the parity check.
    ``who`` names the model in errors. Raises CustomModelError when ``embed`` does not return (B, D),
    ExportError / ParityError as ``to_onnx`` / ``check_parity``.
    """
    import onnx

    from reid.models.custom import check_embedding
    from reid.models.export import EmbeddingNet

    torch.set_num_threads(max(1, threads))
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    with torch.inference_mode():
        emb = model.embed(images[:2])
        check_embedding(emb, min(2, images.shape[0]), who)
    net = EmbeddingNet(model)
    example = images[:2] if images.shape[0] > 1 else images.repeat(2, 1, 1, 1)
    graph = to_onnx(net, example, who)
    worst = check_parity(graph, net, images, who, threads)
    proto = onnx.load_from_string(graph)
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.dim_param:
            raise ExportError(f"{who}: the exported graph's {value.name} has a fixed batch axis ({dim.dim_value})")
    props = {**metadata, "opset": str(OPSET), "embedding_dim": str(emb.shape[1]), "parity_max_abs_diff": f"{worst:.3g}",
             "parity_images": str(images.shape[0]), "exporter": f"torch {torch.__version__} torch.onnx (dynamo=False)"}
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = "reid-mutual-attention: a trained re-ID model's test path (L2-normalised embeddings)"
    onnx.checker.check_model(proto)
    return proto.SerializeToString(), worst


def export_model_file(*, model_path: str | Path, out: str | Path, data_root: str | Path | None = None,
                      mean_image: str | Path | None = None, images: int = PARITY_IMAGES,
                      test_embedding: str | None = None, threads: int = 1, tracker=None) -> ExportResult:
    """Export model.pt's test path to ONNX at ``out`` after the parity check (``export_model``).

    ``data_root`` / ``mean_image`` default to the pipeline's (``pipeline_inputs``). ``test_embedding``
    (mutual models: single | mutual_self | plain) exports another single-image path of the same
    weights, as ``reid extract --test-embedding``. With ``tracker`` (reid.tracking) and a run.json
    beside model.pt, the file is recorded with the model's training run (``Tracker.log_export``).
    Raises FileNotFoundError / DamagedFileError for missing or damaged inputs, ValueError for an ``out``
    that is the model file or a choice the model does not have, ExportError / ParityError (nothing written).
    """
    from reid.models.runtime import load_trained_model
    from reid.variants import REGISTRY

    model_path, out = Path(model_path), Path(out)
    if out.resolve() == model_path.resolve():
        raise ValueError(f"{out}: --out is the model file itself")
    model, meta = load_trained_model(model_path, "cpu")
    default_data, default_mean = pipeline_inputs(model_path, str(meta.get("dataset")))
    data_root, mean_image = Path(data_root or default_data), Path(mean_image or default_mean)
    if not mean_image.is_file():
        raise FileNotFoundError(f"{mean_image}: the training mean image is not there; give it with --mean-image "
                                "(results/<dataset>/mean_image.pt)")
    who = f"{model_path} ({meta['builder']['entry']})"
    variant = REGISTRY.get(str(meta.get("variant")))
    if test_embedding is not None:
        if not callable(getattr(model, "set_test_embedding", None)):
            raise ValueError(f"{model_path}: model {meta.get('variant')!r} embeds test images one way only; "
                             f"--test-embedding {test_embedding!r} does not apply")
        model.set_test_embedding(test_embedding)
    chooses = variant is not None and variant.chooses_test_embedding
    batch = parity_images(data_root, mean_image, meta["height"], meta["width"], images)
    metadata = _model_metadata(meta, model.test_embedding if chooses else "single")
    metadata.update(preprocessing_metadata(mean_image, meta["height"], meta["width"]))
    graph, worst = export_model(model, batch, metadata, who, threads)
    written = _metadata_of(graph)
    io.write_bytes(out, graph)
    logged = None
    run_info = model_path.parent / "run.json"
    if tracker is not None and run_info.is_file():
        logged = tracker.log_export(files.load_run_info(run_info), out)
    return ExportResult(out=out, max_abs_diff=worst, images=int(batch.shape[0]), metadata=written, logged=logged)


def _model_metadata(meta: dict, test_embedding: str) -> dict[str, str]:
    return {"format": "reid-onnx-embedding 1", "dataset": str(meta.get("dataset")), "variant": str(meta.get("variant")),
            "seed": str(meta.get("seed")), "config_hash": str(meta.get("config_hash")),
            "height": str(meta["height"]), "width": str(meta["width"]),
            "test_embedding": test_embedding, "trained_precision": str(meta.get("precision", "fp32")),
            "input": f"{INPUT_NAME}: float32 (N, 3, {meta['height']}, {meta['width']}), preprocessed (see preprocessing)",
            "output": f"{OUTPUT_NAME}: float32 (N, D), unit L2 norm per row; the graph computes in float32"}


def _metadata_of(graph: bytes) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load_from_string(graph).metadata_props}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
