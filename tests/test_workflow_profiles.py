"""Every preset and profile of the repository parses, lints and plans (dry run); the paper preset,
the SLURM profile and docs/cluster.md say the same; profiles/default caps GPU and memory-heavy jobs.

The dry runs are independent Snakemake processes: they run side by side to keep the suite short.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PRESETS = sorted(ROOT.glob("presets/*.yaml"))
PROFILES = ("profiles/default", "profiles/slurm")


def layered(preset: Path) -> list[Path]:
    """The config files a preset is used with: alone (over config.yaml), or over presets/paper.yaml when
    it names datasets neither defines (presets/paper-market.yaml narrows paper.yaml's datasets)."""
    cfg = yaml.safe_load(preset.read_text()) or {}
    defined = {*cfg.get("dataset", {}), *yaml.safe_load((ROOT / "config.yaml").read_text())["dataset"]}
    if set(cfg.get("datasets", [])) <= defined:
        return [preset]
    return [ROOT / "presets" / "paper.yaml", preset]


def run_all(cases: dict[str, tuple[list[str], dict]], workdir: Path) -> dict[str, subprocess.CompletedProcess]:
    """Start every Snakemake command at once, then collect them: {name: completed process}.

    Each runs the repository's Snakefile in its own empty directory under ``workdir``: what the
    checkout's results/ holds (a finished quick start) must not change what is planned."""
    procs = {}
    for i, (name, (args, env)) in enumerate(cases.items()):
        work = workdir / f"case{i}"
        work.mkdir()
        procs[name] = subprocess.Popen([SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
                                        *args], cwd=work, env={**os.environ, **env}, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = {}
    for name, p in procs.items():
        text, _ = p.communicate(timeout=600)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, text, "")
    return out


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Lint of each preset; dry run of the default target for each preset x profile; GPU requests."""
    tmp = tmp_path_factory.mktemp("profiles")
    slurm_env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # the profile requires it; -n contacts nothing
    cases = {}
    for preset in [None, *PRESETS]:
        cfg = ["--configfile", *map(str, layered(preset))] if preset else []
        label = preset.name if preset else "config.yaml"
        cases[f"lint {label}"] = (["--lint", *cfg], {})
        for profile in PROFILES:
            cases[f"{profile} -n {label}"] = (["--profile", str(ROOT / profile), "-n", *cfg], slurm_env)
    cuda = tmp / "cuda.yaml"
    cuda.write_text(yaml.safe_dump({"train": {"device": "cuda"}}))
    # what a training job asks for on: a CPU-only machine (auto), a one-GPU machine (auto), device cuda
    cases["gpu auto, no GPU"] = (["-n", "-p", "results/synthetic/baseline/seed0/model.pt"], {"CUDA_VISIBLE_DEVICES": ""})
    cases["gpu auto, one GPU"] = (["-n", "-p", "results/synthetic/baseline/seed0/model.pt"], {"CUDA_VISIBLE_DEVICES": "0"})
    cases["gpu cuda"] = (["-n", "-p", "results/synthetic/baseline/seed0/model.pt", "--configfile", str(cuda)],
                         {"CUDA_VISIBLE_DEVICES": ""})
    return run_all(cases, tmp)


def test_lint_and_dry_run_of_every_preset_and_profile(planned):
    assert PRESETS, "no presets/*.yaml found"
    failed = {k: p.stdout[-1500:] for k, p in planned.items() if p.returncode != 0}
    assert not failed, failed
    for name, p in planned.items():
        if name.startswith("lint"):
            assert "Lints for" not in p.stdout, (name, p.stdout[-3000:])
        elif " -n " in name:
            assert "This was a dry-run" in p.stdout or "Nothing to be done" in p.stdout, (name, p.stdout[-1500:])
    # the SLURM profile's resources reach the planned jobs
    paper = planned["profiles/slurm -n paper.yaml"].stdout
    assert re.search(r"rule train:.*?resources: [^\n]*gpu=1", paper, re.S)


def _train_resources(text: str) -> str:
    m = re.search(r"rule train:.*?resources: ([^\n]*)", text, re.S)
    assert m, text[-2000:]
    return m.group(1)


def test_default_profile_caps_gpu_jobs_and_memory_heavy_evaluations(planned):
    profile = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    # one GPU job at a time (each job uses the first GPU it sees), at most two re-ranking evaluations
    assert profile["resources"] == {"gpu": 1, "heavy_memory": 2}
    assert "gpu=0" in _train_resources(planned["gpu auto, no GPU"].stdout)  # CPU-only: trainings run side by side
    assert "gpu=1" in _train_resources(planned["gpu auto, one GPU"].stdout)
    assert "gpu=1" in _train_resources(planned["gpu cuda"].stdout)
    default = planned["profiles/default -n config.yaml"].stdout
    assert re.search(r"rule evaluate:.*?resources: [^\n]*heavy_memory=1", default, re.S)


def _localrules() -> set[str]:
    """The rules that say `localrule: True` (each rule says it itself, in the file that defines it)."""
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]
    text = "".join(p.read_text() for p in files)
    assert not re.search(r"^localrules:", text, re.M), "a localrules list would name rules of other files"
    blocks = re.split(r"^(?=rule \w+:)", text, flags=re.M)
    return {re.match(r"rule (\w+):", b).group(1) for b in blocks
            if b.startswith("rule ") and re.search(r"^    localrule: True$", b, re.M)}


def test_paper_preset_slurm_profile_and_cluster_doc_agree():
    preset = yaml.safe_load((ROOT / "presets/paper.yaml").read_text())
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    doc = (ROOT / "docs/cluster.md").read_text()
    h, w = preset["train"]["height"], preset["train"]["width"]
    for text, where in ((doc, "docs/cluster.md"), ((ROOT / "profiles/slurm/config.yaml").read_text(), "profile")):
        sizes = {tuple(map(int, m)) for m in re.findall(r"(\d{2,3}) ?x ?(\d{2,3})", text)}
        assert sizes == {(h, w)}, f"{where} names input sizes {sizes}, presets/paper.yaml trains at {h} x {w}"
    # the doc's table of what each heavy rule asks SLURM for is the profile's
    for rule in ("train", "extract"):
        row = re.search(rf"^\| `{rule}` \|[^\n]*", doc, re.M).group(0)
        res, threads = profile["set-resources"][rule], profile["set-threads"][rule]
        assert f"{threads} CPUs" in row and f"{res['mem_mb'] // 1000} GB" in row, row
        assert f"{res['runtime'] // 60} h" in row, row
        assert ("1 GPU" in row) == (res.get("gpu") == 1), row
    # evaluate's memory and time follow its features (the rule's resource callables): the profile
    # must not pin them, and the doc says what they follow
    row = re.search(r"^\| `evaluate` \|[^\n]*", doc, re.M).group(0)
    assert f"{profile['set-threads']['evaluate']} CPUs" in row and "evaluate.memory_gb" in row, row
    assert not {"mem_mb", "runtime"} & set((profile["set-resources"].get("evaluate") or {})), "profile pins evaluate"
    # what the doc says runs on the submit host does, and the GPU rules do not
    local = _localrules()
    rules = set(re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk")), re.M))
    said_local = {r for r in rules if r.startswith(("table", "figure_", "fetch_"))}
    said_local |= {"report_mlflow", "comparisons", "all"}
    assert said_local <= local, f"docs/cluster.md says these run on the submit host: {sorted(said_local - local)}"
    assert not local & {"train", "extract", "evaluate"}


def _subprocess_calls(text: str):
    """(line, call text) of every subprocess.run / Popen / check_* call in ``text``."""
    for m in re.finditer(r"subprocess\.(?:run|Popen|check_output|check_call)\(", text):
        i, depth = m.end(), 1
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        yield text[:m.start()].count("\n") + 1, text[m.start():i]


def test_no_test_runs_snakemake_in_the_checkout():
    """Every test that starts Snakemake gives it a directory of its own (a tmp_path): after the
    README's quick start the checkout holds results/, and a test run there would see them."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for line, call in _subprocess_calls(path.read_text()):
            if "snakemake" not in call.lower() and "cmd" not in call:
                continue
            if "cwd=" not in call or re.search(r"cwd=(str\()?(ROOT|REPO)\b", call):
                offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, f"Snakemake run in the checkout (give it cwd=<tmp> and --directory <tmp>): {offenders}"


FAKE_SLURM = {  # just enough of SLURM's commands for the plugin to submit one job and see it fail
    "sbatch": 'echo "$@" >> "$FAKE_SBATCH_LOG"\necho 4242\n',
    "squeue": 'echo "4242|FAILED"\n',
    "sacct": 'case "$*" in *Account*) exit 0 ;; esac\necho "4242|FAILED"\n',
    "sinfo": "exit 0\n", "scontrol": "exit 0\n", "scancel": "exit 0\n",
}


def gres_form(profile_text: str) -> str:
    """profiles/slurm with its GPU request switched to the --gres form, as its comments (and docs/cluster.md) say."""
    lines, edited = [], 0
    for line in profile_text.splitlines():
        for old, new in (("      gpu: 1", "      # gpu: 1"), ("      # gpu: 0", "      gpu: 0"),
                         ('      # gres: "gpu:1"', '      gres: "gpu:1"')):
            if line.startswith(old):
                line, edited = new + line[len(old):], edited + 1
                break
        lines.append(line)
    assert edited == 3, f"profiles/slurm lacks the three lines of its GPU request's --gres form ({edited} found)"
    return "\n".join(lines) + "\n"


def test_slurm_profile_asks_for_gpus_with_gpus_or_with_gres_and_requeues(tmp_path):
    """What profiles/slurm makes sbatch get for a training job, as shipped (--gpus=1) and in its --gres form
    (--gres=gpu:1 and no --gpus); both with --requeue. SLURM's commands are stand-ins recording sbatch's
    arguments (tests/cluster/run.sh runs both forms on a real cluster)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    profiles = {"gpus": ROOT / "profiles/slurm", "gres": tmp_path / "profile-gres"}
    profiles["gres"].mkdir()
    (profiles["gres"] / "config.yaml").write_text(gres_form((ROOT / "profiles/slurm/config.yaml").read_text()))
    cases = {}
    for form, profile in profiles.items():
        work = tmp_path / form
        for f in ("data/synthetic.manifest.json", "results/synthetic/dataset.json", "results/synthetic/mean_image.pt"):
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            (work / f).write_text("{}")  # the training's inputs: only the training job is left to submit
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               "FAKE_SBATCH_LOG": str(work / "sbatch.log"), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
        cases[form] = subprocess.Popen(
            [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--profile", str(profile),
             "results/synthetic/baseline/seed0/model.pt", "--retries", "0", "--config", "mlflow={enabled: false}",
             "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"],
            cwd=work, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for form, proc in cases.items():
        out, _ = proc.communicate(timeout=300)
        log = tmp_path / form / "sbatch.log"
        assert log.exists(), out[-3000:]
        args = log.read_text().split("--wrap=")[0].split()
        assert "--requeue" in args and "--cpus-per-task=8" in args, args
        if form == "gpus":
            assert "--gpus=1" in args and not any(a.startswith("--gres") for a in args), args
        else:
            assert "--gres=gpu:1" in args and not any(a.startswith("--gpus") for a in args), args
