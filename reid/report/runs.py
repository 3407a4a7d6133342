"""Reading the pipeline's metrics.json files and summarising them over seeds.

Tables are built from these files only. A metrics.json is flat: metrics under keys such as
``rank1`` or ``rerank/mAP`` (reid.metrics.keys: each with its unit, a fraction for the CMC and the
mAPs) plus the inputs that produced them (dataset, model, seed, config_hash, git_commit, and
mlflow_run_id when MLflow recorded the training run).
"""

from __future__ import annotations

import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from reid import variants
from reid.metrics import keys

REQUIRED_KEYS = ("dataset", "model", "seed")  # = reid.files.METRICS_KEYS


class ReportInputError(ValueError):
    """A report input (metrics.json, history.csv, features.pt, option) that cannot be used."""


@contextmanager
def pipeline_file() -> Iterator[None]:
    """Around a reid.files loader: its FileNotFoundError and DamagedFileError (a ValueError) become a
    ReportInputError with the same message, which names the file, what is wrong and the Snakemake rule
    that writes it. The one place where every report verb translates these two errors."""
    try:
        yield
    except ReportInputError:
        raise
    except (FileNotFoundError, ValueError) as e:
        raise ReportInputError(str(e)) from None


@dataclass
class Run:
    """One trained model (one seed): its metrics.json, loaded."""

    path: Path
    dataset: str
    model: str
    seed: int
    run_id: str | None  # the MLflow training run; None when the run was not tracked
    metrics: dict[str, float]
    info: dict[str, object] = field(default_factory=dict)

    @property
    def train_dataset(self) -> str:
        """The dataset the model was trained on: ``dataset`` unless the file is a cross-domain evaluation."""
        return str(self.info.get("train_dataset") or self.dataset)


def load_run(path: str | Path) -> Run:
    """One metrics.json (read by reid.files.load_metrics), each metric checked against its unit's range
    (reid.metrics.keys.check: a fraction in [0, 1], a rank >= 1, ...). Numbers under keys that are
    not metrics of the registry are kept in ``info``."""
    from reid.files import load_metrics

    path = Path(path)
    with pipeline_file():
        raw = load_metrics(path)
    if raw["model"] not in variants.REGISTRY:  # plug-ins and custom models are registered by then (reid.plugins)
        raise ReportInputError(f"{path}: unknown model '{raw['model']}' (expected one of {', '.join(variants.names())})")
    metrics: dict[str, float] = {}
    info: dict[str, object] = {}
    for key, value in raw.items():
        if key in REQUIRED_KEYS or key == "mlflow_run_id":
            continue
        if not keys.is_metric(key) or isinstance(value, bool) or not isinstance(value, (int, float)):
            info[key] = value  # cmc lists, hashes, commits
            continue
        try:
            keys.check(key, value)
        except ValueError as e:
            raise ReportInputError(f"{path}: {e}") from None
        metrics[key] = float(value)
    return Run(path=path, dataset=str(raw["dataset"]), model=str(raw["model"]), seed=int(raw["seed"]),
               run_id=None if raw.get("mlflow_run_id") is None else str(raw["mlflow_run_id"]), metrics=metrics,
               info=info)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Load several metrics.json files; one (training set, dataset, model, seed) may appear once only.

    A cross-domain evaluation's metrics.json names its test set as ``dataset`` and the set the model
    was trained on as ``train_dataset`` (``Run.train_dataset``); in-domain files have no
    ``train_dataset``: they were trained on their ``dataset``."""
    runs = [load_run(p) for p in paths]
    seen: dict[tuple[str, str, str, int], Path] = {}
    for run in runs:
        key = (run.train_dataset, run.dataset, run.model, run.seed)
        if key in seen:
            trained = f"train_dataset={run.train_dataset} " if run.train_dataset != run.dataset else ""
            raise ReportInputError(f"{run.path}: {trained}dataset={run.dataset} model={run.model} seed={run.seed} "
                                   f"is also in {seen[key]}")
        seen[key] = run.path
    return runs


def group_runs(runs: list[Run], dataset: str) -> dict[str, list[Run]]:
    """The runs of one dataset, by model in the registry's order (reid.variants), each list sorted by seed."""
    by_model: dict[str, list[Run]] = {}
    for model in variants.names():
        chosen = sorted((r for r in runs if r.dataset == dataset and r.model == model), key=lambda r: r.seed)
        if chosen:
            by_model[model] = chosen
    return by_model


@dataclass(frozen=True)
class Summary:
    """A metric over seeds in its display unit (percent for a fraction; reid.metrics.keys.Unit).
    ``std`` is the sample standard deviation (None for one seed)."""

    mean: float
    std: float | None
    n: int
    unit: keys.Unit = keys.UNITS["fraction"]


def summarise(runs: list[Run], key: str) -> Summary | None:
    """Mean and sample std (ddof=1) of ``key`` over the runs, in its display unit (percent for a
    fraction); None when no run has it.

    A key present in some seeds but not others is an error: the cell would silently average fewer runs.
    """
    have = [r for r in runs if key in r.metrics]
    if not have:
        return None
    if len(have) != len(runs):
        lacking = [str(r.path) for r in runs if key not in r.metrics]
        raise ReportInputError(f"{key} is missing from {', '.join(lacking)} but present in other seeds")
    unit = keys.unit_of(key)
    values = [unit.display(r.metrics[key]) for r in have]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Summary(mean=mean, std=std, n=len(values), unit=unit)


def fmt_pct(value: float | None) -> str:
    """A value already in percent (the paper's numbers) with two decimals; a dash where there is none."""
    return "–" if value is None else f"{value:.2f}"


def fmt_summary(s: Summary | None) -> str:
    """``mean`` or ``mean ± std`` in the summary's display unit, with its unit's decimals."""
    if s is None:
        return "–"
    d = s.unit.digits
    if s.std is None:
        return f"{s.mean:.{d}f}"
    return f"{s.mean:.{d}f} ± {s.std:.{d}f}"


def fmt_diff(value: float | None, digits: int = 2) -> str:
    """A difference of two displayed values (percentage points for fractions), signed."""
    if value is None:
        return "–"
    return f"{value:+.{digits}f}".replace("-", "−")
