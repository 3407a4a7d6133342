"""presets/paper-market.yaml: the paper's settings on Market-1501 only, layered over presets/paper.yaml.
Dry runs through `snakemake -n` as a user types them (stand-ins for the archive and the weights)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PRESETS = [str(ROOT / "presets" / "paper.yaml"), str(ROOT / "presets" / "paper-market.yaml")]


def dry_run(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(BIN / "snakemake"), "-n", *args, "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(work)], capture_output=True, text=True, env=env, cwd=work, timeout=240)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("paper-market")
    (work / "resources").mkdir()
    # a dry run reads neither file: their presence keeps the download rules out of the plan
    (work / "resources" / "Market-1501-v15.09.15.zip").write_bytes(b"")
    (work / "resources" / "resnet50-0676ba61.pth").write_bytes(b"")
    return work


def test_market_only_schedules_nothing_for_duke(work):
    proc = dry_run(work, "--configfile", *PRESETS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "dukemtmc" not in out.lower()
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert jobs["prepare_dataset"] == "1" and jobs["train"] == "2" and jobs["evaluate"] == "2"
    assert jobs["table1"] == "1" and jobs["table3"] == "1" and "table2" not in jobs
    # each table is built from, and described with, Market-1501 only
    table1 = re.search(r"python -m reid table1 .*", out).group(0)
    assert "--datasets market1501 --dataset-specs" in table1 and '"kind": "market1501"' in table1
    table3 = re.search(r"python -m reid table3 .*", out).group(0)
    assert "results/market1501/baseline/seed0/metrics.json" in table3 and "--dataset market1501" in table3
    # the paper's model settings come from presets/paper.yaml
    train = re.search(r"python -m reid train .*", out).group(0)
    assert '"backbone":"resnet50"' in train and '"width":188' in train


def test_the_skipped_table_is_refused_by_name(work):
    proc = dry_run(work, "results/tables/table2.md", "--configfile", *PRESETS)
    assert proc.returncode != 0
    assert "report.table2_dataset is null" in proc.stdout + proc.stderr


def test_alone_over_the_demo_config_it_says_what_is_missing(work):
    proc = dry_run(work, "--configfile", PRESETS[1])
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "dataset 'market1501' is used but not defined" in err and "presets/paper.yaml presets/paper-market.yaml" in err
