"""What each job cost: the benchmark files Snakemake writes for every train, extract and evaluate
job (the rules' ``benchmark:`` directive), gathered into one table for ``snakemake --report``.

A benchmark file is Snakemake's tab-separated record of one job (Snakemake documentation,
"Benchmark rules"): a header ``s  h:m:s  max_rss  max_vms  max_uss  max_pss  io_in  io_out
mean_load  cpu_time`` and one line per repetition. ``s`` is the wall-clock time in seconds,
``max_rss`` the peak resident memory in MB (psutil's sampling of the job's process tree, every
few seconds: a job shorter than the first sample reads ``NA``), ``cpu_time`` user + system seconds.

The files live under ``results/benchmarks/<rule>/...``; a job is named by its path below the rule
folder (``train/synthetic/baseline-seed0.tsv`` is rule train, job ``synthetic/baseline-seed0``).
A job that ran before its rule recorded benchmarks has no file: its row says so (the table is built
from the runs' metrics.json, so that asking for it never reruns a finished training).
"""

from __future__ import annotations

import csv
import html
import math
from dataclasses import dataclass
from pathlib import Path

from reid import io
from reid.report.runs import ReportInputError

# the columns this table reads; Snakemake writes more (max_vms, io_in, ...)
REQUIRED = ("s", "max_rss", "cpu_time")


@dataclass(frozen=True)
class Benchmark:
    """One job's cost: wall time and CPU time in seconds, peak resident memory in MB (None: not sampled)."""

    rule: str
    job: str
    wall_s: float | None  # None: no benchmark file
    max_rss_mb: float | None
    cpu_s: float | None


def _number(text: str, path: Path, column: str, line: int) -> float | None:
    if text.strip() in ("", "NA"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReportInputError(f"{path}: line {line}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ReportInputError(f"{path}: line {line}, column {column!r}: {text!r} is not a finite, non-negative number")
    return value


def _job(path: Path, root: str | Path) -> tuple[str, str]:
    try:
        rule, job = path.relative_to(root).with_suffix("").as_posix().split("/", 1)
    except ValueError:
        raise ReportInputError(f"{path}: not under {root}/<rule>/ (the benchmark folder)") from None
    return rule, job


def read_benchmark(path: str | Path, root: str | Path) -> Benchmark:
    """One benchmark file; ``root`` is the folder holding the rule folders (results/benchmarks).

    Several lines (``benchmark: repeat(...)``) give the mean wall and CPU time and the largest peak
    memory; a missing file gives a row without values. Raises ReportInputError naming the file,
    line and column of anything unreadable.
    """
    path = Path(path)
    rule, job = _job(path, root)
    if not path.exists():
        return Benchmark(rule, job, None, None, None)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
            header = rows[0].keys() if rows else []
    except OSError as e:
        raise ReportInputError(f"{path}: cannot read the benchmark file ({e.strerror or e})") from None
    missing = [c for c in REQUIRED if c not in header]
    if not rows or missing:
        raise ReportInputError(f"{path}: not a Snakemake benchmark file (no data line, or no column "
                               f"{', '.join(missing or REQUIRED)})")
    values = {c: [_number(r[c] or "", path, c, i) for i, r in enumerate(rows, start=2)] for c in REQUIRED}
    if any(v is None for v in values["s"]):
        raise ReportInputError(f"{path}: column 's' (wall time) is empty")
    rss = [v for v in values["max_rss"] if v is not None]
    cpu = [v for v in values["cpu_time"] if v is not None]
    return Benchmark(rule, job, sum(values["s"]) / len(rows), max(rss) if rss else None,
                     sum(cpu) / len(cpu) if cpu else None)


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def rows(benchmarks: list[Benchmark]) -> list[list[str]]:
    """Table rows in the order given: rule, job, wall time (s), peak memory (MiB), CPU time (s)."""
    # Snakemake's max_rss is psutil's bytes / 2**20, i.e. MiB despite the "MB" of its documentation
    return [[b.rule, b.job, _cell(b.wall_s, 1), _cell(b.max_rss_mb, 0), _cell(b.cpu_s, 1)] for b in benchmarks]


HEADER = ["Rule", "Job", "Wall time (s)", "Peak memory (MiB)", "CPU time (s)"]
CAPTION = ("What each train, extract and evaluate job cost, from the benchmark file Snakemake wrote for it "
           "(results/benchmarks/): wall-clock time, peak resident memory of the job's processes (sampled; "
           "a dash where the job ended before the first sample) and CPU time (user + system). Measured on "
           "the machine that ran the job, under whatever else it was running. A row of dashes: the job ran "
           "before its rule recorded benchmarks.")


def to_markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join([":---", ":---"] + ["---:"] * 3) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    total = sum(float(r[2].replace(",", "")) for r in table if r[2] != "–")
    return f"# Job costs\n\n{CAPTION}\n\n" + "\n".join(lines) + f"\n\nTotal wall time: {total:,.1f} s.\n"


def to_html(table: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>\n" for r in table)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Job costs</title><style>"
            "body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse}"
            "th,td{border:1px solid #bbb;padding:3px 8px;text-align:right} th{background:#eee}"
            "td:first-child,td:nth-child(2){text-align:left}</style></head><body>\n<h1>Job costs</h1>\n"
            f"<p>{html.escape(CAPTION)}</p>\n<table>\n<tr>{head}</tr>\n{body}</table>\n</body></html>\n")


def write_table(paths: list[str], root: str | Path, out_md: str | Path, out_html: str | Path | None) -> list[Path]:
    """Read every benchmark file (all checked before anything is written), then write the markdown
    and HTML tables together (reid.io.commit_together). Returns the paths written."""
    if not paths:
        raise ReportInputError("--benchmarks: no benchmark files given")
    table = rows([read_benchmark(p, root) for p in paths])
    writes = {out_md: io.text_writer(to_markdown(table))}
    if out_html:
        writes[out_html] = io.text_writer(to_html(table))
    return io.commit_together(writes)
