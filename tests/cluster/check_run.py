"""Checks of one workflow run through SLURM, for tests/cluster/run.sh.

Reads what the run left behind - Snakemake's log, SLURM's job-completion file, the task prolog's
record of each task's environment, `squeue` output and the MLflow server - and prints one line per
check, `ok   <what>` or `FAIL <what>: <why>`; run.sh counts them. Exit status 0 unless the
arguments are unusable (missing files are reported as failed checks, not crashes).

Only the standard library, except for the MLflow checks (the project's venv has mlflow).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

GPU_RULES = ("train", "extract")  # rules the profile gives a GPU
REMOTE_RULES = ("train", "extract", "evaluate")  # the heavy rules that must go through sbatch

SUBMITTED = re.compile(
    r"Job (?P<sm>\d+) has been submitted with SLURM jobid (?P<slurm>\d+) "
    r"\(log: .*?/rule_(?P<rule>\w+)/"
)
RULER = "=" * 80  # Snakemake frames a quoted log file with these
RULE_HEADER = re.compile(r"^(?P<local>local)?rule (?P<rule>\w+):\s*$")


class Report:
    def __init__(self) -> None:
        self.failed = 0

    def check(self, ok: bool, what: str, why: str = "") -> bool:
        if ok:
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}: {why}" if why else f"FAIL {what}")
        return ok


def strip_embedded_logs(text: str) -> str:
    """Drop the log files Snakemake quotes after a failure (`Logfile X:` between two rules of 80 `=`):
    a failed SLURM job's log holds the job-side Snakemake's own `rule`/`localrule` headers."""
    kept, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("Logfile ") and lines[i].rstrip().endswith(":") and \
                i + 1 < len(lines) and lines[i + 1].rstrip() == RULER:
            i += 2
            while i < len(lines) and lines[i].rstrip() != RULER:
                i += 1
            i += 1
            continue
        kept.append(lines[i])
        i += 1
    return "\n".join(kept)


def parse_snakemake_log(text: str):
    """(rule headers: Counter of (is_local, rule), submissions: list of (slurm_id, rule), run uuid)."""
    text = strip_embedded_logs(text)
    headers: Counter = Counter()
    for line in text.splitlines():
        m = RULE_HEADER.match(line)
        if m:
            headers[(bool(m.group("local")), m.group("rule"))] += 1
    submissions = [(m.group("slurm"), m.group("rule")) for m in SUBMITTED.finditer(text)]
    uuid = re.search(r"^SLURM run ID: (\S+)", text, re.M)
    return headers, submissions, uuid.group(1) if uuid else None


def parse_jobcomp(text: str) -> dict[str, dict[str, str]]:
    """jobcomp/filetxt lines: space-separated KEY=VALUE fields, keyed by JobId."""
    jobs = {}
    for line in text.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def parse_probe(text: str) -> dict[str, dict[str, str]]:
    """Task prolog lines `job=ID step=STEP name=NAME cuda=VALUE` -> {job id: {step: cuda}}."""
    steps: dict[str, dict[str, str]] = defaultdict(dict)
    for line in text.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "job" in fields and "step" in fields:
            steps[fields["job"]][fields["step"]] = fields.get("cuda", "unset")
    return steps


def parse_squeue(text: str) -> dict[str, str]:
    """`squeue -h -O JobID:16,tres-per-job:48` -> {job id: tres per job}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def profile_resources(profile_config: str, rule: str) -> dict:
    import yaml  # pyyaml: a dependency of snakemake

    return (yaml.safe_load(Path(profile_config).read_text()).get("set-resources") or {}).get(rule) or {}


def expected_sizes(profile_config: str, rule: str) -> dict | None:
    """What the profile asks for a rule: CPUs (set-threads), memory and minutes (set-resources)."""
    import yaml

    profile = yaml.safe_load(Path(profile_config).read_text())
    res = (profile.get("set-resources") or {}).get(rule)
    threads = (profile.get("set-threads") or {}).get(rule)
    if not res or threads is None:
        return None
    return {"cpus": int(threads), "minutes": int(res["runtime"]), "mem_mb": int(res["mem_mb"])}


def tres_mem_mb(tres: str) -> int | None:
    """The memory of a jobcomp Tres field (`cpu=8,mem=32000M,node=1`) in MB."""
    m = re.search(r"(?:^|,)mem=(\d+(?:\.\d+)?)([KMGT]?)", tres)
    if not m:
        return None
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return round(float(m.group(1)) * scale)


def read(path: Path, report: Report) -> str:
    if report.check(path.is_file(), f"{path.name} exists", f"{path} is missing"):
        return path.read_text(errors="replace")
    return ""


def check_slurm(args, report: Report) -> None:
    log = read(Path(args.snakemake_log), report)
    jobcomp = parse_jobcomp(read(Path(args.jobcomp), report))
    probe = parse_probe(read(Path(args.probe), report))
    tres = parse_squeue(read(Path(args.squeue), report))
    headers, submissions, uuid = parse_snakemake_log(log)

    # every job Snakemake ran remotely has a SLURM job id; only cheap rules ran on the submit host
    remote = Counter({rule: n for (local, rule), n in headers.items() if not local})
    local = sorted({rule for (is_local, rule) in headers if is_local})
    submitted = Counter(rule for _, rule in submissions)
    report.check(bool(submissions), "jobs were submitted with sbatch", "no 'submitted with SLURM jobid' line")
    report.check(remote == submitted, "every non-local job went through sbatch",
                 f"rule headers {dict(remote)} vs submissions {dict(submitted)}")
    for rule in REMOTE_RULES:
        report.check(submitted[rule] >= 1, f"rule {rule} ran as a SLURM job", f"local rules were {local}")
    heavy_local = [r for r in local if r in REMOTE_RULES]
    report.check(not heavy_local, "no heavy rule ran on the submit host", f"local: {heavy_local}")

    # SLURM's own record of each job: it exists, belongs to this run, ran in the profile's partition
    states = Counter()
    for slurm_id, rule in submissions:
        job = jobcomp.get(slurm_id)
        if not report.check(job is not None, f"SLURM job {slurm_id} ({rule}) is in SLURM's job record",
                            f"not in {args.jobcomp}"):
            continue
        states[(rule, job.get("JobState"))] += 1
        report.check(job.get("Name") == uuid and job.get("Partition") == args.partition,
                     f"SLURM job {slurm_id} ({rule}) carries the run's name and partition {args.partition}",
                     f"Name={job.get('Name')} Partition={job.get('Partition')}")
    report.check(submitted["train"] == args.trained_models + 1,
                 "the failed training job was resubmitted once",
                 f"{submitted['train']} train submissions for {args.trained_models} models")
    failed = {k: n for k, n in states.items() if k[1] != "COMPLETED"}
    report.check(failed == {("train", "FAILED"): 1},
                 "exactly one SLURM job failed: the training job with the injected failure",
                 f"non-COMPLETED jobs by (rule, state): {failed}")

    # the profile's sizes reached sbatch (set-threads / set-resources)
    for slurm_id, rule in submissions:
        job = jobcomp.get(slurm_id)
        want = expected_sizes(args.profile_config, rule)
        if want and job:
            got = {"cpus": int(job.get("ProcCnt", 0)), "minutes": int(job.get("TimeLimit", 0)),
                   "mem_mb": tres_mem_mb(job.get("Tres", ""))}
            report.check(got == want, f"SLURM job {slurm_id} ({rule}) got the profile's CPUs, memory and time",
                         f"got {got}, want {want}")

    # GPUs: requested through sbatch, and visible as CUDA_VISIBLE_DEVICES inside the job's step
    for slurm_id, rule in submissions:
        steps = probe.get(slurm_id, {})
        task_steps = {s: c for s, c in steps.items() if s != "none"}  # "none": the batch script itself
        if rule in GPU_RULES:
            model = profile_resources(args.profile_config, rule).get("gpu_model")
            want_tres = f"gres:gpu:{model}:1" if model else "gres:gpu:1"
            report.check(tres.get(slurm_id) == want_tres, f"SLURM job {slurm_id} ({rule}) requested {want_tres}",
                         f"squeue tres-per-job: {tres.get(slurm_id)}")
            report.check(bool(task_steps) and all(c not in ("unset", "") for c in task_steps.values()),
                         f"SLURM job {slurm_id} ({rule}) ran with CUDA_VISIBLE_DEVICES set",
                         f"task environments seen: {steps or 'none'}")
        else:
            report.check(bool(task_steps) and all(c == "unset" for c in task_steps.values()),
                         f"SLURM job {slurm_id} ({rule}) ran without a GPU",
                         f"task environments seen: {steps or 'none'}")


def check_mlflow(args, report: Report) -> None:
    run_info_files = sorted(Path(args.workdir).glob("results/*/*/seed*/run.json"))
    run_ids = [json.loads(p.read_text()).get("mlflow_run_id") for p in run_info_files]
    report.check(len(run_info_files) == args.trained_models and all(run_ids),
                 f"{args.trained_models} trained models wrote an MLflow run id (run.json)",
                 f"found {[str(p) for p in run_info_files]}, run ids {run_ids}")
    stray = [p for p in (Path(args.workdir) / "results" / "mlflow.db", Path(args.workdir) / "mlflow.db") if p.exists()]
    report.check(not stray, "no job fell back to a local SQLite store", f"found {stray}")
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=args.tracking_uri)
        experiments = client.search_experiments()
        runs = [r for e in experiments for r in client.search_runs([e.experiment_id], max_results=1000)]
    except Exception as e:  # the server being unreachable is a failed check, not a crash
        report.check(False, f"MLflow server {args.tracking_uri} answers", repr(e))
        return
    status = {r.info.run_id: r.info.status for r in runs}
    finished = run_ids
    for path, run_id in zip(run_info_files, finished):
        report.check(status.get(run_id) == "FINISHED", f"MLflow run of {path.parent.relative_to(args.workdir)} is FINISHED",
                     f"run {run_id}: {status.get(run_id, 'not on the server')}")
    # the retry of the failed training continued its run (reid.tracking: one run per training identity)
    tags = {r.info.run_id: r.data.tags for r in runs}
    continued = [rid for rid in finished if tags.get(rid, {}).get("previous_attempt_status") == "FAILED"]
    report.check(len(continued) >= 1 and "FAILED" not in status.values(),
                 "the failed training attempt's run was continued by its retry and ended FINISHED (one run per training)",
                 f"statuses on the server: {dict(Counter(status.values()))}; "
                 f"attempts: {[tags[rid].get('attempt') for rid in finished if rid in tags]}")
    train = [r for r in runs if r.data.tags.get("rule") == "train"]
    report.check(len(train) == args.trained_models, f"{args.trained_models} training runs on the server, no duplicate",
                 f"found {len(train)}")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if password:
        leaked = [r.info.run_name for r in runs if password in json.dumps([r.data.params, r.data.tags])]
        report.check(not leaked, "the MLflow password is in no run's parameters or tags", f"found in {leaked}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snakemake-log", required=True)
    ap.add_argument("--jobcomp", required=True)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--squeue", required=True)
    ap.add_argument("--partition", required=True)
    ap.add_argument("--profile-config", required=True, help="the profile's config.yaml the run used")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--trained-models", type=int, required=True)
    args = ap.parse_args(argv)
    report = Report()
    check_slurm(args, report)
    check_mlflow(args, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
