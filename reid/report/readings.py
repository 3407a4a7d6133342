"""The readings ablation tables: every reading of an ablation of reid/readings.py against its reference
(results/tables/readings.md, the paper's readings; results/tables/readings_bot.md, the strong
baseline's tricks).

Rows: each reading, and for the mutual readings each test embedding evaluated from the same weights.
Columns: single-query Rank-1 and mAP with their 95% intervals, the paired difference from the
reading's reference (``Reading.reference``: the baseline, or mutual; interval and p-value), FLOPs of one training step and measured training time per image,
both relative to the ablation's baseline (``baseline``, or ``bot``). Inputs are the files reid.readings names under
``results/{dataset}/readings/``: metrics.json and per_query.csv of every (reading, embedding, seed),
model.pt and history.csv of every (reading, seed).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reid import files
from reid import readings as R
from reid.metrics import keys
from reid.metrics import uncertainty as U
from reid.report.paper import DatasetInfo
from reid.report.runs import ReportInputError, Run, load_run, pipeline_file
from reid.report.tables import NO_DIFFERENCE, TableDoc, _fmt_p, flip_note, run_ids_frame
from reid.variants import get_variant

PAIRED = ("rank1", "mAP")
PER_QUERY = "per_query.csv"


@dataclass
class Row:
    reading: R.Reading
    embedding: str
    runs: list[Run]                 # metrics.json, one per seed
    per_query: list[U.PerQuery]     # per_query.csv, one per seed


def load_rows(results: Path, dataset: str, seeds: list[int], ablation: str = "paper") -> list[Row]:
    """Every (reading, test embedding) of ``ablation`` with its metrics.json and per_query.csv per seed."""
    rows = []
    for reading, embedding in R.entries(ablation):
        runs, tables = [], []
        for seed in seeds:
            folder = results / Path(R.run_dir(dataset, reading.name, seed)).relative_to("results") / embedding
            run = load_run(folder / "metrics.json")
            if run.dataset != dataset or run.seed != seed or run.model != reading.variant:
                raise ReportInputError(f"{run.path}: holds dataset={run.dataset} model={run.model} seed={run.seed}, "
                                       f"expected {dataset}, {reading.variant}, {seed} (reading {reading.name})")
            runs.append(run)
            with pipeline_file():
                tables.append(files.load_per_query(folder / PER_QUERY, run.info, run.path))
        rows.append(Row(reading, embedding, runs, tables))
    return rows


def step_flops(model_file: Path, recipe: str = "siamese") -> int:
    """FLOPs of one training step on 4 images (2 pairs for the paper's recipe) of the architecture in
    model.pt, at its training size, trained by ``recipe`` (reid.models.cost.recipe_step_flops)."""
    import torch

    from reid.models.builder import builder_of, rebuild
    from reid.models.cost import recipe_step_flops

    meta = torch.load(model_file, weights_only=True, map_location="cpu")["meta"]
    model = rebuild(builder_of(meta), str(model_file))  # random init: the count needs the architecture only
    return recipe_step_flops(model, recipe, meta["height"], meta["width"])


def seconds_per_image(history: Path) -> float:
    """Training wall-clock seconds per image over all epochs of history.csv (columns images_per_s, seconds)."""
    with pipeline_file():  # reid.files.load_history: the columns present, every cell a number
        rows = files.load_history(history, columns=("seconds", "images_per_s"))
    seconds = sum(r["seconds"] for r in rows)
    images = sum(r["images_per_s"] * r["seconds"] for r in rows)
    if not (math.isfinite(seconds) and math.isfinite(images)):
        raise ReportInputError(f"{history}: an empty 'seconds' or 'images_per_s' cell")
    if images <= 0:
        raise ReportInputError(f"{history}: no training images recorded")
    return seconds / images


def _diff_cells(row: Row, base: Row, bootstrap: dict) -> tuple[str, str, str]:
    """(ΔRank-1, ΔmAP, p-values) of row minus its reference ``base``, paired over the same resamples, in
    percentage points."""
    if row is base:
        return "(reference)", "(reference)", "–"
    res = U.paired_difference(base.per_query, row.per_query, resamples=bootstrap["resamples"], seed=bootstrap["seed"])
    cells = []
    for key in PAIRED:
        d = res[key]
        cell = keys.format_interval(key, d["difference"], *d["ci95"], signed=True).replace("-", "−")
        cells.append(cell + ("" if d["significant"] else " n.s."))
    return cells[0], cells[1], " / ".join(_fmt_p(res[k]["p_value"]) for k in PAIRED)


def _check_estimates(row: Row, intervals: dict) -> None:
    """The per-query rows must give metrics.json's numbers (a stale per_query.csv would not)."""
    for key in PAIRED:
        mean = statistics.fmean(r.metrics[key] for r in row.runs)
        if abs(intervals["estimate"][key] - mean) > 1e-9:
            raise ReportInputError(f"{row.runs[0].path}: {key} = {mean} but its per_query.csv gives "
                                   f"{intervals['estimate'][key]}: rerun the evaluation")


def readings_table(results: Path, dataset: str, seeds: list[int], info: DatasetInfo,
                   bootstrap: dict | None = None, ablation: str = "paper") -> TableDoc:
    """The table of ablation ``ablation`` (reid.readings.ABLATIONS: ``paper`` or ``bot``) on ``dataset``
    from the files under ``results`` (see the module docstring)."""
    bootstrap = {"resamples": U.DEFAULT_RESAMPLES, "seed": 0, **(bootstrap or {})}
    which = R.ablation(ablation)
    rows = load_rows(results, dataset, seeds, ablation)
    # each row's reference: its reading's ``reference``, evaluated with the embedding it was trained for
    refs = {r.reading.name: r for r in rows if r.embedding == r.reading.trained_embedding}
    intervals_of = []
    for row in rows:  # first, so that a stale file stops the table before the FLOPs are counted
        intervals = U.model_intervals(row.per_query, resamples=bootstrap["resamples"], seed=bootstrap["seed"])
        _check_estimates(row, intervals)
        intervals_of.append(intervals)
    flops, sec = {}, {}
    for reading in which.readings:  # a reading that reuses another's model shares its training
        folders = [results / Path(R.model_dir(dataset, reading.name, s)).relative_to("results") for s in seeds]
        sec[reading.name] = statistics.fmean(seconds_per_image(f / "history.csv") for f in folders)
        flops[reading.name] = step_flops(folders[0] / "model.pt", get_variant(reading.variant).recipe)
    table = []
    for row, intervals in zip(rows, intervals_of):
        base = refs[row.reading.reference]
        d_r1, d_map, p = _diff_cells(row, base, bootstrap)
        name = row.reading.name
        trained = row.embedding == row.reading.trained_embedding
        chooses = get_variant(row.reading.variant).chooses_test_embedding  # only then is the column meaningful
        embedding = row.embedding + (" (trained)" if trained else "") if chooses else "–"
        cell = {key: keys.format_interval(key, intervals["estimate"][key], *intervals["ci95"][key]) for key in PAIRED}
        table.append({
            "Reading": f"`{name}`: {row.reading.label}",
            "Test embedding": embedding,
            "Rank-1 (%)": cell["rank1"],
            "mAP (%)": cell["mAP"],
            "Reference": f"`{base.reading.name}`",
            "Δ Rank-1 vs reference (pp)": d_r1,
            "Δ mAP vs reference (pp)": d_map,
            "p (Rank-1 / mAP)": p,
            f"FLOPs / step (× {which.baseline})": f"{flops[name] / flops[which.baseline]:.3f}",
            f"time / image (× {which.baseline})": f"{sec[name] / sec[which.baseline]:.2f}",
        })
    seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    if ablation == "paper":
        caption = (f"**Readings of the paper** (the project's Table 4). Single-query Rank-1 and mAP (%) on "
                   f"{info.label}, each reading trained once per seed ({seeds_text}) with the configured settings and "
                   f"the reading's model and training keys (reid/readings.py); the mutual readings are also evaluated "
                   f"with every test embedding from the same weights (no retraining), the one they were trained for "
                   f"marked *(trained)*; `baseline_raw_features` evaluates the baseline's model with test features "
                   f"that are not L2-normalised. Δ is the reading minus its reference (the baseline, or the reading "
                   f"one key away from it), in percentage points.")
    else:
        caption = (f"**{which.title}** (ablation `{which.name}`). Single-query Rank-1 and mAP (%) on {info.label}, "
                   f"each reading trained once per seed ({seeds_text}) with the configured settings and the "
                   f"reading's keys over them (reid/readings.py): each row removes one trick from "
                   f"`{which.baseline}` or adds one part to it. Δ is the reading minus `{which.baseline}`, in "
                   f"percentage points.")
    over = "query identities" if len(seeds) == 1 else "seeds, then query identities"
    notes = [f"Brackets: 95% percentile bootstrap intervals over {over}, all queries of a person resampled together "
             f"({bootstrap['resamples']:,} resamples, seed {bootstrap['seed']}). Δ intervals and two-sided p-values "
             f"come from the same resamples for the reading and its reference (paired); *n.s.*: the interval contains "
             f"0, {NO_DIFFERENCE}."]
    if len(seeds) == 1:
        notes.append("With one training run per reading the intervals cover the choice of test identities only, "
                     "not the spread between training runs (about 5 Rank-1 points between seeds on the CPU demo, "
                     "docs/model.md); configure several `seeds` to include it.")
    notes += ["FLOPs: one training step (forward and backward) on 4 images, counted by torch.utils.flop_counter "
              "at the training input size; independent of the machine.",
              f"Time / image: training wall-clock seconds per image over all epochs (history.csv), relative to "
              f"`{which.baseline}`. The readings train as concurrent jobs on a shared machine, so these ratios are "
              "indicative only; the FLOPs are exact.",
              flip_note([r for row in rows for r in row.runs])]
    if not info.kind:
        notes.append(f"'{info.name}' is not one of the paper's datasets: compare the rows with each other, not "
                     f"with the paper's numbers.")
    by = {f"{row.reading.name}/{row.embedding}": row.runs for row in rows}
    return TableDoc(which.title, caption, pd.DataFrame(table), notes, run_ids_frame({dataset: by}))


__all__ = ["readings_table", "load_rows", "seconds_per_image", "step_flops"]

