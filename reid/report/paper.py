"""The paper's reported numbers (paper_numbers.yaml) and what each configured dataset is.

Whether a reproduced row may stand beside a reported one depends on the data it was measured on:
only an unmodified copy of the same published split is comparable. ``describe_dataset`` decides
that from the dataset's config section (``dataset.<name>`` in config.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from reid.report.runs import ReportInputError


@lru_cache(maxsize=1)
def paper_numbers() -> dict:
    text = resources.files("reid.report").joinpath("paper_numbers.yaml").read_text()
    return yaml.safe_load(text)


def paper_label(kind: str) -> str:
    return paper_numbers()["dataset_labels"][kind]


def sic_note(table: str, dataset: str, protocol: str, metric: str) -> str | None:
    for entry in paper_numbers().get("sic", []):
        if (entry["table"], entry["dataset"], entry["protocol"], entry["metric"]) == (table, dataset, protocol, metric):
            return entry["note"]
    return None


@dataclass(frozen=True)
class DatasetInfo:
    name: str            # the config name, e.g. "synthetic"
    label: str           # what a reader is told it is
    kind: str | None     # market1501 | dukemtmcreid for an unmodified published split, else None
    synthetic: bool

    def comparable_to(self, paper_kind: str) -> bool:
        return self.kind == paper_kind


def describe_dataset(name: str, spec: dict) -> DatasetInfo:
    """Turn ``dataset.<name>`` of the config into what the tables say about it."""
    if not isinstance(spec, dict) or "source" not in spec:
        raise ReportInputError(f"dataset spec for '{name}' must be a mapping with a 'source' key, got {spec!r}")
    source = spec["source"]
    if source == "synthetic":
        return DatasetInfo(name, f"synthetic data ('{name}': procedurally generated images in Market-1501 layout)",
                           None, True)
    if source != "archive":
        raise ReportInputError(f"dataset '{name}': unknown source '{source}'")
    kind = spec.get("kind")
    labels = paper_numbers()["dataset_labels"]
    if kind not in labels:
        raise ReportInputError(f"dataset '{name}': unknown kind '{kind}' (expected one of {', '.join(labels)})")
    if spec.get("custom", False):
        return DatasetInfo(name, f"a modified {labels[kind]} ('{name}', custom: true)", None, False)
    return DatasetInfo(name, f"{labels[kind]} ('{name}')", kind, False)


def comparability_note(info: DatasetInfo, paper_kind: str) -> str:
    """The caption sentence that says whether reproduced rows can be read against the paper's."""
    paper = paper_label(paper_kind)
    if info.comparable_to(paper_kind):
        return (f"Reproduced rows were measured on {info.label}, the dataset of the paper's rows; "
                f"training settings may still differ from the paper's (see the run parameters in MLflow).")
    if info.synthetic:
        return (f"**The reproduced rows were measured on {info.label}, not on {paper}. They are NOT comparable "
                f"to the paper's rows, which are {paper} results as reported by the paper; the numbers only "
                f"show that the pipeline runs end to end.**")
    return (f"**The reproduced rows were measured on {info.label}, not on {paper}. They are NOT comparable "
            f"to the paper's rows, which are {paper} results as reported by the paper.**")
