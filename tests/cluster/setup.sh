#!/usr/bin/env bash
# Bring up a one-node SLURM cluster with one fake GPU from Debian's packages: munged, slurmctld,
# slurmd, started directly (no systemd). Idempotent; run as root. teardown.sh undoes it.
#
#   REID_SLURM_STATE  state, logs, pid files, fake device   (default /tmp/reid-slurm)
#   REID_SLURM_PARTITION / REID_SLURM_GPU_TYPE / REID_SLURM_CPUS / REID_SLURM_MEM_MB
#                     the partition, GPU type and the node's declared size (defaults below)
#
# Safety: it refuses to run where a slurm.conf exists that it did not write or where a slurmctld
# or slurmd is already running that it did not start - this harness must never touch a real
# cluster (exit status 3). Daemons are stopped by the pid in their pid file, never by name.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${REID_SLURM_STATE:-/tmp/reid-slurm}
PARTITION=${REID_SLURM_PARTITION:-gpu}
GPU_TYPE=${REID_SLURM_GPU_TYPE:-fakegpu}
CPUS=${REID_SLURM_CPUS:-16}
MEM_MB=${REID_SLURM_MEM_MB:-65536}
CTLD_PORT=${REID_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${REID_SLURM_SLURMD_PORT:-6818}
MARKER="written by reid tests/cluster/setup.sh (removed by teardown.sh)"
CONF_DIR=/etc/slurm # the job step's own srun drops SLURM_CONF from its environment: must be here

log() { echo "[setup $(date +%T)] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }
refuse() { echo "[setup] REFUSED: $*" >&2; exit 3; } # exit 3: run.sh reports a skip, not a failure
alive() { # alive PIDFILE: the pid in it runs and is not a zombie
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}
ours() { # ours FILE: the file does not exist or carries our marker
  [ ! -e "$1" ] || grep -qF "$MARKER" "$1"
}

[ "$(id -u)" = 0 ] || die "must run as root"

# -------------------------------------------------------------------- refuse a real cluster
for f in "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf"; do
  ours "$f" || refuse "$f exists and was not written by this harness; refusing to replace it"
done
for d in slurmctld slurmd; do
  for pid in $(pgrep -x "$d" 2>/dev/null || true); do # read-only look-up; nothing is signalled
    # a zombie is a daemon that has exited but not been reaped yet (pid 1 may reap late)
    grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && continue
    [ "$pid" = "$(cat "$STATE/run/$d.pid" 2>/dev/null)" ] ||
      refuse "a $d (pid $pid) not started by this harness is running; refusing to go on"
  done
done

# ------------------------------------------------------------------------------- packages
need=()
for p in munge slurmctld slurmd slurm-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  command -v apt-get >/dev/null || die "apt-get missing; cannot install ${need[*]}"
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # keep the packages' maintainer scripts from starting daemons with the stock configuration
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } || rc=$?
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install ${need[*]} failed (exit $rc)"
fi

# -------------------------------------------------------------------------------- munge
mkdir -p "$STATE"/{ctld,spool,log,run,dev,probe}
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"
  mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null ||
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"
else
  log "starting munged"
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die "munged did not come up"
  cp /run/munge/munged.pid "$STATE/run/munged.pid" # teardown stops only a munged we started
fi

# ---------------------------------------------------------------------------- fake GPU
# A regular file is rejected by gres.conf ("not a valid character or block device").
if [ ! -c "$STATE/dev/gpu0" ]; then
  rm -f "$STATE/dev/gpu0"
  mknod "$STATE/dev/gpu0" c 195 0
fi

# ------------------------------------------------------------------------ task prolog
# Runs as each task starts, with the task's environment; its stdout would be parsed by slurmd
# (export/unset/print), so it writes only to the probe file.
cat >"$STATE/taskprolog.sh" <<EOF
#!/bin/sh
echo "job=\${SLURM_JOB_ID:-none} step=\${SLURM_STEP_ID:-none} name=\${SLURM_JOB_NAME:-none} cuda=\${CUDA_VISIBLE_DEVICES:-unset}" >>"$STATE/probe/tasks.log" 2>/dev/null
exit 0
EOF
chmod 0755 "$STATE/taskprolog.sh"

# ------------------------------------------------------------------------------ config
mkdir -p "$CONF_DIR"
fill() {
  sed -e "s#@MARKER@#$MARKER#" -e "s#@STATE@#$STATE#g" -e "s#@PARTITION@#$PARTITION#g" \
    -e "s#@GPU_TYPE@#$GPU_TYPE#g" -e "s#@CPUS@#$CPUS#g" -e "s#@MEM_MB@#$MEM_MB#g" \
    -e "s#@CTLD_PORT@#$CTLD_PORT#g" -e "s#@SLURMD_PORT@#$SLURMD_PORT#g" "$1"
}
changed=0
for f in slurm.conf gres.conf; do
  fill "$HERE/$f.in" >"$STATE/$f.new"
  if ! cmp -s "$STATE/$f.new" "$CONF_DIR/$f"; then
    install -m 0644 "$STATE/$f.new" "$CONF_DIR/$f"
    changed=1
  fi
  rm -f "$STATE/$f.new"
done
if [ "$changed" = 1 ] && { alive "$STATE/run/slurmctld.pid" || alive "$STATE/run/slurmd.pid"; }; then
  log "configuration changed: restarting the slurm daemons"
  REID_SLURM_KEEP_MUNGE=1 "$HERE/teardown.sh"
fi

# ----------------------------------------------------------------------------- daemons
if alive "$STATE/run/slurmctld.pid"; then
  log "slurmctld already running"
else
  log "starting slurmctld"
  /usr/sbin/slurmctld # daemonizes; writes its pid file
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping 2>/dev/null | grep -q UP || {
  tail -n 20 "$STATE/log/slurmctld.log" >&2 || true
  die "slurmctld did not come up"
}
if alive "$STATE/run/slurmd.pid"; then
  log "slurmd already running"
else
  log "starting slurmd"
  /usr/sbin/slurmd -N localhost # the node name differs from the host name
fi

state=
for _ in $(seq 120); do
  state=$(sinfo -h -N -n localhost -o %T 2>/dev/null || true)
  case $state in
  idle | mixed | allocated) break ;;
  down* | drain*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case $state in
idle | mixed | allocated) log "node localhost is $state ($CPUS CPUs, $MEM_MB MB, gpu:$GPU_TYPE:1, partition $PARTITION)" ;;
*)
  tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
  die "node not up (state '$state'); logs in $STATE/log"
  ;;
esac

# --------------------------------------------------------------------------- smoke test
out=$(srun -t 1 -n 1 --gpus=1 printenv CUDA_VISIBLE_DEVICES) || die "srun --gpus=1 failed"
[ "$out" = 0 ] || die "GPU smoke test: CUDA_VISIBLE_DEVICES='$out', expected 0"
log "srun --gpus=1 ok (CUDA_VISIBLE_DEVICES=$out); $(sinfo -V)"
