"""Every dataset kind through `snakemake`, as a user runs it: an archive placed under resources/ (or a
folder given by path) and a config entry; prepare + verify give data/{dataset}/ in Market-1501 layout
and results/{dataset}/dataset.json. One Snakemake run covers all kinds (tiny copies, a few images
each); the entries without `custom: true` must be rejected naming expected vs found counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from native_layouts import cuhk03np_files, market_like_files, msmt17_files, tar_gz, write_tree, zip_of

pytestmark = pytest.mark.slow  # one Snakemake run of 14 jobs: about a minute on a busy 2-core machine

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

ENTRIES = {
    "msmt": {"source": "archive", "kind": "msmt17", "archive": "MSMT17_V2.tar.gz", "custom": True},
    "msmt_strict": {"source": "archive", "kind": "msmt17", "archive": "MSMT17_V2.tar.gz"},
    "cuhk_labeled": {"source": "archive", "kind": "cuhk03np_labeled", "archive": "cuhk03-np.zip", "custom": True},
    "cuhk_strict": {"source": "archive", "kind": "cuhk03np_detected", "archive": "cuhk03-np.zip"},
    "own": {"source": "archive", "archive": "own.zip"},  # no kind: custom
    "mine": {"source": "folder"},  # path filled in below; no kind: custom
    "market_strict": {"source": "folder", "kind": "market1501"},
}
OK = ["msmt", "cuhk_labeled", "own", "mine"]  # cuhk03np_detected's layout is the same code (test_kinds.py)
STRICT = {"msmt_strict": "train.images: expected 32621, found 4",
          "cuhk_strict": "train.images: expected 7365, found 4",
          "market_strict": "train.images: expected 12936, found 4"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("kinds")
    res = work / "resources"
    res.mkdir()
    tar_gz(res / "MSMT17_V2.tar.gz", msmt17_files("MSMT17_V2"))
    zip_of(res / "cuhk03-np.zip", cuhk03np_files())
    zip_of(res / "own.zip", {f"my_set/{k}": v for k, v in market_like_files().items()})
    user = write_tree(work.parent / f"{work.name}-user" / "Market-1501-v15.09.15", market_like_files())
    entries = {name: dict(spec) for name, spec in ENTRIES.items()}
    entries["mine"]["path"] = str(user)  # absolute, outside the working directory
    entries["market_strict"]["path"] = str(user)
    (work / "kinds.yaml").write_text(yaml.safe_dump({"dataset": entries}))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    targets = [f"results/{name}/dataset.json" for name in ENTRIES]
    before = sorted((p.relative_to(user).as_posix(), p.stat().st_mtime_ns) for p in user.rglob("*"))
    proc = subprocess.run([str(BIN / "snakemake"), *targets, "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(work), "--cores", "2", "--keep-going",
                           "--configfile", str(work / "kinds.yaml")],
                          capture_output=True, text=True, env=env, cwd=work, timeout=400)
    return work, user, proc, before


def test_each_kind_is_laid_out_and_verified(run):
    work, _, _, _ = run
    for name in OK:
        report = json.loads((work / "results" / name / "dataset.json").read_text())
        assert report["ok"], (name, report["problems"])
        assert (work / "results" / name / "mean_image.pt").is_file()
        splits = report["splits"]
        assert splits["train"]["images"] == 4 and splits["train"]["identities"] == 2, name
    msmt = json.loads((work / "results/msmt/dataset.json").read_text())
    assert msmt["splits"]["gallery"]["cameras"] == [4, 15] and msmt["known_split"]["checked"] is False
    assert (work / "data/msmt/original_names.tsv").read_text().count("mask_test_v2/") == 9
    assert sorted(p.suffix for p in (work / "data/cuhk_labeled/query").iterdir()) == [".png"] * 4
    assert json.loads((work / "results/own/dataset.json").read_text())["known_split"] is None


def test_published_counts_reject_the_tiny_copies(run):
    work, _, proc, _ = run
    assert proc.returncode != 0  # the strict entries fail, --keep-going ran the rest
    for name, expected in STRICT.items():
        log = (work / "results/logs/prepare" / f"{name}.log").read_text()
        assert expected in log and "custom: true" in log, log[-2000:]
        assert not (work / "data" / name).exists() and not (work / "results" / name / "dataset.json").exists()


def test_the_users_folder_is_untouched(run):
    work, user, _, before = run
    assert before == sorted((p.relative_to(user).as_posix(), p.stat().st_mtime_ns) for p in user.rglob("*"))
    assert len(list(user.rglob("*.jpg"))) == len(market_like_files())
    laid_out = sorted(p.name for p in (work / "data/mine").iterdir() if not p.name.startswith("."))  # .snakemake_timestamp
    assert laid_out == ["bounding_box_test", "bounding_box_train", "query"]
