"""The paper presets' account of the paper: every "paper" attribution quotes the paper (section and words),
every quote stands in docs/model.md's list of the paper's words, and the literal preset plans the same jobs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PRESETS = ("paper.yaml", "paper-literal.yaml")
SECTION = re.compile(r"\bpaper, (\d(\.\d)?|eqs?\. \d+)")  # "paper, 5.1:", "paper, eq. 11:"
QUOTE = re.compile(r'"([^"]+)"')


def key_comments(text: str) -> list[tuple[str, str]]:
    """(key, comment) of every line of a preset that sets a key and carries a comment."""
    out = []
    for line in text.splitlines():
        code, sep, comment = line.partition("#")
        match = re.match(r"\s*([A-Za-z_0-9]+):", code)
        if sep and match:
            out.append((match.group(1), comment.strip()))
    return out


def paper_words(model_md: str) -> set[str]:
    """The quotes of docs/model.md's "The paper's words" table."""
    section = model_md.split("### The paper's words", 1)[1].split("\n#", 1)[0]
    return {m for row in section.splitlines() if row.startswith("| ") for m in QUOTE.findall(row)}


def attribution_problems(text: str, words: set[str]) -> list[str]:
    """Why a preset's comments misstate the paper: an attribution to the paper ("paper, <section>:")
    without a quote, a "paper" comment without its section, a quote not in ``words``."""
    problems = []
    for key, comment in key_comments(text):
        quotes = QUOTE.findall(comment)
        says_paper = re.match(r"paper\b", comment) and not comment.startswith("paper silent")
        if says_paper and not SECTION.match(comment):
            problems.append(f"{key}: '{comment[:40]}...' names no section (write 'paper, 5.1: \"...\"')")
        elif says_paper and not quotes:
            problems.append(f"{key}: attributed to the paper without its words in quotes")
        problems += [f"{key}: quote \"{q}\" is not among docs/model.md's paper's words" for q in quotes if q not in words]
    return problems


@pytest.mark.parametrize("preset", PRESETS)
def test_every_paper_attribution_quotes_the_paper(preset):
    words = paper_words((ROOT / "docs" / "model.md").read_text())
    assert len(words) > 20
    text = (ROOT / "presets" / preset).read_text()
    assert [k for k, c in key_comments(text) if c.startswith("paper")], "no attribution found: the parser is broken"
    assert attribution_problems(text, words) == []


def test_the_attribution_check_fails_on_what_it_must_catch():
    words = {"horizontally flipped"}
    assert attribution_problems('  horizontal_flip: 0.5  # paper, 5.1: "horizontally flipped"\n', words) == []
    assert attribution_problems("  horizontal_flip: 0.5  # paper silent\n", words) == []
    assert attribution_problems("  momentum: 0.9  # ours: SGD's usual momentum\n", words) == []
    unquoted = attribution_problems("  lr_step: 40  # paper, 5.1: lr x0.1 at epoch 40\n", words)
    assert unquoted and "without its words" in unquoted[0]
    no_section = attribution_problems('  lr: 0.01  # paper: "horizontally flipped"\n', words)
    assert no_section and "names no section" in no_section[0]
    wrong = attribution_problems('  flip: 0.5  # paper, 5.1: "flipped horizontally"\n', words)
    assert wrong and "flipped horizontally" in wrong[0]
    # a quote in an "ours" comment must be the paper's words too
    assert attribution_problems('  x: 1  # ours, departs from 5.1\'s "randomly picked"\n', words)


def dry_run_jobs(work: Path, preset: str) -> dict[str, int]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--configfile", str(ROOT / "presets" / preset),
                           "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work)],
                          capture_output=True, text=True, env=env, cwd=work, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M)}
    assert jobs.get("total", 0) > 0, proc.stdout[-2000:]
    return jobs


def test_the_literal_preset_plans_the_same_jobs_as_the_paper_preset(tmp_path):
    (tmp_path / "resources").mkdir()
    # a dry run reads none of these files: their presence keeps the download rules out of the plan
    for name in ("Market-1501-v15.09.15.zip", "DukeMTMC-reID.zip", "resnet50-0676ba61.pth"):
        (tmp_path / "resources" / name).write_bytes(b"")
    paper = dry_run_jobs(tmp_path, "paper.yaml")
    assert paper.get("train", 0) >= 4 and paper.get("evaluate", 0) >= 4  # 2 datasets x 2 models
    assert dry_run_jobs(tmp_path, "paper-literal.yaml") == paper
