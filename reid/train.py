"""The training stage: Siamese pair training with checkpoint/resume and seeding, reported to a tracker.

A checkpoint is written after every epoch to a folder outside the rule's declared outputs (Snakemake
deletes the outputs of a failed job, not this folder; reid.checkpoint keeps the last two and sets
damaged ones aside). A re-run of a killed job resumes from it, and so does a run whose only change is
a larger ``train.epochs``: on CPU the final weights are bit-identical to an uninterrupted run with the
same seed, because all randomness is either derived from (seed, epoch, sample) or saved in the
checkpoint, and the learning rate depends on the epoch index only.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from reid import contracts, io, schedules, tracking
from reid.checkpoint import Checkpointer
from reid.config import checkpoint_keys, config_hash, result_keys
from reid.data.market import TRAIN_DIR, Record
from reid.data.pairs import PairDataset, training_records
from reid.data.transforms import training_augment
from reid.models.probe import probe
from reid.models.runtime import autocast, load_trained_model, select_device
from reid.typed_config import ModelConfig, TrainConfig

log = logging.getLogger("reid.train")

HISTORY_COLUMNS = ["epoch", "lr", "loss_total", "loss_id", "loss_verif", "acc_id", "acc_verif",
                   "images_per_s", "seconds"]


def lr_at(epoch: int, cfg: dict) -> float:
    """The learning rate of ``epoch`` (counted from 0): config train.lr_decay's schedule (reid.schedules)."""
    return schedules.learning_rate(epoch, cfg)


@dataclass
class TrainOutputs:
    model: Path
    history: Path
    run_info: Path  # run.json: the run's provenance (reid.files.load_run_info)


def _sigterm_to_exit(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")


def train(*, data_root: Path, mean_image: Path, dataset: str, variant: str, seed: int,
          model_cfg: ModelConfig, train_cfg: TrainConfig, tracker: tracking.Tracker, outputs: TrainOutputs,
          checkpoint_dir: Path, threads: int = 1, reading: str | None = None,
          custom_model: dict | None = None) -> dict:
    """Train one model, resuming from ``checkpoint_dir`` (see reid.checkpoint); returns the history rows.

    ``train_cfg`` is the config's ``train`` section (runtime keys ``workers`` and ``device``
    included), ``model_cfg`` its ``model`` section, both typed and schema-complete
    (reid.typed_config: build them with ``from_dict``, which fills every default). The run is reported to ``tracker``
    (reid.tracking: MLflow, or the null tracker) and described in ``outputs.run_info`` (run.json),
    written last. ``reading`` (a name of reid.readings) names the run and tags it; ``model_cfg``
    must already hold its overrides. ``variant`` is a name of the registry (reid.variants); a custom
    model's builder gets ``{"model": model_cfg, "train": train_cfg, "custom_models": {variant:
    custom_model}}`` (``custom_model``: its config ``custom_models.<variant>`` entry) and its output
    is checked at every step (reid.models.custom).
    """
    from reid.models import custom
    from reid.models.builder import builder_meta
    from reid.variants import get_variant

    # every key present (the schema's defaults filled once, by from_dict): no fallbacks below
    model_cfg, train_cfg = model_cfg.as_dict(), train_cfg.as_dict()
    torch.set_num_threads(max(1, threads))
    device = select_device(train_cfg["device"])
    autocast(device, train_cfg["precision"])  # a bad value fails here, before any work
    contracts.check_training_precision(device, train_cfg["precision"])
    cuda = device.type == "cuda"
    records, pid_to_label = training_records(data_root)
    augment, normalisation = training_augment(mean_image, [r.path for r in records], train_cfg)
    data = PairDataset(records, pid_to_label, augment, seed, train_cfg["positive_pairs"])
    data_digest = training_data_digest(records, data_root)
    spec = get_variant(variant)
    build_config = {"model": model_cfg, "train": train_cfg}
    if not spec.builtin:
        build_config["custom_models"] = {variant: dict(custom_model or {"entry": spec.builder})}
    # another builder under the same name is another model: its own hash, no resuming the old one's
    # checkpoint (the built-ins' hashes stay what they were)
    builder = () if spec.builtin else (build_config["custom_models"][variant]["entry"],)
    chash = config_hash(dataset, variant, seed, result_keys(model_cfg, "model"), result_keys(train_cfg, "train"),
                        *builder)
    checkpoints = Checkpointer(checkpoint_dir, config_hash(dataset, variant, seed, checkpoint_keys(model_cfg, "model"),
                                                           checkpoint_keys(train_cfg, "train"), data_digest, *builder),
                               train_cfg["epochs"])
    resume = checkpoints.load()

    torch.manual_seed(seed)
    model = custom.build(spec, len(pid_to_label), build_config)
    # every model, the paper's included, is rebuilt from its builder (reid.models.builder)
    described = {"builder": builder_meta(spec, len(pid_to_label), build_config)}
    check = None
    if not spec.builtin:  # another package's model: its forward output is checked at every step

        def check(out, batch):
            custom.check_pair_output(out, batch, len(pid_to_label), spec.builder)
    model.to(device)
    model.to(memory_format=torch.channels_last)  # faster on CUDA and, measured here, ~1.7x on CPU
    # every path the model will take (training, test embedding, LoggedModel), once, before the work
    probe(model, num_classes=len(pid_to_label), height=train_cfg["height"], width=train_cfg["width"], device=device,
          precision=train_cfg["precision"], verification_weight=train_cfg["verification_weight"],
          what=f"model variant {variant!r}" if spec.builtin else spec.builder)
    optimizer = torch.optim.SGD(model.parameters(), lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                                weight_decay=train_cfg["weight_decay"])
    history = _restore(resume.state, model, optimizer, cuda)
    log.info("%s %s seed %d: checkpoint %s; %d of %d epochs to train", dataset, variant, seed, resume.summary,
             train_cfg["epochs"] - resume.epochs_done, train_cfg["epochs"])

    run = tracker.start_training(
        dataset=dataset,
        run_name=f"{reading or variant}-seed{seed}-train",
        params={"dataset": dataset, "variant": variant, "seed": seed, "num_classes": len(pid_to_label),
                "train_images": len(records), "model": model_cfg, "train": train_cfg},
        # a reading's runs are told apart from the main runs, and from each other, by rule and reading
        tags={"dataset": dataset, "model": variant, "seed": seed, "config_hash": chash,
              "rule": "train_reading" if reading else "train", "checkpoint": resume.summary,
              **({"resumed_from_epoch": resume.epochs_done,
                  "resumed_from_run": resume.state.get("mlflow_run_id", "unknown")} if resume.epochs_done else {}),
              **({"reading": reading} if reading else {})},
        key_tags=("dataset", "model", "seed", "rule", "reading"),
        entry_point="python -m reid train",
        # every attempt of this training (retry, resume, rerun) continues the same tracked run
        identity=tracking.training_identity(chash, checkpoints.key, reading),
    )
    old_handler = signal.signal(signal.SIGTERM, _sigterm_to_exit)
    status = "FAILED"
    try:
        run.log_input_dataset(f"{dataset}/train", data_digest, str(Path(data_root) / TRAIN_DIR))
        for row in history:  # a resumed run replays the earlier epochs so the run is complete on its own
            run.on_epoch_end(row)
        saver = _CheckpointSaver(checkpoints, model, optimizer, history, cuda, chash, run.run_id)
        fit(model, optimizer, data, train_cfg, device, history, start_epoch=resume.epochs_done,
            callbacks=[saver, run], check=check)  # the checkpoint first: a tracker failure costs no epoch
        meta = {**described, "height": train_cfg["height"], "width": train_cfg["width"],
                "dataset": dataset, "variant": variant, "seed": seed, "config_hash": chash,
                "precision": train_cfg["precision"], "input_normalisation": normalisation,
                "label_to_pid": {v: k for k, v in pid_to_label.items()}}
        contracts.check_finite_weights(model.state_dict(), outputs.model)
        # model.pt and history.csv as one unit (both replaced, or neither); run.json after the tracker
        io.commit_together({outputs.history: history_writer(history),
                            outputs.model: io.torch_writer({"state_dict": {k: v.cpu() for k, v in
                                                                           model.state_dict().items()},
                                                            "meta": meta}, outputs.model.name)})
        run.on_trained(outputs.history, lambda: _exported_model(outputs.model, mean_image, records))
        # written last: its presence says the model, the history and the tracker's record are complete
        io.write_json(outputs.run_info, {"dataset": dataset, "model": variant, "seed": seed, "config_hash": chash,
                                         "git_commit": tracking.git_commit(), "tracking": tracker.kind,
                                         **({"reading": reading} if reading else {}), **run.provenance()})
        status = "FINISHED"
        return history
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM from Snakemake/SLURM cancelling the job
        status = "KILLED"
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        run.finish(status)


class _CheckpointSaver:
    """A fit-loop callback: the checkpoint after every epoch (weights, optimizer, RNG, history)."""

    def __init__(self, checkpoints: Checkpointer, model, optimizer, history: list[dict], cuda: bool, chash: str,
                 run_id: str | None):
        self.checkpoints, self.model, self.optimizer, self.history = checkpoints, model, optimizer, history
        self.cuda, self.chash, self.run_id = cuda, chash, run_id

    def on_epoch_end(self, row: dict) -> None:
        self.checkpoints.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                               "epoch": int(row["epoch"]) - 1, "rng_cpu": torch.get_rng_state(),
                               "rng_cuda": torch.cuda.get_rng_state() if self.cuda else None,
                               "history": self.history, "config_hash": self.chash,
                               # which tracked run a resumed one continues (its resumed_from_run tag)
                               **({"mlflow_run_id": self.run_id} if self.run_id else {})})


def fit(model, optimizer, data: PairDataset, cfg: dict, device, history: list[dict], *, start_epoch: int = 0,
        callbacks=(), check=None) -> list[dict]:
    """The fit loop: epochs ``start_epoch`` to ``cfg["epochs"] - 1`` (0-based). After each one its row
    (HISTORY_COLUMNS; ``epoch`` 1-based) is appended to ``history`` and every callback's
    ``on_epoch_end(row)`` is called, in order (train() passes the checkpoint, then the tracker's
    run). ``check(out, batch)``, when given, judges every step's ``forward`` result (a custom
    model's, reid.models.custom). Returns ``history``."""
    from reid.models import pair_loss

    for epoch in range(start_epoch, cfg["epochs"]):
        row = _train_epoch(model, optimizer, data, epoch, cfg, device, pair_loss, check)
        contracts.check_epoch(row, model)  # finite losses and weights, before anything records the epoch
        history.append(row)
        for callback in callbacks:
            callback.on_epoch_end(row)
    return history


def training_data_digest(records: list[Record], data_root: str | Path) -> str:
    """Short hash of the training split: each image's path below ``data_root`` and its size in bytes.

    Part of the checkpoint key (a re-prepared dataset with the same files keeps its checkpoints, one
    with other files does not) and the digest of MLflow's training input dataset.
    """
    root = Path(data_root)
    return config_hash([(Path(r.path).relative_to(root).as_posix(), os.path.getsize(r.path)) for r in records])


def _restore(state: dict | None, model, optimizer, cuda: bool) -> list[dict]:
    """Load a checkpoint's weights, optimizer and RNG state; returns its history (empty: no checkpoint)."""
    if state is None:
        return []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_cpu"])
    if cuda and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"])
    return list(state["history"])


def _exported_model(model_file: Path, mean_image: Path, records: list[Record], examples: int = 4):
    """The trained model as a tracker keeps it: (net, example batch, name, params, tags, extra code paths:
    a custom model's source, reid.models.custom.code_paths). Rebuilt from
    the model file just written, so that the tracker holds the very weights the pipeline evaluates;
    the example batch (the served model's signature) is real training images."""
    from reid.data.transforms import load_eval_transform
    from reid.models.custom import code_paths
    from reid.models.export import EmbeddingNet
    from reid.models.options import ModelOptions

    model, meta = load_trained_model(model_file)
    transform = load_eval_transform(mean_image, meta["height"], meta["width"], meta.get("input_normalisation"))
    batch = torch.stack([transform(r.path) for r in records[:examples]])
    entry = meta["builder"]["entry"]
    options = getattr(model, "options", None)
    if isinstance(options, ModelOptions):  # the paper's model: its options say what it is
        described = {"backbone": options.backbone, "embedding_dim": options.embedding_dim,
                     "test_embedding": options.test_embedding}
    else:  # another model: its builder, whose module MLflow keeps beside the reid package
        described = {"builder": entry}
    extra_code = code_paths(entry)
    return (EmbeddingNet(model), batch, f"{meta['variant']}-seed{meta['seed']}",
            {"variant": meta["variant"], "seed": meta["seed"], **described,
             "height": meta["height"], "width": meta["width"]},
            {"dataset": meta["dataset"], "model": meta["variant"], "seed": meta["seed"],
             "config_hash": meta["config_hash"]}, extra_code)


def _train_epoch(model, optimizer, data: PairDataset, epoch: int, cfg: dict, device, pair_loss, check=None) -> dict:
    cuda = device.type == "cuda"
    lr = lr_at(epoch, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    data.set_epoch(epoch)
    loader = DataLoader(data, batch_size=cfg["batch_pairs"], shuffle=False, drop_last=len(data) > cfg["batch_pairs"],
                        num_workers=cfg["workers"], pin_memory=cuda, persistent_workers=False)
    model.train()
    sums = {k: 0.0 for k in ("total", "id", "verif", "id_acc", "verif_acc")}
    batches, images, t0 = 0, 0, time.perf_counter()
    n_batches = len(loader)
    for xa, xb, la, lb, same in loader:
        xa, xb = xa.to(device, non_blocking=True), xb.to(device, non_blocking=True)
        la, lb, same = la.to(device), lb.to(device), same.to(device)
        xa = xa.contiguous(memory_format=torch.channels_last)
        xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg["precision"]):
            out = model(xa, xb)
            if check is not None:
                check(out, xa.shape[0])
            losses = pair_loss(out, la, lb, same, verification_weight=cfg["verification_weight"])
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        for k in sums:
            sums[k] += float(losses[k].detach())
        batches += 1
        images += 2 * xa.shape[0]
        if batches % 10 == 0 or batches == n_batches:
            dt = time.perf_counter() - t0
            rate = images / dt
            eta = (n_batches - batches) * dt / batches + (cfg["epochs"] - epoch - 1) * dt * n_batches / batches
            print(f"epoch {epoch + 1}/{cfg['epochs']} batch {batches}/{n_batches} loss {sums['total'] / batches:.4f} "
                  f"{rate:.1f} img/s ETA {_fmt_seconds(eta)}", flush=True)
    seconds = time.perf_counter() - t0
    b = max(batches, 1)
    return {"epoch": epoch + 1, "lr": lr, "loss_total": sums["total"] / b, "loss_id": sums["id"] / b,
            "loss_verif": sums["verif"] / b, "acc_id": sums["id_acc"] / b, "acc_verif": sums["verif_acc"] / b,
            "images_per_s": images / seconds if seconds > 0 else math.nan, "seconds": seconds}


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def write_history(history: list[dict], path: Path) -> None:
    """history.csv (HISTORY_COLUMNS, one row per epoch), written atomically."""
    io.atomic_write(path, history_writer(history))


def history_writer(history: list[dict]):
    """A ``write(tmp)`` of history.csv for reid.io.commit_together."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
            w.writeheader()
            for row in history:
                w.writerow({k: row[k] for k in HISTORY_COLUMNS})

    return write
