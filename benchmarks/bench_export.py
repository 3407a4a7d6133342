"""Inference throughput of an exported model: ONNX Runtime against PyTorch eager on the CPU, images/s.

    python benchmarks/bench_export.py                        # demo model and ResNet-50 at 256x128
    python benchmarks/bench_export.py --configs demo --parity # + worst parity difference per variant

Configs: ``demo`` is config.yaml's model (mutual, ResNet-18, 64x32, 512-d embedding), ``resnet50``
the paper preset's (mutual, ResNet-50, 256x128, 512-d). Weights are random (Kaiming attention, so
the attention maps are not zero): throughput does not depend on them. Each model is exported with
``reid.export_onnx.export_model`` (parity-checked like ``reid export``), then timed at one thread and
at all threads (``os.cpu_count()``): PyTorch eager on a contiguous batch (what the LoggedModel runs),
PyTorch eager channels-last (what ``reid extract`` runs), and ONNX Runtime (CPU provider, default
graph optimisations); wall and process CPU time per image are printed. The three are timed in interleaved rounds and the median round is reported, so
that load from other processes hits all of them alike.

``--parity`` exports every built-in variant and test embedding of each config on real images (a
small synthetic dataset rendered at 128x64, preprocessed as ``reid extract`` does) and prints the
worst |ONNX Runtime - PyTorch| of the export's parity check (docs/files.md quotes the numbers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid import export_onnx, variants  # noqa: E402
from reid.models import build_model  # noqa: E402
from reid.models.export import EmbeddingNet  # noqa: E402

CONFIGS = {"demo": dict(backbone="resnet18", height=64, width=32, batch=32),
           "resnet50": dict(backbone="resnet50", height=256, width=128, batch=16)}
# every paper variant (the strong baseline: tests/recipes/test_bot.py), then the mutual model's other
# test embeddings and its pair path
PARITY_CASES = [(v.name, {}) for v in variants.BUILTIN if v.builtin] + [
    ("mutual", {"test_embedding": "mutual_self"}), ("mutual", {"test_embedding": "plain"}),
    ("mutual", {"test_embedding": "mutual_self", "identification_path": "pair"})]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--batches", type=int, default=2, help="timed batches per engine and round")
    parser.add_argument("--threads", nargs="+", type=int, default=None,
                        help="thread counts to time (default: 1 and os.cpu_count())")
    parser.add_argument("--parity", action="store_true", help="also the worst parity difference of every variant")
    return parser.parse_args(argv)


def _model(backbone: str, variant: str = "mutual", **options) -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: "no pretrained weights" is the point
        return build_model(variant, 751, backbone=backbone, embedding_dim=512, attention_init="kaiming",
                           **options).eval()


def _engines(model: torch.nn.Module, graph: bytes, threads: int) -> dict:
    """name -> function(batch) running one batch."""
    net = EmbeddingNet(model)
    net_cl = EmbeddingNet(_copy_channels_last(model))
    session = export_onnx.onnx_session(graph, threads)

    def eager(batch):
        with torch.inference_mode():
            return net(batch)

    def eager_cl(batch):
        with torch.inference_mode():
            return net_cl(batch.contiguous(memory_format=torch.channels_last))

    return {"pytorch eager": eager, "pytorch channels-last": eager_cl,
            "onnxruntime": lambda batch: export_onnx.run_onnx(session, batch.numpy())}


def _copy_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def time_config(name: str, cfg: dict, thread_counts: list[int], rounds: int, batches: int) -> list[tuple]:
    """Rows (config, threads, engine, images/s, wall ms per image, process CPU ms per image) for one config.

    Process CPU time (all threads of this process) is less sensitive to other jobs on a shared
    machine than wall time; at one thread it is the work itself."""
    model = _model(cfg["backbone"])
    batch = torch.randn(cfg["batch"], 3, cfg["height"], cfg["width"], generator=torch.Generator().manual_seed(0))
    graph, worst = export_onnx.export_model(model, batch, {}, name, threads=max(thread_counts))
    print(f"# {name}: exported ({len(graph) / 2**20:.1f} MiB), parity on random images {worst:.2e}", flush=True)
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        engines = _engines(model, graph, threads)
        for run in engines.values():  # warm-up: allocations, ONNX Runtime's first-run planning
            run(batch)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in engines}
        n = batches * batch.shape[0]
        for _ in range(rounds):
            for engine, run in engines.items():
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(batches):
                    run(batch)
                times[engine].append(((time.perf_counter() - t0) / n, (time.process_time() - c0) / n))
        for engine, per_image in times.items():
            s = statistics.median(t for t, _ in per_image)
            cpu = statistics.median(c for _, c in per_image)
            rows.append((name, threads, engine, 1.0 / s, 1000.0 * s, 1000.0 * cpu))
            print(f"{name:9s} threads={threads:<2d} {engine:22s} {1.0 / s:8.1f} img/s  {1000.0 * s:7.2f} ms/img  "
                  f"{1000.0 * cpu:7.2f} CPU ms/img", flush=True)
    return rows


def parity_table(configs: list[str]) -> list[tuple]:
    """Rows (config, case, worst difference) on real (synthetic) images."""
    from reid.data.market import TRAIN_DIR, scan_split
    from reid.data.synthetic import synthesize
    from reid.data.transforms import compute_mean_image
    from reid.files.mean_image import write_mean_image

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp) / "data"
        synthesize(root, seed=1501, train_ids=12, test_ids=20, cameras=6, cameras_per_id=[2, 4],
                   images_per_camera=[1, 2], distractors=8, junk=4, multi_query_images=[2, 2], height=128, width=64)
        mean = Path(tmp) / "mean_image.pt"
        write_mean_image(compute_mean_image([r.path for r in scan_split(root / TRAIN_DIR)]), mean)
        for name in configs:
            cfg = CONFIGS[name]
            images = export_onnx.parity_images(root, mean, cfg["height"], cfg["width"], export_onnx.PARITY_IMAGES)
            for variant, options in PARITY_CASES:
                case = "/".join([variant, *options.values()])
                _, worst = export_onnx.export_model(_model(cfg["backbone"], variant, **options), images, {}, case,
                                                    threads=os.cpu_count() or 1)
                rows.append((name, case, worst))
                print(f"parity {name:9s} {case:28s} {worst:.2e} (max abs, {images.shape[0]} images)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or sorted({1, os.cpu_count() or 1})
    print(f"# CPU: {os.cpu_count()} logical cores, torch {torch.__version__}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    for name in args.configs:
        time_config(name, CONFIGS[name], threads, args.rounds, args.batches)
    if args.parity:
        parity_table(args.configs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
