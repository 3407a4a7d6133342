"""An estimate of the GPU time and memory the paper preset needs, made on a machine without a GPU.

    python benchmarks/estimate_paper_cost.py                    # presets/paper.yaml over config.yaml
    python benchmarks/estimate_paper_cost.py --sustained-tflops 60 150

What is counted (on the CPU, independent of this machine's speed), for one training step of each
model at the preset's backbone, input size, batch and identities, under bf16 autocast as training
runs on CUDA:

- FLOPs of forward + backward (torch.utils.flop_counter), hence FLOPs per image;
- bytes of the tensors autograd saves for the backward pass (torch.autograd.graph.saved_tensors_hooks):
  the activation memory of one step; plus the weights, gradients and SGD momentum in fp32.

What is assumed, and printed: the images per epoch (one pair per training image, reid.data.pairs),
the preset's epochs, and a sustained throughput in TFLOP/s (a fraction of a GPU's bf16 peak: about
25-50% of an A100's 312 is typical for a ResNet-50 training loop that is not input-bound). GPU hours
= FLOPs of the whole training / sustained throughput. Memory = weights + gradients + momentum +
saved activations + 1 GiB for the CUDA context, cuDNN workspace and the allocator's slack (an
allowance, not a measurement). Feature extraction and evaluation are a few minutes on top.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reid.data.kinds import kind_of  # noqa: E402
from reid.models import build_model, pair_loss  # noqa: E402

GIB = 1024 ** 3


def merged_config(preset: Path) -> dict:
    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return out

    return merge(yaml.safe_load((ROOT / "config.yaml").read_text()), yaml.safe_load(preset.read_text()))


def measure_step(variant: str, cfg: dict, num_classes: int, pairs: int) -> tuple[float, int, int]:
    """(FLOPs, bytes saved for backward, parameter count) of one training step of ``pairs`` pairs."""
    m, t = cfg["model"], cfg["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: FLOPs and shapes do not depend on them
        model = build_model(variant, num_classes, backbone=m["backbone"], embedding_dim=m["embedding_dim"],
                            dropout=m["dropout"], attention_layers=tuple(m["attention_layers"]),
                            test_embedding=m["test_embedding"], identification_path=m["identification_path"],
                            attention_norm=m["attention_norm"], attention_init=m["attention_init"],
                            verification_norm=m["verification_norm"], pretrained=None)
    model.train().to(memory_format=torch.channels_last)
    x = [torch.randn(pairs, 3, t["height"], t["width"]).contiguous(memory_format=torch.channels_last) for _ in (0, 1)]
    la = torch.randint(0, num_classes, (pairs,))
    same = torch.arange(pairs) % 2 == 0
    lb = torch.where(same, la, (la + 1) % num_classes)
    saved: dict[int, int] = {}

    def pack(tensor):
        # count each storage once (views of one tensor share it); parameters are counted apart
        if not isinstance(tensor, torch.nn.Parameter):
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as training runs on CUDA (reid.train)
            out = model(*x)
            losses = pair_loss(out, la, lb, same, verification_weight=t["verification_weight"])
        losses["total"].backward()
    return float(counter.get_total_flops()), sum(saved.values()), sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", type=Path, default=ROOT / "presets" / "paper.yaml")
    ap.add_argument("--sustained-tflops", type=float, nargs="+", default=[78.0, 156.0],
                    help="assumed sustained bf16 throughput (default: 25%% and 50%% of an A100's 312 TFLOP/s)")
    ap.add_argument("--measure-pairs", type=int, default=2, help="pairs in the counted step (FLOPs scale linearly)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.measure_pairs < 2:
        ap.error("--measure-pairs must be at least 2: the verification head's batch norm needs two pairs")
    torch.set_num_threads(args.threads)
    cfg = merged_config(args.preset)
    t = cfg["train"]
    pairs = t["batch_pairs"]
    print(f"# {args.preset.name}: {cfg['model']['backbone']} at {t['height']}x{t['width']}, {pairs} pairs per step, "
          f"{t['epochs']} epochs, bf16 autocast; counted on {args.measure_pairs} pairs, scaled to {pairs}")
    tflops = args.sustained_tflops
    print(f"{'dataset':<14}{'model':<10}{'train img':>10}{'steps':>8}{'GFLOP/img':>10}{'PFLOP':>8}"
          + "".join(f"{f'h @{v:g}TF':>10}" for v in tflops) + f"{'act GiB':>9}{'mem GiB':>9}")
    totals = [0.0] * len(tflops)
    for dataset in cfg["datasets"]:
        known = kind_of(cfg["dataset"][dataset])
        if known is None or not known.splits or "train" not in known.splits:
            print(f"{dataset}: no published training-split size known, skipped")
            continue
        train = known.splits["train"]
        for variant in cfg["models"]:
            flops, saved, params = measure_step(variant, cfg, train.identities, args.measure_pairs)
            scale = pairs / args.measure_pairs
            per_image = flops / (2 * args.measure_pairs)
            images = 2 * train.images * t["epochs"]  # one pair per training image and epoch
            steps = t["epochs"] * (train.images // pairs)
            hours = [per_image * images / (v * 1e12) / 3600 for v in tflops]
            totals = [a + b for a, b in zip(totals, hours)]
            memory = (saved * scale + 3 * 4 * params) / GIB + 1.0
            print(f"{dataset:<14}{variant:<10}{train.images:>10}{steps:>8}{per_image / 1e9:>10.1f}"
                  f"{per_image * images / 1e15:>8.1f}" + "".join(f"{h:>10.2f}" for h in hours)
                  + f"{saved * scale / GIB:>9.1f}{memory:>9.1f}")
    print(f"{'all trainings, 1 seed':<42}{'':>8}" + "".join(f"{h:>10.2f}" for h in totals)
          + f"   (x {len(cfg['seeds'])} seed(s) in the preset)")


if __name__ == "__main__":
    main()
