#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_scaleout_slurm.py and for trying the
# workflow's SLURM profile (docs/scaling.md). Idempotent: installs Debian's slurm-wlm and munge
# if missing, writes /etc/slurm/{slurm,gres}.conf (jobs drop SLURM_CONF, so the config must be at
# the default path), starts munged, slurmctld and slurmd when they are not already running with
# this config, and waits until `sinfo` shows the node idle.
#
# The node has two fake GPUs (GRES gpu:2 backed by character devices made with `mknod c 1 3`), so
# jobs that ask for a GPU (`--gpus=1`) are scheduled, get CUDA_VISIBLE_DEVICES, and run on the CPU.
# There is no slurmdbd: `sacct` cannot answer, so Snakemake must use `--slurm-status-command
# squeue` (finished jobs stay visible to `squeue --states=all` and `scontrol show job` for
# MinJobAge seconds). Completed jobs are also written, one line each, to /var/log/slurm/jobcomp.log.
#
# Needs root. Exit status 0 only when the node is idle. Stop: .ci/slurm-up.sh --down
set -euo pipefail

NODE="$(hostname -s)"
CPUS="$(nproc)"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
WAIT_S="${SLURM_UP_WAIT_S:-60}"

log() { echo "slurm-up: $*" >&2; }

stop_daemon() {  # $1 = pid file; only the daemon recorded there is signalled
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
}

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$(id -u)" != 0 ]; then
  log "needs root (installs packages, writes /etc/slurm, starts daemons)"; exit 2
fi

if [ "${1:-}" = "--down" ]; then
  stop_daemon /run/slurmd.pid
  stop_daemon /run/slurmctld.pid
  log "slurmd and slurmctld stopped (munged left running)"
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

# --- munge ------------------------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || { log "munged does not answer"; exit 3; }
fi

# --- fake GPUs ----------------------------------------------------------------------------------
for i in 0 1; do
  [ -c "/dev/fakegpu$i" ] || mknod -m 666 "/dev/fakegpu$i" c 1 3
done

# --- config -------------------------------------------------------------------------------------
MEM_MB="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
NEW_CONF="$(cat <<EOF
# Written by .ci/slurm-up.sh: a one-node test cluster on loopback.
ClusterName=inpaintbench
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${LOG_DIR}/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
)"
NEW_GRES="NodeName=${NODE} Name=gpu File=/dev/fakegpu[0-1]"

if [ -s "$CONF_DIR/slurm.conf" ] && ! head -n1 "$CONF_DIR/slurm.conf" | grep -q "Written by .ci/slurm-up.sh"; then
  log "$CONF_DIR/slurm.conf exists and was not written by this script; not touching a real cluster's config"
  exit 5
fi
changed=0
if [ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" != "$NEW_CONF" ]; then
  printf '%s\n' "$NEW_CONF" > "$CONF_DIR/slurm.conf"; changed=1
fi
if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "$NEW_GRES" ]; then
  printf '%s\n' "$NEW_GRES" > "$CONF_DIR/gres.conf"; changed=1
fi

# --- daemons ------------------------------------------------------------------------------------
if [ "$changed" = 1 ]; then
  stop_daemon /run/slurmd.pid
  stop_daemon /run/slurmctld.pid
fi
if ! running /run/slurmctld.pid; then
  log "starting slurmctld"
  slurmctld
  sleep 1
  running /run/slurmctld.pid || { log "slurmctld exited:"; tail -n 5 "$LOG_DIR/slurmctld.log" >&2; exit 4; }
fi
if ! running /run/slurmd.pid; then
  log "starting slurmd"
  slurmd
fi

deadline=$((SECONDS + WAIT_S))
while :; do
  state="$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1 || true)"
  case "$state" in
    idle|mixed|allocated) break ;;
    down*|drain*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "node $NODE is not idle after ${WAIT_S} s (state: ${state:-no answer}); see ${LOG_DIR}/slurmctld.log and slurmd.log"
    tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 2>/dev/null || true
    exit 4
  fi
  sleep 1
done
log "node $NODE is $state ($(sinfo -h -o '%C cpus (A/I/O/T), gres %G'))"
