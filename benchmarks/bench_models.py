"""Training throughput of each model variant: images/s of a full SGD step (forward, loss, backward, update).

    python benchmarks/bench_models.py                      # resnet18, 64x32, 32 pairs per batch
    python benchmarks/bench_models.py --paper              # resnet50, 256x128, 8 pairs, few steps
    python benchmarks/bench_models.py --device cuda --batch-pairs 32 --paper --channels-last --amp

Variants are timed in interleaved rounds (ide, baseline, ..., ide, baseline, ...) and the median
round is reported, so that load from other processes on a shared machine hits all of them alike.
Columns: wall-clock step time and images/s; process CPU seconds per step (less sensitive to other
jobs on a shared machine than wall time, exact with --threads 1); the step time relative to the
baseline (the issue asks mutual <= 1.15x); with --flops, the FLOPs of one step (forward + backward,
counted by torch.utils.flop_counter: independent of the machine's load) and their ratio.

``mutual_id_on_pair`` is the mutual model with ``identification_path="pair"`` (and test embedding
``mutual_self``): both losses on the mutual-attention path, so layer4 runs once per image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid.models import VARIANTS, build_model, pair_loss  # noqa: E402

# bench-only name: the mutual variant trained with identification_path="pair" (docs/model.md, "Cost")
ID_ON_PAIR = "mutual_id_on_pair"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="resnet50 at 256x128, 8 pairs, 2 steps x 3 rounds")
    parser.add_argument("--backbone", default=None, choices=["resnet18", "resnet34", "resnet50"])
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch-pairs", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--variants", nargs="+", default=[*VARIANTS, ID_ON_PAIR], choices=[*VARIANTS, ID_ON_PAIR])
    parser.add_argument("--attention-layers", nargs="+", type=int, default=[3, 4])
    parser.add_argument("--test-embedding", default="single")
    parser.add_argument("--num-classes", type=int, default=751, help="training identities (Market-1501: 751)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--flops", action="store_true", help="also count the FLOPs of one training step")
    args = parser.parse_args(argv)
    small = dict(backbone="resnet18", height=64, width=32, batch_pairs=32, steps=5, rounds=3)
    paper = dict(backbone="resnet50", height=256, width=128, batch_pairs=8, steps=2, rounds=3)
    for key, value in (paper if args.paper else small).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def make_step(args: argparse.Namespace, variant: str):
    device = torch.device(args.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random init is the point here
        id_on_pair = variant == ID_ON_PAIR
        model = build_model(
            "mutual" if id_on_pair else variant,
            args.num_classes,
            backbone=args.backbone,
            attention_layers=args.attention_layers,
            test_embedding="mutual_self" if id_on_pair else args.test_embedding,
            identification_path="pair" if id_on_pair else "single",
        ).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    b = args.batch_pairs
    shape = (b, 3, args.height, args.width)
    x1 = torch.randn(shape, device=device).to(memory_format=memory_format)
    x2 = torch.randn(shape, device=device).to(memory_format=memory_format)
    pid1 = torch.randint(0, args.num_classes, (b,), device=device)
    same = torch.arange(b, device=device) % 2 == 0
    pid2 = torch.where(same, pid1, (pid1 + 1) % args.num_classes)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            out = model(x1, x2)
        losses = pair_loss(out, pid1, pid2, same)
        losses["total"].backward()
        optimizer.step()

    return step


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = {variant: make_step(args, variant) for variant in args.variants}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    synchronize(args.device)
    wall: dict[str, list[float]] = {variant: [] for variant in args.variants}
    cpu: dict[str, list[float]] = {variant: [] for variant in args.variants}
    for _ in range(args.rounds):
        for variant, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step()
            synchronize(args.device)
            wall[variant].append((time.perf_counter() - start) / args.steps)
            cpu[variant].append((time.process_time() - start_cpu) / args.steps)
    flops = {variant: count_flops(step) for variant, step in steps.items()} if args.flops else {}
    images = 2 * args.batch_pairs
    print(
        f"# {args.backbone} {args.height}x{args.width}, {args.batch_pairs} pairs/step, device {args.device}, "
        f"threads {torch.get_num_threads()}, channels_last {args.channels_last}, bf16 {args.amp}, "
        f"attention {args.attention_layers}, median of {args.rounds} rounds x {args.steps} steps"
    )
    header = ("variant", "step s", "images/s", "cpu s", "x base", "x base cpu", "GFLOP", "x base")[: 8 if flops else 6]
    print("".join(f"{name:{'<' if i == 0 else '>'}{width}}" for i, (name, width) in enumerate(zip(header, WIDTHS))))
    for variant in args.variants:
        step_s, cpu_s = statistics.median(wall[variant]), statistics.median(cpu[variant])
        row = f"{variant:<18}{step_s:>9.4f}{images / step_s:>10.1f}{cpu_s:>9.3f}"
        row += _ratio(step_s, wall, 8) + _ratio(cpu_s, cpu, 12)
        if flops:
            row += f"{flops[variant] / 1e9:>9.2f}" + _ratio(flops[variant], {"baseline": [flops.get("baseline", 0)]}, 8)
        print(row)


WIDTHS = (18, 9, 10, 9, 8, 12, 9, 8)


def count_flops(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def _ratio(value: float, table: dict[str, list[float]], width: int) -> str:
    if not table.get("baseline") or not table["baseline"][0]:
        return f"{'-':>{width}}"
    return f"{value / statistics.median(table['baseline']):>{width}.3f}"


if __name__ == "__main__":
    main()
