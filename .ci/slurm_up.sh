#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests that submit real jobs
# (tests/experiment/test_slurm.py, the srun test in tests/test_distributed.py).
#
#   .ci/slurm_up.sh up      install slurm-wlm + munge if missing, start munged, slurmctld, slurmd;
#                           wait until the node is idle (idempotent: a running cluster is kept)
#   .ci/slurm_up.sh down    stop the daemons this script started (by their pid files)
#
# Everything but /etc/slurm/slurm.conf (which the client commands read) lives under
# $LMLAB_SLURM_DIR (default /tmp/lmlab-slurm). A slurm.conf this script did not write is a real
# cluster's: it is left alone and used as it is. Accounting (slurmdbd) is off: jobs are followed
# with squeue / scontrol.
set -euo pipefail

DIR="${LMLAB_SLURM_DIR:-/tmp/lmlab-slurm}"
CONF=/etc/slurm/slurm.conf
MARK="# written by lmlab .ci/slurm_up.sh"

say() { echo "slurm_up: $*" >&2; }
die() { say "error: $*"; exit 1; }

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null && return
  command -v apt-get >/dev/null || die "slurm-wlm is not installed and there is no apt-get to install it"
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -q >/dev/null || die "apt-get update failed"
  timeout 900 apt-get install -y -q slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
}

write_conf() {
  if [[ -f "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
    say "$CONF exists and was not written here: using that cluster"
    return
  fi
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p "$DIR"/{state,spool,log} /etc/slurm
  cat > "$CONF" <<EOF
$MARK
ClusterName=lmlab
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=3600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
}

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  install
  mkdir -p "$DIR/log"
  write_conf
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
    [[ -f /etc/munge/munge.key ]] || { mungekey --create >/dev/null 2>&1 || die "cannot create /etc/munge/munge.key"; }
    # As root munged refuses to start without --force.
    munged --force --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" \
      || die "munged did not start (see $DIR/log/munged.log)"
  fi
  if grep -qF "$MARK" "$CONF"; then
    running "$DIR/slurmctld.pid" || slurmctld || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
    running "$DIR/slurmd.pid" || slurmd || die "slurmd did not start (see $DIR/log/slurmd.log)"
  fi
  local host state
  host="$(hostname -s)"
  for _ in $(seq 60); do
    state="$(timeout 10 sinfo -h -n "$host" -o %t 2>/dev/null || true)"
    case "$state" in
      idle*|mix*|alloc*) say "node $host is $state"; return 0 ;;
      down*|drain*) timeout 10 scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  die "node $host not idle after 60 s (state '${state:-no answer}'); see $DIR/log/"
}

down() {
  grep -qsF "$MARK" "$CONF" || return 0
  for name in slurmd slurmctld munged; do
    if running "$DIR/$name.pid"; then
      kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true
    fi
  done
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down" ;;
esac
