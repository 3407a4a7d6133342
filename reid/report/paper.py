"""The paper's reported numbers (paper_numbers.yaml) and what each configured dataset is.

Whether a reproduced row may stand beside a reported one depends on the data it was measured on:
only an unmodified copy of the same published split is comparable. ``describe_dataset`` decides
that from the dataset's config section (``dataset.<name>`` in config.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Protocol

import yaml

from reid.report.runs import ReportInputError


@lru_cache(maxsize=1)
def paper_numbers() -> dict:
    text = resources.files("reid.report").joinpath("paper_numbers.yaml").read_text()
    return yaml.safe_load(text)


def paper_label(kind: str) -> str:
    return paper_numbers()["dataset_labels"][kind]


def sic_note(table: str, dataset: str, protocol: str, metric: str) -> str | None:
    """Why a printed cell of the paper is flagged (paper_numbers.yaml ``sic``), or None."""
    flagged = cell_flag(table, dataset, protocol, metric)
    return flagged[1] if flagged else None


def cell_flag(table: str, dataset: str, protocol: str, metric: str) -> tuple[str, str] | None:
    """(mark, reason) of a flagged printed cell: mark "sic" (it cannot be right) or "?" (it looks copied
    or unlikely); None when the cell is not flagged."""
    for entry in paper_numbers().get("sic", []):
        if (entry["table"], entry["dataset"], entry["protocol"], entry["metric"]) == (table, dataset, protocol, metric):
            return entry.get("mark", "sic"), entry["note"]
    return None


@dataclass(frozen=True)
class DatasetInfo:
    name: str            # the config name, e.g. "synthetic"
    label: str           # what a reader is told it is
    kind: str | None     # the paper's key (market1501 | dukemtmcreid) for an unmodified copy of a dataset the
                         # paper reports, else None: only then do reproduced rows stand beside the paper's
    synthetic: bool

    def comparable_to(self, paper_kind: str) -> bool:
        return self.kind == paper_kind


class KindLike(Protocol):
    """What the report needs of a dataset kind (reid.data.kinds.DatasetKind; passed in by the CLI so
    that the report package depends on nothing else of the pipeline)."""

    name: str
    display_name: str
    paper_key: str | None


def describe_dataset(name: str, spec: dict, kind: KindLike | None = None) -> DatasetInfo:
    """Turn ``dataset.<name>`` of the config, and its kind (required unless the source is synthetic),
    into what the tables say about it."""
    if not isinstance(spec, dict) or "source" not in spec:
        raise ReportInputError(f"dataset spec for '{name}' must be a mapping with a 'source' key, got {spec!r}")
    source = spec["source"]
    if source == "synthetic":
        own = _flat_keys(spec.get("synthetic") or {})
        settings = (f"; its own settings over the `synthetic:` section: "
                    f"{', '.join(f'{k} {v}' for k, v in own.items())}" if own else "")
        return DatasetInfo(name, f"synthetic data ('{name}': procedurally generated images in Market-1501 "
                                 f"layout{settings})", None, True)
    if source not in ("archive", "folder"):
        raise ReportInputError(f"dataset '{name}': unknown source '{source}'")
    if kind is None or kind.name != spec.get("kind", "custom"):
        raise ReportInputError(f"dataset '{name}': its kind {spec.get('kind', 'custom')!r} was not resolved")
    if kind.name == "custom":
        return DatasetInfo(name, f"a dataset of your own in Market-1501 layout ('{name}')", None, False)
    if spec.get("custom", False):
        return DatasetInfo(name, f"a modified {kind.display_name} ('{name}', custom: true)", None, False)
    if kind.paper_key is not None and kind.paper_key not in paper_numbers()["dataset_labels"]:
        raise ReportInputError(f"dataset kind '{kind.name}': paper key '{kind.paper_key}' is not in paper_numbers.yaml")
    return DatasetInfo(name, f"{kind.display_name} ('{name}')", kind.paper_key, False)


def _flat_keys(value: dict, prefix: str = "") -> dict:
    """{"difficulty": {"camera_cast": 0.9}} -> {"difficulty.camera_cast": 0.9}, in key order."""
    out = {}
    for key, v in value.items():
        if isinstance(v, dict):
            out.update(_flat_keys(v, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = v
    return out


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
