"""The training stage: a model built by its variant, trained by its recipe, with checkpoint/resume and seeding,
reported to a tracker.

Building and running are apart. ``build_training`` makes everything a run needs: the training split,
the model (its variant's builder, reid.variants), the recipe's plan (the variant's training recipe,
reid.recipes: sampler, augmentation, losses, optimiser and schedule), the run's identity
(reid.checkpoint.RunIdentity) and its checkpoints. ``run_training`` runs the one loop (``fit``) with
its callbacks (the tracker's run, then the checkpoint) and writes the outputs.

A checkpoint is written after every epoch to a folder outside the rule's declared outputs (Snakemake
deletes the outputs of a failed job, not this folder; reid.checkpoint keeps the last two and sets
damaged ones aside). A re-run of a killed job resumes from it, and so does a run whose only change is
a larger number of epochs: on CPU the final weights are bit-identical to an uninterrupted run with the
same seed, because all randomness is either derived from (seed, epoch, sample) or saved in the
checkpoint, and the learning rate depends on the epoch index only.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from reid import contracts, io, tracking
from reid.checkpoint import Checkpointer, Resume, RunIdentity
from reid.config import config_hash
from reid.data.market import TRAIN_DIR, Record
from reid.data.pairs import training_records
from reid.files import load_mean_image
from reid.files.history import history_writer
from reid.files.model_file import model_meta, model_writer
from reid.files.run_info import write_run_info
from reid.models.probe import probe
from reid.models.runtime import autocast, load_trained_model, select_device
from reid.recipes.base import Plan, Setting
from reid.typed_config import ModelConfig, Section, TrainConfig

log = logging.getLogger("reid.train")

# The columns every history.csv has around its recipe's own (reid.recipes.base.Plan.columns).
LEADING_COLUMNS = ("epoch", "lr")
TRAILING_COLUMNS = ("images_per_s", "seconds")


@dataclass
class TrainOutputs:
    model: Path
    history: Path
    run_info: Path  # run.json: the run's provenance (reid.files.load_run_info)


@dataclass
class Training:
    """One training run, built and not yet run (``build_training``).

    ``described``: what model.pt's meta records to rebuild the model (its ``builder``); ``sections``: the config sections the run reads, as the schema spells
    them (hashed in ``identity``, recorded as the tracker's params); ``history``: the rows of the
    epochs a checkpoint already holds.
    """

    dataset: str
    data_root: Path
    records: list[Record]
    pid_to_label: dict[int, int]
    identity: RunIdentity
    sections: dict[str, dict]
    model: torch.nn.Module
    plan: Plan
    described: dict
    precision: str
    checkpoints: Checkpointer
    resume: Resume
    history: list[dict]
    data_digest: str
    cuda: bool

    @property
    def columns(self) -> list[str]:
        return [*LEADING_COLUMNS, *self.plan.columns, *TRAILING_COLUMNS]


def _sigterm_to_exit(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")


def train(*, data_root: Path, mean_image: Path, dataset: str, variant: str, seed: int,
          model_cfg: ModelConfig, train_cfg: TrainConfig, tracker: tracking.Tracker, outputs: TrainOutputs,
          checkpoint_dir: Path, threads: int = 1, reading: str | None = None,
          custom_model: dict | None = None, recipe_cfg: Section | None = None) -> list[dict]:
    """Train one model, resuming from ``checkpoint_dir`` (see reid.checkpoint); returns the history rows.

    ``train_cfg`` is the config's ``train`` section (runtime keys ``workers`` and ``device``
    included), ``model_cfg`` its ``model`` section, both typed and schema-complete
    (reid.typed_config: build them with ``from_dict``, which fills every default); ``recipe_cfg`` the
    section of the variant's recipe when it has one (reid.recipes: ``bot:`` for the strong baseline).
    The run is reported to ``tracker`` (reid.tracking: MLflow, or the null tracker) and described in
    ``outputs.run_info`` (run.json), written last. ``reading`` (a name of reid.readings) names the
    run and tags it; ``model_cfg`` must already hold its overrides. ``variant`` is a name of the
    registry (reid.variants); a custom model's builder gets ``{"model": ..., "train": ...,
    "custom_models": {variant: custom_model}}`` (``custom_model``: its config
    ``custom_models.<variant>`` entry) and its output is checked at every step (reid.models.custom).
    """
    training = build_training(data_root=data_root, mean_image=mean_image, dataset=dataset, variant=variant,
                              seed=seed, model_cfg=model_cfg, train_cfg=train_cfg, checkpoint_dir=checkpoint_dir,
                              threads=threads, custom_model=custom_model, recipe_cfg=recipe_cfg)
    return run_training(training, tracker=tracker, outputs=outputs, mean_image=mean_image, reading=reading)


# ---------------------------------------------------------------- building

def build_training(*, data_root: Path, mean_image: Path, dataset: str, variant: str, seed: int,
                   model_cfg: ModelConfig, train_cfg: TrainConfig, checkpoint_dir: Path, threads: int = 1,
                   custom_model: dict | None = None, recipe_cfg: Section | None = None) -> Training:
    """Everything one run needs, restored from its checkpoint when one fits (see ``train`` for the
    arguments). Raises ValueError for a bad precision or a recipe section that is missing or extra."""
    from reid import recipes
    from reid.variants import get_variant

    torch.set_num_threads(max(1, threads))
    device = select_device(train_cfg.device)
    autocast(device, train_cfg.precision)  # a bad value fails here, before any work
    contracts.check_training_precision(device, train_cfg.precision)
    spec = get_variant(variant)
    recipe = recipes.get(spec.recipe)
    sections = _sections(recipe, model_cfg, train_cfg, recipe_cfg)
    custom_entry = None if spec.builtin else dict(custom_model or {"entry": spec.builder})
    builder = None if custom_entry is None else custom_entry["entry"]
    identity = RunIdentity(dataset, variant, seed, sections, builder)
    records, pid_to_label = training_records(data_root)
    data_digest = training_data_digest(records, data_root)

    torch.manual_seed(seed)
    model, described = _build_model(spec, len(pid_to_label), sections, custom_entry)
    model.to(device)
    model.to(memory_format=torch.channels_last)  # faster on CUDA and, measured here, ~1.7x on CPU
    setting = Setting(records, pid_to_label, load_mean_image(mean_image), seed, device, train_cfg, recipe_cfg,
                      custom_entry=builder, mean_image=Path(mean_image))
    plan = recipes.planner(recipe.name)(model, setting)
    # every path the model will take (training, test embedding, LoggedModel), once, before the work
    probe(model, num_classes=len(pid_to_label), height=plan.height, width=plan.width, device=device,
          precision=train_cfg.precision, verification_weight=train_cfg.verification_weight,
          what=f"model variant {variant!r}" if spec.builtin else spec.builder, paths=plan.probe_paths)
    checkpoints = Checkpointer.for_run(checkpoint_dir, identity, data_digest, plan.epochs)
    resume = checkpoints.load()
    cuda = device.type == "cuda"
    history = _restore(resume.state, model, plan, cuda)
    log.info("%s %s seed %d: checkpoint %s; %d of %d epochs to train", dataset, variant, seed, resume.summary,
             plan.epochs - resume.epochs_done, plan.epochs)
    return Training(dataset, Path(data_root), records, pid_to_label, identity, sections, model, plan, described,
                    train_cfg.precision, checkpoints, resume, history, data_digest, cuda)


def _sections(recipe, model_cfg: ModelConfig, train_cfg: TrainConfig, recipe_cfg: Section | None) -> dict:
    """The config sections the run reads (``model``, ``train``, the recipe's own), as the schema spells them."""
    if (recipe.section is None) != (recipe_cfg is None):
        raise ValueError(f"training recipe {recipe.name!r} " + (f"needs its config section {recipe.section!r}"
                         if recipe_cfg is None else "has no config section of its own, but one was given"))
    sections = {"model": model_cfg.as_dict(), "train": train_cfg.as_dict()}
    if recipe.section is not None:
        sections[recipe.section] = recipe_cfg.as_dict()
    return sections


def _build_model(spec, num_classes: int, sections: dict, custom_entry: dict | None):
    """(the untrained model, what model.pt's meta records to rebuild it: its builder, reid.models.builder);
    ``custom_entry``: the config ``custom_models:`` entry of a model the package does not define, else None."""
    from reid.models import custom
    from reid.models.builder import builder_meta

    build_config = {"model": sections["model"], "train": sections["train"]}
    if custom_entry is not None:
        build_config["custom_models"] = {spec.name: custom_entry}
    for name, value in sections.items():  # a recipe's own section reaches its model's builder too
        build_config.setdefault(name, value)
    model = custom.build(spec, num_classes, build_config)
    # every model, the paper's included, is rebuilt from its builder (reid.models.builder)
    return model, {"builder": builder_meta(spec, num_classes, build_config)}


def _restore(state: dict | None, model, plan: Plan, cuda: bool) -> list[dict]:
    """Load a checkpoint's weights, optimizer and RNG state; returns its history (empty: no checkpoint)."""
    if state is None:
        return []
    model.load_state_dict(state["model"])
    plan.load_optimizer_state(state["optimizer"])
    torch.set_rng_state(state["rng_cpu"])
    if cuda and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"])
    return list(state["history"])


# ---------------------------------------------------------------- running

def run_training(training: Training, *, tracker: tracking.Tracker, outputs: TrainOutputs, mean_image: Path,
                 reading: str | None = None) -> list[dict]:
    """Run ``training`` to its last epoch, reported to ``tracker``; write model.pt, history.csv and,
    last, run.json. A SIGTERM (Snakemake or SLURM cancelling the job) marks the run KILLED."""
    t = training
    run = _start_run(t, tracker, reading)
    old_handler = signal.signal(signal.SIGTERM, _sigterm_to_exit)
    status = "FAILED"
    try:
        run.log_input_dataset(f"{t.dataset}/train", t.data_digest, str(t.data_root / TRAIN_DIR))
        for row in t.history:  # a resumed run replays the earlier epochs so the run is complete on its own
            run.on_epoch_end(row)
        saver = CheckpointSaver(t, run.run_id)
        # the checkpoint first: a tracker failure costs no epoch
        fit(t.plan, t.history, start_epoch=t.resume.epochs_done, callbacks=[saver, run])
        _commit_outputs(t, outputs)
        run.on_trained(outputs.history, lambda: _exported_model(outputs.model, mean_image, t.records))
        # written last: its presence says the model, the history and the tracker's record are complete
        ident = t.identity
        write_run_info(outputs.run_info, dataset=ident.dataset, model=ident.variant, seed=ident.seed,
                       config_hash=ident.config_hash, git_commit=tracking.git_commit(), tracking=tracker.kind,
                       reading=reading, provenance=run.provenance())
        status = "FINISHED"
        return t.history
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM from Snakemake/SLURM cancelling the job
        status = "KILLED"
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        run.finish(status)


def _start_run(t: Training, tracker: tracking.Tracker, reading: str | None):
    ident, resume = t.identity, t.resume
    return tracker.start_training(
        dataset=ident.dataset,
        run_name=f"{reading or ident.variant}-seed{ident.seed}-train",
        params={"dataset": ident.dataset, "variant": ident.variant, "seed": ident.seed,
                "num_classes": len(t.pid_to_label), "train_images": len(t.records), **t.sections},
        # a reading's runs are told apart from the main runs, and from each other, by rule and reading
        tags={"dataset": ident.dataset, "model": ident.variant, "seed": ident.seed, "config_hash": ident.config_hash,
              "rule": "train_reading" if reading else "train", "checkpoint": resume.summary,
              **({"resumed_from_epoch": resume.epochs_done,
                  "resumed_from_run": resume.state.get("mlflow_run_id", "unknown")} if resume.epochs_done else {}),
              **({"reading": reading} if reading else {})},
        key_tags=("dataset", "model", "seed", "rule", "reading"),
        entry_point="python -m reid train",
        # every attempt of this training (retry, resume, rerun) continues the same tracked run
        identity=tracking.training_identity(ident.config_hash, t.checkpoints.key, reading),
    )


def _commit_outputs(t: Training, outputs: TrainOutputs) -> None:
    """model.pt and history.csv as one unit (both replaced, or neither), weights checked finite first;
    run.json comes after the tracker."""
    ident = t.identity
    meta = model_meta(t.described, height=t.plan.height, width=t.plan.width, dataset=ident.dataset,
                      variant=ident.variant, seed=ident.seed, config_hash=ident.config_hash, precision=t.precision,
                      pid_to_label=t.pid_to_label, input_normalisation=t.plan.normalisation)
    contracts.check_finite_weights(t.model.state_dict(), outputs.model)
    io.commit_together({outputs.history: history_writer(t.history, t.columns),
                        outputs.model: model_writer(t.model.state_dict(), meta, outputs.model.name)})


class CheckpointSaver:
    """A fit-loop callback: the checkpoint after every epoch (weights, optimiser, RNG, history)."""

    def __init__(self, training: Training, run_id: str | None):
        self.training, self.run_id = training, run_id

    def on_epoch_end(self, row: dict) -> None:
        t = self.training
        t.checkpoints.save({"model": t.model.state_dict(), "optimizer": t.plan.optimizer_state(),
                            "epoch": int(row["epoch"]) - 1, "rng_cpu": torch.get_rng_state(),
                            "rng_cuda": torch.cuda.get_rng_state() if t.cuda else None,
                            "history": t.history, "config_hash": t.identity.config_hash,
                            # which tracked run a resumed one continues (its resumed_from_run tag)
                            **({"mlflow_run_id": self.run_id} if self.run_id else {})})


def fit(plan: Plan, history: list[dict], *, start_epoch: int = 0, callbacks: Sequence = ()) -> list[dict]:
    """The fit loop: epochs ``start_epoch`` to ``plan.epochs - 1`` (0-based). After each one its row
    (``epoch`` 1-based, ``lr``, the plan's columns, ``images_per_s``, ``seconds``) is appended to
    ``history`` and every callback's ``on_epoch_end(row)`` is called, in order (train() passes the
    tracker's run, then the checkpoint). Returns ``history``."""
    for epoch in range(start_epoch, plan.epochs):
        row = run_epoch(plan, epoch)
        contracts.check_epoch(row, plan.model)  # finite losses and weights, before anything records the epoch
        history.append(row)
        for callback in callbacks:
            callback.on_epoch_end(row)
    return history


def run_epoch(plan: Plan, epoch: int) -> dict:
    """One epoch of ``plan``: its row of history.csv, each column of the plan the mean over the batches."""
    lr, loader = plan.begin_epoch(epoch)
    sums = dict.fromkeys(plan.columns, 0.0)
    total = plan.columns[0]
    batches, images, t0 = 0, 0, time.perf_counter()
    n_batches = len(loader)
    for batch in loader:
        values, n = plan.step(batch)
        for k in sums:
            sums[k] += float(values[k].detach())
        batches += 1
        images += n
        if batches % 10 == 0 or batches == n_batches:
            dt = time.perf_counter() - t0
            eta = (n_batches - batches) * dt / batches + (plan.epochs - epoch - 1) * dt * n_batches / batches
            print(f"epoch {epoch + 1}/{plan.epochs} batch {batches}/{n_batches} loss {sums[total] / batches:.4f} "
                  f"{images / dt:.1f} img/s ETA {_fmt_seconds(eta)}", flush=True)
    seconds = time.perf_counter() - t0
    b = max(batches, 1)
    return {"epoch": epoch + 1, "lr": lr, **{k: sums[k] / b for k in plan.columns},
            "images_per_s": images / seconds if seconds > 0 else math.nan, "seconds": seconds}


def training_data_digest(records: list[Record], data_root: str | Path) -> str:
    """Short hash of the training split: each image's path below ``data_root`` and its size in bytes.

    Part of the checkpoint key (a re-prepared dataset with the same files keeps its checkpoints, one
    with other files does not) and the digest of MLflow's training input dataset.
    """
    root = Path(data_root)
    return config_hash([(Path(r.path).relative_to(root).as_posix(), os.path.getsize(r.path)) for r in records])


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


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
