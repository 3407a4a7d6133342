#!/usr/bin/env bash
# The workflow on a real one-node SLURM cluster with a fake GPU:  bash tests/cluster/run.sh  (as root)
#
# Brings the cluster up (setup.sh), starts MLflow's basic-auth server on 127.0.0.1 (the jobs log in
# as a user of their own; a client without credentials gets 401), checks that the workflow stops at
# once when that server cannot be reached, then runs the workflow on the tiny synthetic config
# (tests/cluster/config.yaml) through profiles/slurm - with only the partition set and the training
# GPU model pinned - while one training job fails once (REID_FAIL_ONCE), and checks the outcome
# (check_run.py): every heavy job went through sbatch, GPU jobs got CUDA_VISIBLE_DEVICES, the retry
# completed the workflow and continued the failed attempt's MLflow run to FINISHED, and the password
# is in no run's parameters or tags. The cluster and the server are always torn down. The last
# line is `N passed, M failed`; the exit status is 0 only when nothing failed. Without root or
# apt-get it prints why it is skipped and exits 0.
#
#   REID_VENV            the project's venv (default <repo>/.venv); needs snakemake-executor-plugin-slurm
#   REID_SLURM_STATE     cluster state and the test's work folder (default /tmp/reid-slurm)
#   REID_CLUSTER_TIMEOUT seconds allowed for the workflow run (default 900)
#   REID_CLUSTER_TARGETS what to build (default results/tables/table2.md: dataset, train, extract,
#                        evaluate and a table - every kind of job; "" = the workflow's default target)
#   REID_CLUSTER_KEEP=1  keep the state folder (logs, work copy) after the teardown
#   REID_CLUSTER_LOGS    where the logs of a failed run are copied (default /tmp/reid-slurm-logs)
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${REID_VENV:-$REPO/.venv}
export REID_SLURM_STATE=${REID_SLURM_STATE:-/tmp/reid-slurm}
export REID_SLURM_PARTITION=${REID_SLURM_PARTITION:-ci}
export REID_SLURM_GPU_TYPE=${REID_SLURM_GPU_TYPE:-fakegpu}
STATE=$REID_SLURM_STATE
WORK=$STATE/work
TIMEOUT=${REID_CLUSTER_TIMEOUT:-900}
TARGETS=${REID_CLUSTER_TARGETS-results/tables/table2.md}

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; } # check WHAT SHELL-CONDITION
log() { echo "[run $(date +%T)] $*"; }

# ------------------------------------------------------------------------------ skip
skip=
if [ "$(id -u)" != 0 ]; then
  skip="not root (the cluster needs root to install and start munged, slurmctld and slurmd)"
elif ! command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
  skip="no apt-get to install Debian's slurm-wlm, and SLURM is not installed"
fi
if [ -n "$skip" ]; then
  echo "skipped: $skip"
  echo "0 passed, 0 failed"
  exit 0
fi

# ----------------------------------------------------------------- always tear down
MLFLOW_PID=
finish() {
  trap - EXIT INT TERM
  if [ -n "$MLFLOW_PID" ] && kill -0 "$MLFLOW_PID" 2>/dev/null; then
    # setsid made the server its own process group: this ends it and its workers, nothing else
    kill -TERM -- "-$MLFLOW_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$MLFLOW_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$MLFLOW_PID" 2>/dev/null
  fi
  if [ "$fail" != 0 ] && [ -d "$WORK" ]; then # keep what explains the failure, small files only
    local keep=${REID_CLUSTER_LOGS:-/tmp/reid-slurm-logs}
    rm -rf "$keep" && mkdir -p "$keep"
    cp -r "$STATE/log" "$keep/slurm" 2>/dev/null
    cp "$STATE/probe/tasks.log" "$WORK"/*.log "$WORK/squeue.txt" "$WORK/mlflow/server.log" "$keep/" 2>/dev/null
    cp -r "$WORK/repo/.snakemake/slurm_logs" "$keep/slurm_jobs" 2>/dev/null
    cp -r "$WORK/repo/results/logs" "$keep/rule_logs" 2>/dev/null
    echo "logs of the failed run kept in $keep"
  fi
  if [ "${REID_CLUSTER_KEEP:-0}" = 1 ]; then
    "$HERE/teardown.sh"
    echo "state kept in $STATE"
  else
    REID_SLURM_PURGE=1 "$HERE/teardown.sh"
  fi
  echo "$pass passed, $fail failed"
  # an explicit status: inside an EXIT trap a bare `exit` returns the status from before the trap
  if [ "$fail" = 0 ]; then exit 0; else exit 1; fi
}
trap finish EXIT
trap 'bad "interrupted"; exit 1' INT TERM

# ------------------------------------------------------------------------- cluster
start=$(date +%s)
"$HERE/setup.sh"
rc=$?
if [ "$rc" = 0 ]; then
  ok "one-node SLURM cluster with a fake GPU is up ($(($(date +%s) - start)) s)"
elif [ "$rc" = 3 ]; then # a SLURM this harness did not make: leave it alone
  trap - EXIT INT TERM
  echo "skipped: this machine has a SLURM configuration or daemon of its own (see above)"
  echo "0 passed, 0 failed"
  exit 0
else
  bad "cluster set-up (see the messages above)"
  exit 1
fi

check "venv $VENV has snakemake and snakemake-executor-plugin-slurm" \
  '"$VENV/bin/python" -c "import snakemake, snakemake_executor_plugin_slurm, mlflow" 2>/dev/null'
[ "$fail" = 0 ] || exit 1

# A copy of the repository, so the test neither reads nor writes the checkout's results/.
rm -rf "$WORK"
mkdir -p "$WORK/repo" "$WORK/profile" "$WORK/mlflow"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then # tracked and not-ignored files only
  git -C "$REPO" ls-files -z -co --exclude-standard |
    tar -C "$REPO" --null -T - --ignore-failed-read -c 2>/dev/null | tar -C "$WORK/repo" -x
else
  tar -C "$REPO" -c --exclude=./.git --exclude=./.venv --exclude=./results --exclude=./data \
    --exclude=./resources --exclude=./.snakemake --exclude=./mlruns --exclude=./mlflow.db \
    --exclude='__pycache__' . | tar -C "$WORK/repo" -x
fi
check "the repository was copied to $WORK/repo" '[ -f "$WORK/repo/Snakefile" ] && [ -f "$WORK/repo/tests/cluster/config.yaml" ]'
# The profile as shipped, edited as a user would: the partition, and the training GPU's model.
sed -e "s/^\(  slurm_partition: \)\"[^\"]*\"/\1\"$REID_SLURM_PARTITION\"/" \
  -e "0,/# gpu_model: \"[^\"]*\"/s//gpu_model: \"$REID_SLURM_GPU_TYPE\"/" \
  "$REPO/profiles/slurm/config.yaml" >"$WORK/profile/config.yaml"
changed=$(diff "$REPO/profiles/slurm/config.yaml" "$WORK/profile/config.yaml" | grep -c '^>')
check "the test profile differs from profiles/slurm in 2 lines (partition, train's gpu_model)" '[ "$changed" = 2 ]'

# ------------------------------------------------------------------------ MLflow
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URI=http://127.0.0.1:$PORT
# MLflow's basic-auth server, as docs/cluster.md runs it: the admin is made on first start from
# MLFLOW_AUTH_ADMIN_PASSWORD; the jobs run as a user of their own (MLFLOW_TRACKING_USERNAME/_PASSWORD)
secret() { "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))'; }
ADMIN_PASSWORD=$(secret)
printf '%s\n' "[mlflow]" "default_permission = READ" "database_uri = sqlite:///$WORK/mlflow/basic_auth.db" \
  "admin_username = reid-admin" "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" \
  >"$WORK/mlflow/basic_auth.ini"
# --workers 1 and no job execution: 2 processes and ~5 s to answer, instead of 15 and ~20 s
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_AUTH_CONFIG_PATH="$WORK/mlflow/basic_auth.ini" \
  MLFLOW_AUTH_ADMIN_PASSWORD=$ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret) \
  setsid "$VENV/bin/mlflow" server --app-name basic-auth --host 127.0.0.1 \
  --port "$PORT" --workers 1 --backend-store-uri "sqlite:///$WORK/mlflow/mlflow.db" \
  --artifacts-destination "$WORK/mlflow/artifacts" >"$WORK/mlflow/server.log" 2>&1 </dev/null &
MLFLOW_PID=$!
up=0
for _ in $(seq 240); do
  "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('$URI/health', timeout=2)" 2>/dev/null && { up=1; break; }
  kill -0 "$MLFLOW_PID" 2>/dev/null || break
  sleep 0.5
done
if [ "$up" = 1 ]; then ok "MLflow basic-auth server answers at $URI"; else
  bad "MLflow server did not come up"
  tail -n 20 "$WORK/mlflow/server.log"
  exit 1
fi
export MLFLOW_TRACKING_USERNAME=reid-jobs
MLFLOW_TRACKING_PASSWORD=$(secret)
export MLFLOW_TRACKING_PASSWORD
MAKE_USER='import sys; from mlflow.server import get_app_client
get_app_client("basic-auth", tracking_uri=sys.argv[1]).create_user(sys.argv[2], sys.argv[3])'
check "the admin made the jobs' user $MLFLOW_TRACKING_USERNAME" \
  'MLFLOW_TRACKING_USERNAME=reid-admin MLFLOW_TRACKING_PASSWORD=$ADMIN_PASSWORD "$VENV/bin/python" -c "$MAKE_USER" \
     "$URI" "$MLFLOW_TRACKING_USERNAME" "$MLFLOW_TRACKING_PASSWORD" >/dev/null 2>"$WORK/mlflow/user.log"'
UNAUTHENTICATED='import sys, urllib.request as u, urllib.error as e
try:
    u.urlopen(sys.argv[1] + "/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    print(200)
except e.HTTPError as x:
    print(x.code)'
check "a client without credentials is refused (HTTP 401)" \
  '[ "$(env -u MLFLOW_TRACKING_USERNAME -u MLFLOW_TRACKING_PASSWORD "$VENV/bin/python" -c "$UNAUTHENTICATED" "$URI")" = 401 ]'
[ "$fail" = 0 ] || exit 1

cd "$WORK/repo" || exit 1
export PATH="$VENV/bin:$PATH" # the jobs run `python -m reid` with the project's venv (sbatch --export=ALL)
# No slurmdbd on the test cluster: `sacct` fails, and the plugin's default sacct status polling
# would hang Snakemake forever, so job states come from squeue (slurm.conf keeps them an hour).
SLURM_FLAGS=(--profile "$WORK/profile" --configfile tests/cluster/config.yaml
  --slurm-status-command squeue --slurm-init-seconds-before-status-checks 2 --slurm-keep-successful-logs)
submitted() { if [ -f "$STATE/log/jobcomp.txt" ]; then wc -l <"$STATE/log/jobcomp.txt"; else echo 0; fi; }

# ------------------------------------------------- fail fast without the server
before=$(submitted)
t0=$(date +%s)
MLFLOW_TRACKING_URI=http://127.0.0.1:9 timeout -k 15 120 snakemake $TARGETS "${SLURM_FLAGS[@]}" \
  >"$WORK/failfast.log" 2>&1
rc=$?
check "unreachable MLflow server: the workflow stops with an error ($(($(date +%s) - t0)) s, exit $rc)" \
  '[ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$rc" != 137 ]'
check "... saying the server cannot be reached" 'grep -q "cannot be reached" "$WORK/failfast.log"'
check "... before submitting any job" '[ "$(submitted)" = "$before" ] && ! grep -q "submitted with SLURM jobid" "$WORK/failfast.log"'
[ "$fail" = 0 ] || tail -n 30 "$WORK/failfast.log"
rm -rf .snakemake results

# ------------------------------------------------------------- the real run
export MLFLOW_TRACKING_URI=$URI
export REID_FAIL_ONCE=$WORK/fail-once.marker # the first training job fails once, after opening its run
# ... through tests/cluster/faults/sitecustomize.py, which the jobs import from PYTHONPATH (sbatch
# --export=ALL): the fault injection lives with this test, not in the package
export PYTHONPATH=$WORK/repo/tests/cluster/faults${PYTHONPATH:+:$PYTHONPATH}
log "snakemake ${TARGETS:-(the default target)} through SLURM; logs in $WORK"
t0=$(date +%s)
# -k: a Snakemake stuck polling SLURM may ignore SIGTERM
timeout -k 30 "$TIMEOUT" snakemake $TARGETS "${SLURM_FLAGS[@]}" >"$WORK/snakemake.log" 2>&1
rc=$?
secs=$(($(date +%s) - t0))
check "workflow completed through SLURM (exit $rc, $secs s)" '[ "$rc" = 0 ]'
[ "$rc" = 0 ] || tail -n 60 "$WORK/snakemake.log"
check "the injected failure happened (marker written)" '[ -f "$REID_FAIL_ONCE" ]'
check "Snakemake reported the failed training job" 'grep -q "Error in rule train" "$WORK/snakemake.log"'

squeue -h --states=all -O 'JobID:16,tres-per-job:48' >"$WORK/squeue.txt" 2>&1
trained=$("$VENV/bin/python" - <<'EOF'
import yaml
cfg = yaml.safe_load(open("config.yaml"))
cfg.update(yaml.safe_load(open("tests/cluster/config.yaml")))
print(len(cfg["datasets"]) * len(cfg["models"]) * len(cfg["seeds"]))
EOF
)
while IFS= read -r line; do
  case $line in
  ok\ *) pass=$((pass + 1)); echo "$line" ;;
  FAIL\ *) fail=$((fail + 1)); echo "$line" ;;
  *) echo "$line" ;;
  esac
done < <("$VENV/bin/python" "$HERE/check_run.py" --snakemake-log "$WORK/snakemake.log" \
  --jobcomp "$STATE/log/jobcomp.txt" --probe "$STATE/probe/tasks.log" --squeue "$WORK/squeue.txt" \
  --partition "$REID_SLURM_PARTITION" --profile-config "$WORK/profile/config.yaml" \
  --workdir "$WORK/repo" --tracking-uri "$URI" --trained-models "$trained" 2>&1 ||
  echo "FAIL check_run.py exited with an error")
# ==================================================================================================
# BEGIN interrupted trainings (preemption, time limit). A training requeued in the middle of an epoch
# (`scontrol requeue`, what preemption does under --requeue) and one that SLURM ends at its time limit
# (cut to one minute once it has written its first checkpoint: `scontrol update TimeLimit=1`, so the
# end falls mid-training however fast or loaded the machine is; Snakemake then resubmits it,
# `retries`) both resume from their last checkpoint and end with a model.pt equal, tensor for
# tensor, to an uninterrupted training of the same configuration (tests/cluster/resume.yaml, run
# here without SLURM). The requeued training is submitted through the profile's --gres form
# (docs/cluster.md), the time-limited one without a GPU so that both run at once on the node's one
# fake GPU. REID_SLOW_EPOCH_S stretches each epoch by 10 s (faults/sitecustomize.py), which changes
# no number.
RESUME_TARGET=results/synthetic/baseline/seed0/model.pt
RESUME_CFG=(--configfile tests/cluster/config.yaml tests/cluster/resume.yaml)
RESUME_SLURM=(--slurm-status-command squeue --slurm-init-seconds-before-status-checks 2 --slurm-keep-successful-logs)
resume_copy() { # NAME: $WORK/NAME, the finished work copy without the target's training
  rm -rf "${WORK:?}/$1" && cp -a "$WORK/repo" "$WORK/$1" &&
    rm -rf "$WORK/$1/results/checkpoints" "$WORK/$1/results/synthetic/baseline" "$WORK/$1/.snakemake/slurm_logs" \
      "$WORK/$1/.snakemake/locks" "$WORK/$1/.snakemake/incomplete"
}
first_checkpoint() { # NAME PID: the SLURM id of run NAME's training job, once it has written a checkpoint
  local job= _
  for _ in $(seq 600); do
    job=$(sed -n 's/.*submitted with SLURM jobid \([0-9]*\) (log: .*\/rule_train\/.*/\1/p' "$WORK/$1.log" | head -n 1)
    [ -n "$job" ] && [ -f "$WORK/$1/results/checkpoints/synthetic/baseline/seed0/last.pt" ] && break
    kill -0 "$2" 2>/dev/null || break
    sleep 1
  done
  echo "$job"
}
partition_sed="s/^\(  slurm_partition: \)\"[^\"]*\"/\1\"$REID_SLURM_PARTITION\"/"
mkdir -p "$WORK/profile-gres" "$WORK/profile-nogpu"
# the --gres form, as profiles/slurm's comments tell a user to write it
sed -e "$partition_sed" -e 's/^      gpu: 1$/      # gpu: 1/' -e 's/^      # gpu: 0/      gpu: 0/' \
  -e 's/^      # gres: "gpu:1"$/      gres: "gpu:1"/' "$REPO/profiles/slurm/config.yaml" >"$WORK/profile-gres/config.yaml"
changed=$(diff "$REPO/profiles/slurm/config.yaml" "$WORK/profile-gres/config.yaml" | grep -c '^>')
check "the --gres profile differs from profiles/slurm in 4 lines (partition, the GPU request)" '[ "$changed" = 4 ]'
sed -e "$partition_sed" -e 's/^      gpu: 1$/      gpu: 0/' "$REPO/profiles/slurm/config.yaml" >"$WORK/profile-nogpu/config.yaml"
changed=$(diff "$REPO/profiles/slurm/config.yaml" "$WORK/profile-nogpu/config.yaml" | grep -c '^>')
check "the no-GPU profile differs from profiles/slurm in 2 lines (partition, gpu: 0)" '[ "$changed" = 2 ]'
resume_copy reference && resume_copy requeue && resume_copy timeout
log "interrupted trainings: an uninterrupted reference (local), a requeued and a time-limited training (SLURM)"
t0=$(date +%s)
# --cores all: a SLURM job's own Snakemake caps the profile's 8 threads at the node's cores, and torch's
# sums depend on the thread count; the node is this machine, so the reference gets the same threads
(cd "$WORK/reference" && env -u REID_SLOW_EPOCH_S timeout -k 30 900 snakemake $RESUME_TARGET "${RESUME_CFG[@]}" \
  --cores all --set-threads train=8) >"$WORK/reference.log" 2>&1 &
ref_pid=$!
(cd "$WORK/requeue" && REID_SLOW_EPOCH_S=10 timeout -k 30 900 snakemake $RESUME_TARGET "${RESUME_CFG[@]}" \
  --profile "$WORK/profile-gres" "${RESUME_SLURM[@]}") >"$WORK/requeue.log" 2>&1 &
rq_pid=$!
(cd "$WORK/timeout" && REID_SLOW_EPOCH_S=10 timeout -k 30 900 snakemake $RESUME_TARGET "${RESUME_CFG[@]}" \
  --profile "$WORK/profile-nogpu" "${RESUME_SLURM[@]}") >"$WORK/timeout.log" 2>&1 &
to_pid=$!
# the requeue: once the training job has written its first checkpoint, i.e. during its second epoch
rq_job=$(first_checkpoint requeue "$rq_pid")
rq_state=$(squeue -h -j "${rq_job:-0}" -o %T 2>/dev/null)
rq_tres=$(squeue -h -j "${rq_job:-0}" -O 'tres-per-node:40,tres-per-job:40' 2>/dev/null | tr -s ' ')
check "the requeue run's training job ${rq_job:-?} is RUNNING after its first checkpoint ($(($(date +%s) - t0)) s)" \
  '[ "$rq_state" = RUNNING ]'
check "... it was submitted with --gres=gpu:1, not --gpus (squeue tres-per-node, tres-per-job: $rq_tres)" \
  '[[ "$rq_tres" == *gres:gpu:1* ]] && [[ "$rq_tres" == *N/A* ]]'
check "scontrol requeue ${rq_job:-?}" 'scontrol requeue "$rq_job"'
# the time limit: cut to one minute once the training job has written its first checkpoint
to_job=$(first_checkpoint timeout "$to_pid")
check "the time-limit run's training job ${to_job:-?}: its time limit cut to 1 minute after its first checkpoint" \
  '[ -n "$to_job" ] && scontrol update JobId="$to_job" TimeLimit=1'
wait "$rq_pid"
rq_rc=$?
wait "$to_pid"
to_rc=$?
wait "$ref_pid"
ref_rc=$?
log "interrupted trainings done ($(($(date +%s) - t0)) s)"
check "the uninterrupted reference training completed (exit $ref_rc)" '[ "$ref_rc" = 0 ]'
check "the requeued training completed (exit $rq_rc)" '[ "$rq_rc" = 0 ]'
check "... under the same SLURM job id, not resubmitted by Snakemake" \
  '[ "$(grep -c "submitted with SLURM jobid .*/rule_train/" "$WORK/requeue.log")" = 1 ]'
check "... SLURM started it twice ($(grep -c "JobId=$rq_job " "$STATE/log/jobcomp.txt") jobcomp records of job $rq_job)" \
  '[ "$(grep -c "JobId=$rq_job " "$STATE/log/jobcomp.txt")" -ge 2 ]'
check "... and it resumed from its checkpoint" \
  'grep -q "checkpoint: resumed from" "$WORK/requeue/results/logs/train/synthetic/baseline-seed0.log"'
check "the time-limited training completed (exit $to_rc)" '[ "$to_rc" = 0 ]'
check "... after SLURM ended job ${to_job:-?} at its time limit (TIMEOUT) and Snakemake resubmitted it" \
  'grep -q "SLURM-job .$to_job. failed, SLURM status is: .TIMEOUT." "$WORK/timeout.log" &&
   [ "$(grep -c "submitted with SLURM jobid .*/rule_train/" "$WORK/timeout.log")" = 2 ]'
check "... and it resumed from its checkpoint" \
  'grep -q "checkpoint: resumed from" "$WORK/timeout/results/logs/train/synthetic/baseline-seed0.log"'
ref_threads=$(grep -o -- "--threads [0-9]*" "$WORK/reference.log" | tail -n 1)
job_threads=$(cat "$WORK/requeue/.snakemake/slurm_logs/rule_train/synthetic_baseline_0/"*.log 2>/dev/null |
  grep -o -- "--threads [0-9]*" | sort -u | tr '\n' ' ')
check "the trainings ran with the same threads (reference: $ref_threads; SLURM job: $job_threads)" \
  '[ -n "$ref_threads" ] && [ "$job_threads" = "$ref_threads " ]'
for run in requeue timeout; do
  same=$("$VENV/bin/python" "$HERE/same_model.py" "$WORK/reference/$RESUME_TARGET" "$WORK/$run/$RESUME_TARGET" 2>&1)
  check "the $run training's model.pt equals the uninterrupted one: $same" '[[ "$same" == equal* ]]'
done
for f in reference requeue timeout; do [ "$fail" = 0 ] || tail -n 25 "$WORK/$f.log"; done
# END interrupted trainings
# ==================================================================================================
exit
