"""The cluster test's checker (tests/cluster/check_run.py) on records shaped like a real run's.

The records below are trimmed copies of what Snakemake 9.27, snakemake-executor-plugin-slurm 2.8
and Debian's slurm-wlm 22.05 wrote in a run of tests/cluster/run.sh. No cluster is needed here.
"""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("check_run", Path(__file__).with_name("check_run.py"))
check_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_run)

UUID = "c7c39545-f2f7-45a8-a99a-570face03339"
RULER = "=" * 80


def submitted(job, slurm, rule, wc):
    return (f"Job {job} has been submitted with SLURM jobid {slurm} "
            f"(log: /w/repo/.snakemake/slurm_logs/rule_{rule}/{wc}/{slurm}.log).")


# The main Snakemake log: a failed SLURM job's log is quoted in it, holding the job-side
# Snakemake's own `rule train:` and `localrule train:` headers, which must not be counted.
SNAKEMAKE_LOG = "\n".join([
    f"SLURM run ID: {UUID}",
    "[Mon Nov 23 22:39:28 2026]", "localrule synthesize:", "Finished jobid: 2 (Rule: synthesize)",
    "[Mon Nov 23 22:40:40 2026]", "rule train:", "    jobid: 1",
    "[Mon Nov 23 22:40:40 2026]", "rule train:", "    jobid: 5",
    submitted(1, 12, "train", "synthetic_baseline_0"),
    submitted(5, 13, "train", "synthetic_mutual_0"),
    "Error in rule train:",
    "Logfile results/logs/train/synthetic/baseline-seed0.log:", RULER,
    "sitecustomize.InjectedFailure: REID_FAIL_ONCE: injected failure", RULER,
    "Logfile /w/repo/.snakemake/slurm_logs/rule_train/synthetic_baseline_0/12.log:", RULER,
    "SNAKEMAKE", "=========",
    "rule train:", "localrule train:", "Error in rule train:", RULER,
    "Trying to restart job 1.",
    "rule train:", submitted(1, 14, "train", "synthetic_baseline_0"),
    "rule extract:", submitted(4, 15, "extract", "synthetic_mutual_0"),
    "rule extract:", submitted(0, 16, "extract", "synthetic_baseline_0"),
    "rule evaluate:", submitted(3, 17, "evaluate", "synthetic_mutual_0"),
    "rule evaluate:", submitted(6, 18, "evaluate", "synthetic_baseline_0"),
    "localrule table2:",
])

SIZES = {"train": ("8", "1440", "32000M"), "extract": ("4", "120", "16000M"), "evaluate": ("4", "120", "32000M")}
RULE_OF = {12: "train", 13: "train", 14: "train", 15: "extract", 16: "extract", 17: "evaluate", 18: "evaluate"}


def jobcomp_line(job, state="COMPLETED", partition="ci", name=UUID, cpus=None):
    c, minutes, mem = SIZES[RULE_OF[job]]
    return (f"JobId={job} UserId=root(0) GroupId=root(0) Name={name} JobState={state} Partition={partition} "
            f"TimeLimit={minutes} NodeList=localhost NodeCnt=1 ProcCnt={cpus or c} WorkDir=/w/repo "
            f"ReservationName= Tres=cpu={cpus or c},mem={mem},node=1,billing={c} Account= QOS= "
            f"DerivedExitCode=0:0 ExitCode=0:0 ")


PROFILE = """
set-resources:
  train: {gpu: 1, gpu_model: "fakegpu", mem_mb: 32000, runtime: 1440}
  extract: {gpu: 1, mem_mb: 16000, runtime: 120}
  evaluate: {mem_mb: 32000, runtime: 120}
set-threads: {train: 8, extract: 4, evaluate: 4}
"""


def write_run(tmp_path, jobcomp=None, probe=None, squeue=None, log=SNAKEMAKE_LOG):
    states = {12: "FAILED"}
    jobcomp = jobcomp if jobcomp is not None else [jobcomp_line(j, states.get(j, "COMPLETED")) for j in RULE_OF]
    if probe is None:
        probe = []
        for j, rule in RULE_OF.items():
            cuda = "0" if rule in ("train", "extract") else "unset"
            probe += [f"job={j} step=none name={UUID} cuda={cuda}", f"job={j} step=0 name=python cuda={cuda}"]
    if squeue is None:
        tres = {"train": "gres:gpu:fakegpu:1", "extract": "gres:gpu:1", "evaluate": "N/A"}
        squeue = [f"{j:<16}{tres[rule]:<48}" for j, rule in RULE_OF.items()]
    files = {"snakemake.log": log, "jobcomp.txt": "\n".join(jobcomp), "tasks.log": "\n".join(probe),
             "squeue.txt": "\n".join(squeue), "profile.yaml": PROFILE}
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    return check_run.argparse.Namespace(
        snakemake_log=tmp_path / "snakemake.log", jobcomp=tmp_path / "jobcomp.txt",
        probe=tmp_path / "tasks.log", squeue=tmp_path / "squeue.txt", partition="ci",
        profile_config=tmp_path / "profile.yaml", trained_models=2)


def run_checks(args, capsys):
    report = check_run.Report()
    check_run.check_slurm(args, report)
    out = capsys.readouterr().out
    return report.failed, [line for line in out.splitlines() if line.startswith("FAIL")]


def test_quoted_job_logs_are_not_counted_as_jobs():
    headers, submissions, uuid = check_run.parse_snakemake_log(SNAKEMAKE_LOG)
    assert uuid == UUID
    assert headers[(False, "train")] == 3  # two jobs and one retry; the quoted log's header is dropped
    assert headers[(True, "train")] == 0
    assert headers[(True, "table2")] == 1 and headers[(True, "synthesize")] == 1
    assert [s for s, _ in submissions] == [str(j) for j in RULE_OF]
    assert dict(submissions) == {str(j): r for j, r in RULE_OF.items()}


@pytest.mark.parametrize("tres, mb", [("cpu=8,mem=32000M,node=1", 32000), ("cpu=1,mem=64G,node=1", 65536),
                                      ("mem=512K", 0), ("cpu=1,node=1", None)])
def test_tres_memory_in_mb(tres, mb):
    assert check_run.tres_mem_mb(tres) == mb


def test_a_consistent_run_passes(tmp_path, capsys):
    failed, lines = run_checks(write_run(tmp_path), capsys)
    assert (failed, lines) == (0, [])


def test_a_gpu_job_without_cuda_visible_devices_fails(tmp_path, capsys):
    args = write_run(tmp_path)
    text = args.probe.read_text().replace("job=15 step=0 name=python cuda=0", "job=15 step=0 name=python cuda=unset")
    args.probe.write_text(text)
    failed, lines = run_checks(args, capsys)
    assert failed == 1 and "SLURM job 15 (extract) ran with CUDA_VISIBLE_DEVICES set" in lines[0]


def test_a_cpu_job_that_saw_a_gpu_fails(tmp_path, capsys):
    args = write_run(tmp_path)
    args.probe.write_text(args.probe.read_text().replace("job=17 step=0 name=python cuda=unset",
                                                         "job=17 step=0 name=python cuda=0"))
    failed, lines = run_checks(args, capsys)
    assert failed == 1 and "SLURM job 17 (evaluate) ran without a GPU" in lines[0]


def test_a_heavy_rule_run_locally_fails(tmp_path, capsys):
    log = SNAKEMAKE_LOG.replace("rule evaluate:\n" + submitted(6, 18, "evaluate", "synthetic_baseline_0"),
                                "localrule evaluate:")
    failed, lines = run_checks(write_run(tmp_path, log=log), capsys)
    assert failed == 1 and "no heavy rule ran on the submit host" in lines[0]


def test_a_remote_job_without_a_submission_fails(tmp_path, capsys):
    log = SNAKEMAKE_LOG.replace(submitted(6, 18, "evaluate", "synthetic_baseline_0"), "")
    failed, lines = run_checks(write_run(tmp_path, log=log), capsys)
    assert failed == 1 and "every non-local job went through sbatch" in lines[0]


def test_wrong_sizes_partition_and_gpu_model_fail(tmp_path, capsys):
    jobcomp = [jobcomp_line(12, "FAILED")] + [jobcomp_line(j) for j in (13, 15, 16, 17, 18)]
    jobcomp.append(jobcomp_line(14, cpus="2", partition="debug"))
    squeue = [f"{j:<16}{'gres:gpu:1' if RULE_OF[j] != 'evaluate' else 'N/A':<48}" for j in RULE_OF]
    failed, lines = run_checks(write_run(tmp_path, jobcomp=jobcomp, squeue=squeue), capsys)
    assert any("SLURM job 14 (train) carries the run's name and partition ci" in l for l in lines)
    assert any("SLURM job 14 (train) got the profile's CPUs" in l for l in lines)
    assert sum("requested gres:gpu:fakegpu:1" in l for l in lines) == 3  # all three train jobs


def test_no_failure_means_the_retry_was_not_exercised(tmp_path, capsys):
    jobcomp = [jobcomp_line(j) for j in RULE_OF]  # job 12 COMPLETED: the injected failure never happened
    failed, lines = run_checks(write_run(tmp_path, jobcomp=jobcomp), capsys)
    assert failed == 1 and "exactly one SLURM job failed" in lines[0]


def test_a_job_missing_from_slurms_record_fails(tmp_path, capsys):
    jobcomp = [jobcomp_line(12, "FAILED")] + [jobcomp_line(j) for j in (13, 14, 15, 16, 17)]
    failed, lines = run_checks(write_run(tmp_path, jobcomp=jobcomp), capsys)
    assert any("SLURM job 18 (evaluate) is in SLURM's job record" in l for l in lines)
