"""Tables 1-3 of the paper as markdown, built only from metrics.json files and paper_numbers.yaml.

Every table says which dataset its reproduced rows come from; when that is not the paper's
dataset (the synthetic default) the caption says plainly that the rows are not comparable, the
rows are labelled "reproduced here" against "reported by the paper", and Table 1 leaves the
difference column empty rather than print a number that invites the comparison.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reid import io
from reid import variants
from reid.metrics import keys
from reid.variants import get_variant
from reid.report.paper import (DatasetInfo, cell_flag, comparability_note, paper_label, paper_numbers)
from reid.report.runs import (Run, ReportInputError, pipeline_file, Summary, fmt_diff, fmt_pct, fmt_summary,
                              group_runs, summarise)

AP_NOTE = ("mAP uses the step convention (mean of the precision at each correct match, as torchreid and "
           "fast-reid compute it); the *trapezoid* column integrates the precision-recall curve by trapezoids, "
           "as the official Market-1501 evaluation code does, and is never higher. The paper does not say "
           "which convention it used.")
PAPER_SOURCE = "reported by the paper"


def model_label(model: str, backbone: str) -> str:
    """The row label of a variant (reid.variants), with the backbone's name where it has one."""
    return get_variant(model).label_for(backbone)


def short_label(model: str) -> str:
    return get_variant(model).short_label


def _markdown(df: pd.DataFrame) -> str:
    # numbers right-aligned, text left: read down a column of means without hunting for the point
    align = ["left" if c in ("Method", "Rows", "Protocol", "Metric", "Dataset", "A", "B", "At 95%", "Trained on")
             else "right"
             for c in df.columns]
    return df.to_markdown(index=False, colalign=align, disable_numparse=True)


def seeds_note(by_model: dict[str, list[Run]], intervals: bool = False) -> str:
    seed_sets = {m: [r.seed for r in rs] for m, rs in by_model.items()}
    distinct = {tuple(s) for s in seed_sets.values()}
    if len(distinct) == 1:
        seeds = next(iter(distinct))
        if len(seeds) == 1:
            return (f"Reproduced cells come from one training run (seed {seeds[0]}); "
                    + ("their intervals cover the choice of query identities, not the spread over seeds."
                       if intervals else "no spread over seeds is shown."))
        if intervals:
            return (f"Reproduced cells are the mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
                    f"with an interval that resamples the seeds, then the query identities.")
        return (f"Reproduced cells are mean ± sample standard deviation over {len(seeds)} seeds "
                f"({', '.join(map(str, seeds))}).")
    parts = "; ".join(f"{m}: {', '.join(map(str, s))}" for m, s in seed_sets.items())
    return (f"Reproduced cells are mean ± sample standard deviation over each model's seeds ({parts}); "
            f"a cell without ± comes from one seed.")


def flip_note(runs: list[Run]) -> str:
    """How the test embeddings were made, from the metrics files (``flip_test``, written by evaluate)."""
    flipped = sorted({f"{r.dataset}/{r.model}" for r in runs if r.info.get("flip_test") is True})
    if not flipped:
        return "Test features embed each image as it is (no flip test)."
    if len(flipped) == len({f"{r.dataset}/{r.model}" for r in runs}):
        return ("Test features add the embedding of each image's mirror image (flip test, config "
                "`evaluate.flip`); the paper does not say it used one.")
    return f"Only these runs used a flip test (`evaluate.flip`): {', '.join(flipped)}."


def run_ids_frame(by_dataset: dict[str, dict[str, list[Run]]]) -> pd.DataFrame:
    rows = []
    for dataset, by_model in by_dataset.items():
        for model, runs in by_model.items():
            for r in runs:
                rows.append({"Dataset": dataset, "Model": model, "Seed": r.seed, "MLflow run id": r.run_id or "–",
                             "config hash": r.info.get("config_hash", "–"), "git commit": r.info.get("git_commit", "–"),
                             "metrics file": str(r.path)})
    return pd.DataFrame(rows)


RUN_IDS_HEADING = "MLflow run ids the reproduced cells came from:"


@dataclass
class TableDoc:
    """One table with its caption, notes and provenance; rendered as markdown and as HTML."""

    title: str
    caption: str          # may hold **bold** and *italic* (markdown emphasis only)
    table: pd.DataFrame
    notes: list[str]
    runs: pd.DataFrame
    sections: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (heading, table) after the table

    def to_markdown(self) -> str:
        notes = "\n".join(f"- {n}" for n in self.notes)
        sections = "".join(f"{heading}\n\n{_markdown(df)}\n\n" for heading, df in self.sections)
        return (f"# {self.title}\n\n{self.caption}\n\n{_markdown(self.table)}\n\n{sections}{notes}\n\n"
                f"**{RUN_IDS_HEADING}**\n\n{self.runs.to_markdown(index=False, disable_numparse=True)}\n")

    def to_html(self) -> str:
        """A self-contained page, for snakemake --report (which shows HTML inline but markdown only as a download)."""
        notes = "".join(f"<li>{_inline_html(n)}</li>" for n in self.notes)
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(self.title)}</h1>\n"
                f"<p>{_inline_html(self.caption)}</p>\n{self.table.to_html(index=False, border=0)}\n"
                + "".join(f"<p>{_inline_html(h)}</p>\n{df.to_html(index=False, border=0)}\n" for h, df in self.sections)
                + f"<ul>{notes}</ul>\n<p><strong>{html.escape(RUN_IDS_HEADING)}</strong></p>\n"
                f"{self.runs.to_html(index=False, border=0)}\n</body></html>\n")


_CSS = ("body{font-family:sans-serif;margin:1.5em;max-width:80em} table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #bbb;padding:3px 8px;text-align:right} th{background:#eee}"
        "td:first-child,td:nth-child(2){text-align:left}")


def _inline_html(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", out)


def _require_runs(by_model: dict[str, list[Run]], dataset: str, table: str) -> None:
    if not by_model:
        raise ReportInputError(f"{table}: no metrics.json for dataset '{dataset}' among the inputs")


def _check_datasets(runs: list[Run], allowed: set[str], table: str) -> None:
    for r in runs:
        if r.train_dataset != r.dataset:
            raise ReportInputError(f"{table}: {r.path} is a cross-domain evaluation (trained on '{r.train_dataset}', "
                                   f"tested on '{r.dataset}'); it belongs in results/tables/cross_domain.md")
        if r.dataset not in allowed:
            raise ReportInputError(f"{table}: {r.path} is for dataset '{r.dataset}', but the table is built "
                                   f"for {', '.join(sorted(allowed))}")


# ---------------------------------------------------------------- intervals and paired comparisons

NO_DIFFERENCE = "no significant difference at 95%"


class Cells:
    """Reproduced cells of one dataset: ``value [low, high]`` (percent) where an interval exists.

    The interval comes from comparisons.json (``comparison``, over the seeds the runs have), else,
    for a single run, from its metrics.json ``ci95``; without either the cell is the mean (± the
    sample std over seeds), as before intervals existed.
    """

    def __init__(self, by_model: dict[str, list[Run]], comparison: dict | None):
        self.by_model = by_model
        self.comparison = comparison
        self.used_intervals = False
        if comparison is not None:
            for model, runs in by_model.items():
                entry = comparison.get("models", {}).get(model)
                seeds = [r.seed for r in runs]
                if entry is None or entry.get("seeds") != seeds:
                    have = None if entry is None else entry.get("seeds")
                    raise ReportInputError(f"comparisons.json of '{comparison.get('dataset')}' has seeds {have} for "
                                           f"'{model}', the metrics files have {seeds}: rebuild it")

    def interval(self, model: str, key: str) -> list[float] | None:
        if self.comparison is not None:
            return self.comparison["models"][model]["ci95"].get(key)
        runs = self.by_model[model]
        ci = runs[0].info.get("ci95") if len(runs) == 1 else None
        return ci.get(key) if isinstance(ci, dict) else None

    def __call__(self, model: str, key: str) -> str:
        s = summarise(self.by_model[model], key)
        if s is None:
            return "–"
        ci = self.interval(model, key)
        if ci is None:
            return fmt_summary(s)
        self.used_intervals = True
        return keys.format_interval(key, s.mean / s.unit.scale, ci[0], ci[1])

    def caption(self) -> str:
        """What the intervals are over, for the caption ('' when no cell has one)."""
        if not self.used_intervals:
            return ""
        boot = (self.comparison or {}).get("bootstrap") or next(
            (r.info.get("bootstrap") for rs in self.by_model.values() for r in rs if isinstance(r.info.get("bootstrap"), dict)),
            {})
        n_ids = boot.get("identities")
        ids = f"the {n_ids} query identities" if n_ids else "the query identities"
        how = f" ({boot['resamples']:,} resamples, seed {boot['seed']})" if "resamples" in boot else ""
        several = any(len(rs) > 1 for rs in self.by_model.values())
        if several:
            return (f"Reproduced cells read mean [95% interval]: the mean over seeds, and a percentile bootstrap "
                    f"that resamples the seeds, then {ids}, all queries of a person together{how}.")
        return (f"Reproduced cells read value [95% interval]: a percentile bootstrap over {ids}, all queries of "
                f"a person resampled together{how}.")


def _fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def paired_rows(comparison: dict | None, protocols: list[tuple[str, str]], dataset: str | None = None) -> list[dict]:
    """One row per (pair, protocol, metric) of comparisons.json: B − A in points, its interval, p, the reading.

    protocols: (protocol name as in reid.metrics.keys.PROTOCOLS, label); a protocol the file
    lacks (no gt_bbox) is left out. ``dataset`` adds a Dataset column.
    """
    rows = []
    for pair in (comparison or {}).get("pairs", []):
        for protocol, plabel in protocols:
            for metric in keys.paired_metrics():
                mlabel = keys.METRICS[metric].label
                d = pair["differences"].get(keys.key(protocol, metric))
                if d is None:
                    continue
                cell = keys.format_interval(keys.key(protocol, metric), d["difference"], *d["ci95"],
                                            signed=True).replace("-", "−")
                if not d["significant"]:
                    reading = NO_DIFFERENCE
                else:
                    reading = f"{short_label(pair['b'])} {'higher' if d['difference'] > 0 else 'lower'} (significant at 95%)"
                row = {"Dataset": dataset} if dataset is not None else {}
                row.update({"A": short_label(pair["a"]), "B": short_label(pair["b"]), "Protocol": plabel,
                            "Metric": mlabel, "B − A (pp) [95% interval]": cell, "p": _fmt_p(d["p_value"]),
                            "At 95%": reading})
                rows.append(row)
    return rows


def paired_section(rows: list[dict], comparisons: list[dict]) -> list[tuple[str, pd.DataFrame]]:
    if not rows:
        return []
    boot = comparisons[0].get("bootstrap", {})
    seeds = sorted({tuple(p["seeds"]) for c in comparisons for p in c.get("pairs", [])})
    one_seed = all(len(s) == 1 for s in seeds)
    over = ("the same query-identity resamples for both models" if one_seed else
            "the same seed and query-identity resamples for both models (seeds resampled, then identities)")
    heading = (f"**Paired comparisons.** B − A in percentage points, with a 95% percentile interval from {over} "
               f"({boot.get('resamples', '?'):,} resamples) and a two-sided paired-bootstrap p-value; an interval "
               f"that contains 0 reads \"{NO_DIFFERENCE}\".")
    if one_seed:
        heading += (" With one training run per model this covers the choice of test identities only, not the "
                    "spread between training runs; configure several `seeds` to include it.")
    return [(heading, pd.DataFrame(rows))]


def _single_comparison(comparisons: dict[str, dict] | None, dataset: str) -> dict | None:
    if comparisons is None:
        return None
    if dataset not in comparisons:
        raise ReportInputError(f"no comparisons.json for dataset '{dataset}' among the inputs "
                               f"(have: {', '.join(comparisons) or 'none'})")
    return comparisons[dataset]


def load_comparisons(paths) -> dict[str, dict]:
    """comparisons.json files by dataset; raises ReportInputError naming a bad file."""
    from reid.files import load_comparisons as load

    out = {}
    for path in map(Path, paths):
        with pipeline_file():
            record = load(path)
        if record["dataset"] in out:
            raise ReportInputError(f"{path}: a second comparisons file for dataset '{record['dataset']}'")
        out[record["dataset"]] = record
    return out


# ---------------------------------------------------------------- Tables 2 and 3

def _comparison_inputs(runs: list[Run], info: DatasetInfo, table: str):
    """What Tables 2 and 3 both start from: the paper's rows, its dataset, our runs by model."""
    paper = paper_numbers()[table]
    paper_kind = paper["dataset"]
    _check_datasets(runs, {info.name}, table)
    by_model = group_runs(runs, info.name)
    _require_runs(by_model, info.name, table)
    return paper, paper_kind, by_model, f"{PAPER_SOURCE} ({paper_label(paper_kind)})"


def recipe_caption(recipe_notes: dict[str, str] | None, by_model: dict[str, list[Run]]) -> str:
    """A caption sentence per reproduced model trained by a recipe with its own published settings (``bot``):
    ``recipe_notes`` maps a model to what its run changed of them (reid.config.departures)."""
    return " ".join(f"The '{m}' row was trained with the strong baseline's recipe, changed in: {note}."
                    if note else f"The '{m}' row was trained with the strong baseline's published settings."
                    for m, note in (recipe_notes or {}).items() if m in by_model)


def table2(runs: list[Run], info: DatasetInfo, backbone: str, comparisons: dict[str, dict] | None = None,
           recipe_notes: dict[str, str] | None = None) -> TableDoc:
    """DukeMTMC-reID comparison in the paper: Rank-1 and mAP, the paper's rows then ours.

    comparisons: comparisons.json records by dataset (`load_comparisons`): interval cells over the
    seeds and the paired-comparison section; without it a single run's cells use its metrics.json ci95.
    recipe_notes: model -> how its recipe's settings depart from the published ones (``recipe_caption``).
    """
    paper, paper_kind, by_model, paper_rows_label = _comparison_inputs(runs, info, "table2")
    comparison = _single_comparison(comparisons, info.name)
    cell = Cells(by_model, comparison)
    ours_label = f"reproduced here ({info.name})"
    rows = []
    row_notes = []
    for p in paper["rows"]:
        method = p["method"]
        if p.get("note"):  # e.g. the paper's own duplicate row
            row_notes.append(f"(*) {method}: {p['note']}.")
            method += " (*)"
        rows.append({"Method": method, "Rows": paper_rows_label, "Rank-1 (%)": fmt_pct(p["rank1"]),
                     "mAP (%)": fmt_pct(p["mAP"]), "mAP, trapezoid (%)": "–"})
    strong = strong_baseline_rows(paper_kind, by_model)
    for p in strong:
        rows.append({"Method": p["method"], "Rows": f"published for the strong baseline ({p['source']})",
                     "Rank-1 (%)": fmt_pct(p["rank1"]), "mAP (%)": fmt_pct(p["mAP"]), "mAP, trapezoid (%)": "–"})
    for model, model_runs in by_model.items():
        rows.append({"Method": model_label(model, backbone), "Rows": ours_label,
                     "Rank-1 (%)": cell(model, "rank1"), "mAP (%)": cell(model, "mAP"),
                     "mAP, trapezoid (%)": cell(model, "mAP_trapezoid")})
    caption = (f"**Table 2.** Single-query Rank-1 and mAP (%). The first {len(paper['rows'])} rows are "
               f"{PAPER_SOURCE} (Jamal et al., Symmetry 2020, Table 2) on {paper_label(paper_kind)}, every row as "
               f"printed, in its order, with its reference numbers"
               + (f" (rows marked (*) are explained below the table)" if row_notes else "") + f"; the last "
               f"{len(by_model)} were reproduced by this pipeline. "
               + _join(cell.caption(), comparability_note(info, paper_kind), recipe_caption(recipe_notes, by_model)))
    notes = [AP_NOTE, seeds_note(by_model, cell.used_intervals), flip_note([r for rs in by_model.values() for r in rs]),
             "A dash marks a value the paper does not give.", *row_notes]
    if strong:
        notes.append(strong_baseline_note(strong, by_model, info, paper_kind))
    sections = paired_section(paired_rows(comparison, [("single", "single query")]), [comparison] if comparison else [])
    return TableDoc("Table 2", caption, pd.DataFrame(rows), notes, run_ids_frame({info.name: by_model}), sections)


def strong_baseline_rows(paper_kind: str, by_model: dict[str, list[Run]]) -> list[dict]:
    """The strong baseline's published rows (paper_numbers.yaml ``strong_baseline``) of ``paper_kind``, when a
    model they reproduce (``bot``) is among ``by_model``; [] otherwise, so that the other tables are unchanged."""
    rows = paper_numbers().get("strong_baseline", {}).get(paper_kind, [])
    if not any(r.get("reproduces") in by_model for r in rows):
        return []
    return rows


def strong_baseline_note(rows: list[dict], by_model: dict[str, list[Run]], info: DatasetInfo,
                         paper_kind: str) -> str:
    """What the reproduced strong-baseline row is against its published one: the differences (reproduced
    minus published, percentage points) on the published dataset, else why they are not comparable."""
    parts = []
    for row in rows:
        model = row.get("reproduces")
        if model not in by_model:
            continue
        r1, ap = summarise(by_model[model], "rank1"), summarise(by_model[model], "mAP")
        published = f"{row['rank1']:.1f} / {row['mAP']:.1f} ({row['method']}; {row['source']})"
        if info.comparable_to(paper_kind) and r1 is not None and ap is not None:
            parts.append(f"'{model}' reproduced here: Rank-1 / mAP {r1.mean:.2f} / {ap.mean:.2f}, published "
                         f"{published}: difference {r1.mean - row['rank1']:+.2f} / {ap.mean - row['mAP']:+.2f} points.")
        else:
            parts.append(f"The strong baseline's published rows are its authors' numbers on "
                         f"{paper_label(paper_kind)}, not the paper's (for the '{model}' configuration: {published}); "
                         f"the '{model}' row reproduced on {info.label} is NOT comparable to them.")
    return " ".join(parts)


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


# ---------------------------------------------------------------- Table 3

def _mq(metric: str) -> str:
    """The multi-query (mean pooling) key of ``metric``, the paper's multi-query protocol."""
    return keys.key("multi_query_mean", metric)



def table3(runs: list[Run], info: DatasetInfo, backbone: str, comparisons: dict[str, dict] | None = None,
           recipe_notes: dict[str, str] | None = None) -> TableDoc:
    """Market-1501 comparison in the paper: single- and multi-query Rank-1 and mAP (``comparisons`` and
    ``recipe_notes`` as table2)."""
    paper, paper_kind, by_model, paper_rows_label = _comparison_inputs(runs, info, "table3")
    comparison = _single_comparison(comparisons, info.name)
    cell = Cells(by_model, comparison)
    rows = []
    for p in paper["rows"]:
        rows.append({"Method": p["method"], "Rows": paper_rows_label,
                     "SQ Rank-1 (%)": fmt_pct(p["rank1"]), "SQ mAP (%)": fmt_pct(p["mAP"]),
                     "MQ Rank-1 (%)": fmt_pct(p.get("mq_rank1")), "MQ mAP (%)": fmt_pct(p.get("mq_mAP")),
                     "SQ mAP, trapezoid (%)": "–", "MQ mAP, trapezoid (%)": "–"})
    strong = strong_baseline_rows(paper_kind, by_model)
    for p in strong:
        rows.append({"Method": p["method"], "Rows": f"published for the strong baseline ({p['source']})",
                     "SQ Rank-1 (%)": fmt_pct(p["rank1"]), "SQ mAP (%)": fmt_pct(p["mAP"]), "MQ Rank-1 (%)": "–",
                     "MQ mAP (%)": "–", "SQ mAP, trapezoid (%)": "–", "MQ mAP, trapezoid (%)": "–"})
    any_mq = False
    for model, model_runs in by_model.items():
        mq_r1 = summarise(model_runs, _mq("rank1"))
        any_mq = any_mq or mq_r1 is not None
        rows.append({"Method": model_label(model, backbone), "Rows": f"reproduced here ({info.name})",
                     "SQ Rank-1 (%)": cell(model, "rank1"), "SQ mAP (%)": cell(model, "mAP"),
                     "MQ Rank-1 (%)": cell(model, _mq("rank1")), "MQ mAP (%)": cell(model, _mq("mAP")),
                     "SQ mAP, trapezoid (%)": cell(model, "mAP_trapezoid"),
                     "MQ mAP, trapezoid (%)": cell(model, _mq("mAP_trapezoid"))})
    caption = (f"**Table 3.** Rank-1 and mAP (%), single query (SQ) and multi-query (MQ). The first "
               f"{len(paper['rows'])} rows are {PAPER_SOURCE} (Jamal et al., Symmetry 2020, Table 3) on "
               f"{paper_label(paper_kind)}; the last {len(by_model)} were reproduced by this pipeline. "
               + _join(cell.caption(), comparability_note(info, paper_kind), recipe_caption(recipe_notes, by_model)))
    mq_note = ("Reproduced multi-query cells pool the query identity's gt_bbox features by their mean "
               "(metrics.json multi_query_mean/); max pooling is under multi_query_max/." if any_mq else
               f"Multi-query cells of reproduced rows are empty: '{info.name}' has no gt_bbox images.")
    notes = [AP_NOTE, mq_note, seeds_note(by_model, cell.used_intervals),
             flip_note([r for rs in by_model.values() for r in rs]), "A dash marks a value the paper does not give."]
    if strong:
        notes.append(strong_baseline_note(strong, by_model, info, paper_kind))
    rows_cmp = paired_rows(comparison, [("single", "single query (SQ)"), ("multi_query_mean", "multi-query (MQ, mean)")])
    sections = paired_section(rows_cmp, [comparison] if comparison else [])
    return TableDoc("Table 3", caption, pd.DataFrame(rows), notes, run_ids_frame({info.name: by_model}), sections)


# ---------------------------------------------------------------- Table 1

# (protocol key in paper_numbers.yaml or None, protocol of reid.metrics.keys); labels from the registry.
# The paper's three blocks first, in its order (single-shoot, multi-shoot, re-ranking), then the
# project's extra rows, which the paper does not report.
TABLE1_PROTOCOLS = (
    ("single_query", "single"),
    ("multi_query", "multi_query_mean"),
    ("rerank", "rerank"),
    (None, "multi_query_max"),
    (None, "multi_query_mean/rerank"),
)


def table1_metrics() -> list[keys.Metric]:
    """The metrics Table 1 lists (``Metric.table1`` in reid.metrics.keys), in registry order."""
    return [m for m in keys.METRICS.values() if m.table1]
# Paper reference for a dataset that is not one of the paper's: Market-1501, whose layout (with
# gt_bbox multi-query) the synthetic generator copies. Shown for orientation only; no difference.
REFERENCE_KIND = "market1501"


def table1(runs: list[Run], infos: list[DatasetInfo], comparisons: dict[str, dict] | None = None) -> TableDoc:
    """The paper's proposed model (``variants.PAPER_PROPOSED``) on each dataset, beside the paper's Table 1
    values (``comparisons`` as table2)."""
    proposed = variants.PAPER_PROPOSED
    names = [i.name for i in infos]
    chosen = [r for r in runs if r.model == proposed]
    _check_datasets(runs, set(names), "table1")
    paper = paper_numbers()["table1"]
    by_dataset: dict[str, dict[str, list[Run]]] = {}
    columns: dict[str, list[str]] = {}
    footnotes: list[str] = []
    cells: list[Cells] = []
    paired: list[dict] = []
    used_comparisons: list[dict] = []
    flagged_cells: list[str] = []
    metrics = table1_metrics()
    percent_only = all(m.unit == "fraction" for m in metrics)
    protocol_labels, metric_labels = _table1_row_labels(metrics, percent_only)
    for info in infos:
        ds_runs = group_runs(chosen, info.name).get(proposed, [])
        if not ds_runs:
            raise ReportInputError(f"table1: no metrics.json of the {proposed} model for dataset '{info.name}' "
                                   f"among the inputs")
        by_dataset[info.name] = {proposed: ds_runs}
        comparison = _single_comparison(comparisons, info.name)
        ours = Cells({proposed: ds_runs}, comparison)
        cells.append(ours)
        if comparison is not None:
            used_comparisons.append(comparison)
            paired += paired_rows(comparison, [(protocol, keys.PROTOCOL_LABELS[protocol])
                                               for _, protocol in TABLE1_PROTOCOLS], dataset=info.name)
        columns.update(_table1_dataset_columns(info, ds_runs, ours, paper, metrics, percent_only,
                                               footnotes, flagged_cells))
    df = pd.DataFrame({"Protocol": protocol_labels, "Metric": metric_labels, **columns})
    caption = _table1_caption(infos, cells, flagged_cells)
    notes = [AP_NOTE,
             "Multi-query rows exist only where the dataset has gt_bbox images; the paper reports multi-query "
             "for Market-1501 only. The paper gives no max-pooling or re-ranked multi-query values.",
             seeds_note({f"{n}/{proposed}": by_dataset[n][proposed] for n in names},
                        any(c.used_intervals for c in cells)),
             flip_note([r for n in names for r in by_dataset[n][proposed]]),
             "A dash marks a value that is not available.", *dict.fromkeys(footnotes)]
    return TableDoc("Table 1", caption, df, notes, run_ids_frame(by_dataset),
                    paired_section(paired, used_comparisons))


def _table1_row_labels(metrics: list[keys.Metric], percent_only: bool) -> tuple[list[str], list[str]]:
    """Table 1's row labels: (protocol labels, metric labels), one per (protocol, metric) row."""
    protocol_labels, metric_labels = [], []
    for _, protocol in TABLE1_PROTOCOLS:
        for m in metrics:
            protocol_labels.append(keys.PROTOCOL_LABELS[protocol])
            # the columns say (%) when every row is a percentage; otherwise each row names its unit
            metric_labels.append(m.label if percent_only else f"{m.label} ({m.units.symbol})")
    return protocol_labels, metric_labels


def _table1_dataset_columns(info: DatasetInfo, ds_runs: list[Run], ours: Cells, paper: dict,
                            metrics: list[keys.Metric], percent_only: bool,
                            footnotes: list[str], flagged_cells: list[str]) -> dict[str, list[str]]:
    """One dataset's three Table 1 columns (reproduced, paper, difference), keyed by their header.

    Appends the footnotes and labels of the paper's flagged cells to ``footnotes`` and ``flagged_cells``.
    """
    proposed = variants.PAPER_PROPOSED
    comparable = info.kind is not None
    ref_kind = info.kind if comparable else REFERENCE_KIND
    ref = paper.get(ref_kind, {})
    repro, reported, diff = [], [], []
    for pkey, protocol in TABLE1_PROTOCOLS:
        for m in metrics:
            mkey, mlabel = m.name, m.label
            s: Summary | None = summarise(ds_runs, keys.key(protocol, mkey))
            # the paper reports fractions only, in percent
            p = ref.get(pkey, {}).get(mkey) if pkey and m.unit == "fraction" else None
            cell = fmt_pct(p)
            flagged = cell_flag("table1", ref_kind, pkey, mkey) if pkey else None
            if p is not None and flagged:
                mark, note = flagged
                footnotes.append(f"({mark}) {paper_label(ref_kind)}, {pkey.replace('_', ' ')}, {mlabel}: {note}.")
                cell += f" ({mark})"
                flagged_cells.append(f"{paper_label(ref_kind)} {pkey.replace('_', ' ')} {mlabel} ({mark})")
            repro.append(ours(proposed, keys.key(protocol, mkey)))
            reported.append(cell)
            if comparable:
                diff.append(fmt_diff(s.mean - p) if (s is not None and p is not None) else "–")
            else:
                diff.append("n/c")
    ref_label = paper_label(ref_kind)
    pct, pp = (" (%)", " (pp)") if percent_only else ("", "")
    # every column names its dataset: two datasets with the same paper reference must not collide
    return {f"{info.name}: reproduced{pct}": repro,
            f"{info.name}: paper, {ref_label}" + ("" if comparable else " (reference only)") + pct: reported,
            f"{info.name}: difference{pp}": diff}


def _table1_caption(infos: list[DatasetInfo], cells: list[Cells], flagged_cells: list[str]) -> str:
    """Table 1's caption: what it shows, the flagged printed values, the cells' captions, the non-paper datasets."""
    described = "; ".join(info.label for info in infos)
    parts = [f"**Table 1.** The mutual-attention model, CMC ranks and mAP (%), on {described}. Beside each "
             f"reproduced value: the value {PAPER_SOURCE} (Jamal et al., Symmetry 2020, Table 1) and the "
             f"difference reproduced − paper, in percentage points. The paper's rows come first, in its order "
             f"(single-shoot, multi-shoot, re-ranking), then the project's rows it does not report (max-pooled "
             f"multi-query, re-ranked multi-query)."]
    if flagged_cells:
        parts.append("Printed values flagged, as printed, for the reasons under the table: "
                     + "; ".join(dict.fromkeys(flagged_cells)) + ".")
    parts += list(dict.fromkeys(c.caption() for c in cells if c.caption()))
    for info in infos:
        if info.kind is None:
            parts.append(f"**'{info.name}' is not one of the paper's datasets: its values are NOT "
                         f"comparable to the paper's. The paper's {paper_label(REFERENCE_KIND)} values stand beside "
                         f"them for orientation only, and the difference is not computed (n/c).**")
    return " ".join(parts)


# ---------------------------------------------------------------- cross-domain

def cross_domain_table(in_domain: list[Run], cross: list[Run], pairs: list[tuple[str, str]],
                       infos: dict[str, DatasetInfo], backbone: str) -> TableDoc:
    """Models trained on one dataset and tested on another (config ``cross_domain``).

    Rows: model and training set (the ``train`` of the pairs); columns: Rank-1 and mAP (%, single
    query) on each test set (every dataset the pairs name, in their order). The cell of a row's own
    training set is in-domain (``in_domain``: results/<train>/<model>/seed<seed>/metrics.json); the
    others come from ``cross`` (results/cross_domain/<train>_to_<test>/..., whose metrics.json name the
    test set as ``dataset`` and the training set as ``train_dataset``). Cells are those of Tables 1-3
    (``Cells``): value [95% interval] for one seed, mean ± std over several; a dash where no pair is
    configured. Raises ReportInputError for a file that belongs to no configured pair, or a configured
    pair or training set without the runs of every model shown.
    """
    if not pairs:
        raise ReportInputError("cross-domain table: no pairs (config cross_domain is empty)")
    trains = list(dict.fromkeys(a for a, _ in pairs))
    columns = list(dict.fromkeys(d for pair in pairs for d in pair))
    missing = [d for d in columns if d not in infos]
    if missing:
        raise ReportInputError(f"cross-domain table: no dataset description (--dataset-specs) for {', '.join(missing)}")
    groups: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for r in in_domain:
        if r.train_dataset != r.dataset or r.dataset not in trains:
            raise ReportInputError(f"cross-domain table: {r.path} is not an in-domain run of a training set "
                                   f"({', '.join(trains)})")
    for r in cross:
        if (r.train_dataset, r.dataset) not in pairs:
            raise ReportInputError(f"cross-domain table: {r.path} (trained on '{r.train_dataset}', tested on "
                                   f"'{r.dataset}') is not one of the configured pairs "
                                   f"{', '.join(f'{a} -> {b}' for a, b in pairs)}")
    for a in trains:
        groups[(a, a)] = group_runs(in_domain, a)
    for a, b in pairs:
        groups[(a, b)] = group_runs([r for r in cross if r.train_dataset == a], b)
    models = [m for m in variants.names() if any(m in g for g in groups.values())]
    if not models:
        raise ReportInputError("cross-domain table: no metrics.json among the inputs")
    for (a, b), group in groups.items():
        lacking = [m for m in models if m not in group]
        if lacking:
            what = f"in-domain on '{a}'" if a == b else f"trained on '{a}', tested on '{b}'"
            raise ReportInputError(f"cross-domain table: no metrics.json of {', '.join(lacking)} {what} among the inputs")

    rows, all_cells, by_label = [], [], {}
    for a in trains:
        for model in models:
            row = {"Method": model_label(model, backbone), "Trained on": a}
            for b in columns:
                group = groups.get((a, b))
                if group is None:
                    row[f"{b}: Rank-1 (%)"] = row[f"{b}: mAP (%)"] = "–"
                    continue
                cell = Cells({model: group[model]}, None)
                all_cells.append(cell)
                row[f"{b}: Rank-1 (%)"], row[f"{b}: mAP (%)"] = cell(model, "rank1"), cell(model, "mAP")
                by_label.setdefault(f"{a} (in-domain)" if a == b else f"{a} → {b}", {})[model] = group[model]
            rows.append(row)
    described = "; ".join(infos[d].label for d in columns)
    tested = "; ".join(f"trained on {a}, tested on {b}" for a, b in pairs)
    parts = [f"**Cross-domain.** Single-query Rank-1 and mAP (%) of each model trained on the dataset in "
             f"'Trained on' and tested, without any adaptation, on the query and gallery of each column's "
             f"dataset (its images normalised with the training set's mean image). Pairs: {tested}. Where "
             f"the column is the training set itself (the diagonal) the cell is the in-domain result, the "
             f"same run as in Tables 1-3; a dash marks a pair that is not configured (config `cross_domain`). "
             f"Datasets: {described}."]
    parts += list(dict.fromkeys(c.caption() for c in all_cells if c.caption()))
    runs = [r for group in groups.values() for rs in group.values() for r in rs]
    notes = [AP_NOTE, seeds_note({f"{k}/{m}": rs for k, g in by_label.items() for m, rs in g.items()},
                                 any(c.used_intervals for c in all_cells)),
             flip_note(runs),
             "Multi-query and re-ranked results of every pair are in its metrics.json "
             "(results/cross_domain/<train>_to_<test>/<model>/seed<seed>/)."]
    return TableDoc("Cross-domain evaluation", " ".join(parts), pd.DataFrame(rows), notes, run_ids_frame(by_label))


def write(doc: TableDoc, out_md: str | Path, out_html: str | Path | None = None) -> list[Path]:
    """The table as markdown (and HTML when ``out_html``), committed as one unit (reid.io.commit_together:
    both replaced or neither; a write failure names the file). Returns the paths written."""
    texts = {Path(out_md): doc.to_markdown()}
    if out_html:
        texts[Path(out_html)] = doc.to_html()
    return io.commit_together({path: io.text_writer(text) for path, text in texts.items()})
