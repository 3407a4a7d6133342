#!/usr/bin/env bash
# Stop what setup.sh started: cancel the cluster's jobs, stop slurmd, slurmctld and (only if
# setup.sh started it) munged, each by the pid in its pid file and only if that pid still runs the
# expected program; then remove the configuration files setup.sh wrote. Safe to run twice.
#   REID_SLURM_STATE       as in setup.sh
#   REID_SLURM_KEEP_MUNGE=1 leave munged running (setup.sh uses it for a restart)
#   REID_SLURM_PURGE=1     also remove the state directory and /etc/slurm/{slurm,gres}.conf
set -uo pipefail
STATE=${REID_SLURM_STATE:-/tmp/reid-slurm}
MARKER="written by reid tests/cluster/setup.sh (removed by teardown.sh)"

log() { echo "[teardown $(date +%T)] $*"; }
alive_pid() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
stop() { # stop PROGRAM PIDFILE
  local pid
  pid=$(cat "$2" 2>/dev/null) || return 0
  # pids get reused: signal it only if it is still the program we started
  if [ -n "$pid" ] && alive_pid "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 100); do alive_pid "$pid" || break; sleep 0.1; done
    if alive_pid "$pid"; then
      log "$1 still alive after 10 s, SIGKILL"
      kill -KILL "$pid"
    fi
  fi
  rm -f "$2"
}

if [ -f "$STATE/run/slurmctld.pid" ] && grep -qF "$MARKER" /etc/slurm/slurm.conf 2>/dev/null &&
  timeout 5 scontrol ping 2>/dev/null | grep -q UP; then
  timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 50); do
    [ -z "$(timeout 5 squeue -h -t PD,R,CG 2>/dev/null)" ] && break
    sleep 0.2
  done
fi
stop slurmd "$STATE/run/slurmd.pid"
stop slurmctld "$STATE/run/slurmctld.pid"
[ "${REID_SLURM_KEEP_MUNGE:-0}" = 1 ] || stop munged "$STATE/run/munged.pid"
if [ "${REID_SLURM_PURGE:-0}" = 1 ]; then
  for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
    grep -qF "$MARKER" "$f" 2>/dev/null && rm -f "$f"
  done
  case $STATE in /tmp/?* | /var/tmp/?*) rm -rf "$STATE" ;; *) log "not removing $STATE (outside /tmp)" ;; esac
fi
exit 0
