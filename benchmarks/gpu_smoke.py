"""The CUDA path in minutes: the paper preset's model trained in fp32 and bf16, then extraction and re-ranking.

    python benchmarks/gpu_smoke.py                 # on a CUDA machine: at most ~5 minutes
    python benchmarks/gpu_smoke.py --tiny --device cpu   # the same code paths, ResNet-18 at tiny sizes, on CPU

What it runs, through the pipeline's own functions (reid.train.train, reid.features.extract,
reid.evaluate.compute_metrics), on a synthetic dataset in Market-1501 layout written to a
temporary folder (nothing can be downloaded: the backbone starts from random weights, not ImageNet):

1. the mutual-attention model of presets/paper.yaml (ResNet-50 at 256 x 188, 32 pairs a batch, its
   pinned readings) and of presets/paper-literal.yaml (attention on f itself, no batch norm before
   the verification layer), each in fp32 and in bf16 autocast: --steps training steps (5 epochs of
   40 batches by default), with channels_last, DataLoader workers and pinned memory as in a real run;
2. feature extraction (flip test) of query, gallery and multi-query images on the GPU with the
   pinned bf16 and fp32 models, and evaluation with k-reciprocal re-ranking on the GPU.

It prints images/s, peak GPU memory, the first and last epoch losses and whether they stayed finite,
and Rank-1/mAP (meaningless on random data after a few hundred steps; they must only be valid).
Exit status 1 when something is wrong: an exception, non-finite losses with the pinned readings,
non-finite features, metrics outside [0, 1], or bf16 features that do not agree with fp32 ones of
the same weights. Non-finite losses with the literal readings are reported, not failed: that is the
instability docs/model.md (choices 3 and 3b) describes. Without CUDA (and without --device cpu)
it says so and exits 0.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET_S = 300


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cpu runs the same code paths (use with --tiny); default cuda")
    p.add_argument("--tiny", action="store_true",
                   help="ResNet-18 at 32 x 24, 8 training identities, 4 pairs a batch, 1 epoch: "
                        "a CPU check of the script")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per run (default 5; --tiny: 1)")
    p.add_argument("--keep", default=None, help="write the work folder here instead of a temporary one")
    return p.parse_args(argv)


def merged_preset(name: str) -> dict:
    """config.yaml with presets/<name> merged over it, validated as the Snakefile does."""
    from reid.config_checks import validate

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for key, value in yaml.safe_load((ROOT / "presets" / name).read_text()).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return validate(cfg, source=f"presets/{name}")


def make_dataset(work: Path, tiny: bool) -> tuple[Path, Path, int]:
    """(data root, mean image, training images) of a synthetic dataset like the CPU demo's."""
    from reid.data.market import TRAIN_DIR, scan_split
    from reid.data.synthetic import synthesize
    from reid.data.transforms import compute_mean_image
    from reid.files.mean_image import write_mean_image

    root = work / "data"
    size = dict(train_ids=8, test_ids=6, distractors=4, junk=3) if tiny else \
        dict(train_ids=300, test_ids=150, distractors=300, junk=150)
    synthesize(root, seed=1501, cameras=6, cameras_per_id=[2, 4], images_per_camera=[1, 2],
               multi_query_images=[2, 4], height=128, width=64, **size)
    train = [r.path for r in scan_split(root / TRAIN_DIR) if r.pid > 0]
    mean = work / "mean_image.pt"
    write_mean_image(compute_mean_image(train), mean)
    return root, mean, len(train)


def finite(history: list[dict]) -> bool:
    return all(math.isfinite(row[k]) for row in history for k in ("loss_total", "loss_id", "loss_verif"))


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device here: nothing to check (run with --tiny --device cpu for the CPU paths).")
        return 0
    t_start = time.perf_counter()
    cuda = args.device == "cuda"
    print(f"# torch {torch.__version__}, device {torch.cuda.get_device_name() if cuda else 'cpu'}")
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            run_all(args, work, cuda, problems)
        except Exception:  # any crash of a CUDA path is the finding
            traceback.print_exc()
            problems.append("an exception (traceback above)")
    wall = time.perf_counter() - t_start
    over = cuda and wall > BUDGET_S  # the budget is the GPU's; a CPU run only checks the script
    budget = f" (budget on a GPU {BUDGET_S} s)" if cuda else ""
    print(f"\nwall clock {wall:.0f} s{budget}" + (": OVER BUDGET" if over else ""))
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("OK: every CUDA path ran and gave finite, valid numbers" if cuda else "OK (CPU run of the same paths)")
    return 0


def run_all(args, work: Path, cuda: bool, problems: list[str]) -> None:
    import torch

    from reid import tracking
    from reid.evaluate import compute_metrics
    from reid.features import extract
    from reid.files import load_features
    from reid.train import TrainOutputs, train
    from reid.typed_config import ModelConfig, TrainConfig

    t0 = time.perf_counter()
    data, mean, n_train = make_dataset(work, args.tiny)
    print(f"synthetic dataset: {n_train} training images, written in {time.perf_counter() - t0:.1f} s")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    tracking.init_store(uri, ["smoke-synthetic"])

    epochs = args.epochs or (1 if args.tiny else 5)
    runs = {}
    header = f"{'run':<24}{'steps':>6}{'images/s':>10}{'peak GiB':>10}{'loss first':>12}{'loss last':>11}{'finite':>8}"
    print("\n" + header)
    for preset, label in (("paper.yaml", "pinned"), ("paper-literal.yaml", "literal")):
        cfg = merged_preset(preset)
        model_cfg = {**cfg["model"], "pretrained": None}  # no download possible: random initialisation
        for precision in ("fp32", "bf16"):
            train_cfg = {**cfg["train"], "precision": precision, "epochs": epochs, "lr_step": epochs + 1,
                         "device": args.device, "workers": min(cfg["train"]["workers"], os.cpu_count() or 1)}
            if args.tiny:
                train_cfg.update(height=32, width=24, batch_pairs=4)
                model_cfg["backbone"] = "resnet18"
            name = f"{label}-{precision}"
            out = work / name
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "randomly initialised": intended here
                history = train(data_root=data, mean_image=mean, dataset="synthetic", variant="mutual", seed=0,
                                model_cfg=ModelConfig.from_dict(model_cfg),
                                train_cfg=TrainConfig.from_dict(train_cfg),
                                tracker=tracking.MlflowTracker("smoke", uri),
                                outputs=TrainOutputs(out / "model.pt", out / "history.csv", out / "run.json"),
                                checkpoint_dir=out / "ckpt", threads=os.cpu_count() or 1)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            steps = epochs * (n_train // train_cfg["batch_pairs"])
            seconds = sum(r["seconds"] for r in history)
            rate = sum(r["images_per_s"] * r["seconds"] for r in history) / seconds
            ok = finite(history)
            runs[name] = out / "model.pt"
            print(f"{name:<24}{steps:>6}{rate:>10.1f}{peak:>10.2f}{history[0]['loss_total']:>12.4f}"
                  f"{history[-1]['loss_total']:>11.4f}{'yes' if ok else 'NO':>8}")
            if not ok and label == "pinned":
                problems.append(f"{name}: non-finite losses with the pinned readings")
            elif not ok:
                print(f"  ({name}: the literal reading diverged, as docs/model.md choices 3 and 3b describe)")

    print(f"\n{'extraction + evaluation':<24}{'images/s':>10}{'eval s':>8}{'Rank-1':>8}{'mAP':>8}{'RR Rank-1':>10}")
    features = {}
    for name in ("pinned-fp32", "pinned-bf16"):
        out = work / name / "features.pt"
        t0 = time.perf_counter()
        counts = extract(model_path=runs[name], data_root=data, mean_image=mean, out=out, batch_size=256,
                         device=args.device, threads=os.cpu_count() or 1, flip=True)
        t_extract = time.perf_counter() - t0
        feats = load_features(out)
        features[name] = feats
        for key in ("query_feats", "gallery_feats", "mq_feats"):
            if key in feats and not torch.isfinite(feats[key]).all():
                problems.append(f"{name}: non-finite {key}")
        t0 = time.perf_counter()
        metrics = compute_metrics(feats, max_rank=50, rerank={"k1": 20, "k2": 6, "lambda": 0.3},
                                  device=args.device)
        t_eval = time.perf_counter() - t0
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not 0.0 <= v <= 1.0]
        if bad:
            problems.append(f"{name}: metrics outside [0, 1] or NaN: {', '.join(bad)}")
        images = 2 * sum(counts.values())  # flip test: each image and its mirror image
        print(f"{name:<24}{images / t_extract:>10.1f}{t_eval:>8.1f}{100 * metrics['rank1']:>8.2f}"
              f"{100 * metrics['mAP']:>8.2f}{100 * metrics['rerank/rank1']:>10.2f}")

    # the same bf16 weights embedded in bf16 and in fp32 must agree closely (cosine of features)
    import torch.nn.functional as F

    from reid.models.runtime import load_trained_model
    from reid.data.market import scan_dataset
    from reid.data.transforms import load_eval_transform
    from reid.features import embed_records
    from reid.models.runtime import select_device

    device = select_device(args.device)
    model, meta = load_trained_model(runs["pinned-bf16"], device)
    model.to(memory_format=torch.channels_last)
    records = scan_dataset(data)["query"][:256]
    tf = load_eval_transform(mean, meta["height"], meta["width"])
    low = embed_records(model, records, tf, 128, device, precision="bf16")
    high = embed_records(model, records, tf, 128, device, precision="fp32")
    cosine = F.cosine_similarity(low, high, dim=1)
    print(f"\npinned-bf16 weights, bf16 vs fp32 features of {len(records)} queries: "
          f"cosine min {cosine.min():.4f}, mean {cosine.mean():.4f}")
    if not bool((cosine > 0.98).all()):
        problems.append(f"bf16 and fp32 features of the same weights disagree (min cosine {cosine.min():.4f})")


if __name__ == "__main__":
    raise SystemExit(main())
