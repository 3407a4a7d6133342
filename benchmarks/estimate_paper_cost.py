"""An estimate of the GPU time and memory the paper preset needs, made on a machine without a GPU.

    python benchmarks/estimate_paper_cost.py                    # presets/paper.yaml over config.yaml
    python benchmarks/estimate_paper_cost.py --sustained-tflops 60 150
    python benchmarks/estimate_paper_cost.py --preset presets/paper.yaml presets/bot.yaml   # + the strong baseline

What is counted (on the CPU, independent of this machine's speed), for one training step of each
model at the preset's backbone, input size, batch and identities, under bf16 autocast as training
runs on CUDA:

- FLOPs of forward + backward (torch.utils.flop_counter), hence FLOPs per image;
- bytes of the tensors autograd saves for the backward pass (torch.autograd.graph.saved_tensors_hooks):
  the activation memory of one step; plus the weights, gradients and SGD momentum in fp32.

What is assumed, and printed: the images per epoch (one pair per training image, reid.data.pairs;
for the strong baseline ``bot``, each image about once, in P x K batches of config ``bot:``, and its
weights, gradients and two Adam moments), the preset's epochs, and a sustained throughput in TFLOP/s (a fraction of a GPU's bf16 peak: about
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


def merged_config(*presets: Path) -> dict:
    """config.yaml with the presets merged over it in order (as ``--configfile a b`` does)."""
    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return out

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for preset in presets:
        cfg = merge(cfg, yaml.safe_load(preset.read_text()))
    return cfg


def measure_bot_step(cfg: dict, num_classes: int, images: int) -> tuple[float, int, int]:
    """As ``measure_step`` for the strong baseline (reid.models.bot, reid.recipes.bot): one step on
    ``images`` images (P x K) with its identity, triplet and center losses."""
    from reid.models.bot import BotModel
    from reid.recipes.bot import CenterLoss, batch_hard_triplet_loss
    from reid.typed_config import BotConfig

    b = BotConfig.from_dict(cfg.get("bot") or {})
    model = BotModel(num_classes, backbone=cfg["model"]["backbone"], last_stride=b.last_stride, neck=b.neck,
                     neck_feat=b.neck_feat).train().to(memory_format=torch.channels_last)
    x = torch.randn(images, 3, b.height, b.width).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(images) // max(1, images // 2)  # two identities: the triplet loss has both kinds
    center = CenterLoss(num_classes, model.feature_dim)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = (torch.nn.functional.cross_entropy(out["logits"].float(), labels, label_smoothing=b.label_smoothing)
                + batch_hard_triplet_loss(out["feature"].float(), labels, b.triplet_margin)
                + b.center_loss_weight * center(out["feature"].float(), labels))
        loss.backward()

    return count_step(step, model)


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

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as training runs on CUDA (reid.train)
            out = model(*x)
            losses = pair_loss(out, la, lb, same, verification_weight=t["verification_weight"])
        losses["total"].backward()

    return count_step(step, model)


def count_step(step, model: torch.nn.Module) -> tuple[float, int, int]:
    """(FLOPs, bytes saved for backward, parameter count) of ``step()``, one forward and backward."""
    saved: dict[int, int] = {}

    def pack(tensor):
        # count each storage once (views of one tensor share it); parameters are counted apart
        if not isinstance(tensor, torch.nn.Parameter):
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return float(counter.get_total_flops()), sum(saved.values()), sum(p.numel() for p in model.parameters())


def _estimate(variant: str, cfg: dict, train, measure_pairs: int, tflops: list[float]) -> tuple[list[float], str]:
    """(GPU hours at each throughput, the table line after dataset and model) of one model's training."""
    if variant == "bot":  # the strong baseline: its own recipe, batches and epochs (config bot:)
        from reid.typed_config import BotConfig

        b = BotConfig.from_dict(cfg.get("bot") or {})
        batch, measured = b.identities_per_batch * b.images_per_identity, 2 * measure_pairs
        flops, saved, params = measure_bot_step(cfg, train.identities, measured)
        per_image, epochs = flops / measured, b.epochs
        images, steps = train.images * epochs, epochs * (train.images // batch)
        memory = (saved * batch / measured + 4 * 4 * params) / GIB + 1.0  # weights, gradients, two Adam moments
        act = saved * batch / measured
    else:
        t = cfg["train"]
        pairs = t["batch_pairs"]
        flops, saved, params = measure_step(variant, cfg, train.identities, measure_pairs)
        per_image = flops / (2 * measure_pairs)
        images = 2 * train.images * t["epochs"]  # one pair per training image and epoch
        steps = t["epochs"] * (train.images // pairs)
        act = saved * pairs / measure_pairs
        memory = (act + 3 * 4 * params) / GIB + 1.0
    hours = [per_image * images / (v * 1e12) / 3600 for v in tflops]
    return hours, (f"{train.images:>10}{steps:>8}{per_image / 1e9:>10.1f}{per_image * images / 1e15:>8.1f}"
                   + "".join(f"{h:>10.2f}" for h in hours) + f"{act / GIB:>9.1f}{memory:>9.1f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", type=Path, nargs="+", default=[ROOT / "presets" / "paper.yaml"],
                    help="presets merged over config.yaml in this order (e.g. presets/paper.yaml presets/bot.yaml)")
    ap.add_argument("--sustained-tflops", type=float, nargs="+", default=[78.0, 156.0],
                    help="assumed sustained bf16 throughput (default: 25%% and 50%% of an A100's 312 TFLOP/s)")
    ap.add_argument("--measure-pairs", type=int, default=2, help="pairs in the counted step (FLOPs scale linearly)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.measure_pairs < 2:
        ap.error("--measure-pairs must be at least 2: the verification head's batch norm needs two pairs")
    torch.set_num_threads(args.threads)
    cfg = merged_config(*args.preset)
    t = cfg["train"]
    pairs = t["batch_pairs"]
    print(f"# {' + '.join(p.name for p in args.preset)}: {cfg['model']['backbone']} at {t['height']}x{t['width']}, {pairs} pairs per step, "
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
            hours, line = _estimate(variant, cfg, train, args.measure_pairs, tflops)
            totals = [a + b for a, b in zip(totals, hours)]
            print(f"{dataset:<14}{variant:<10}" + line)
    print(f"{'all trainings, 1 seed':<42}{'':>8}" + "".join(f"{h:>10.2f}" for h in totals)
          + f"   (x {len(cfg['seeds'])} seed(s) in the preset)")


if __name__ == "__main__":
    main()
