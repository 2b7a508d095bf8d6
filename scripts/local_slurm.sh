#!/usr/bin/env bash
# A 2-node Slurm cluster on this machine, for tests and for trying launch.sh (needs root).
#   scripts/local_slurm.sh start    install slurm-wlm + munge if missing, start munged, slurmctld, 2x slurmd
#   scripts/local_slurm.sh stop     stop them through their own PID files
#   scripts/local_slurm.sh status   say what runs; exit 0 only when both nodes are up
#   eval "$(scripts/local_slurm.sh env)"   point sbatch/srun/squeue at this cluster
# Knobs: LOCAL_SLURM_DIR (state, default /tmp/recipes-local-slurm), LOCAL_SLURM_PORT (slurmctld
# port; the nodes take the next two; default 16817), LOCAL_SLURM_GPUS (fake GPUs per node, 2),
# LOCAL_SLURM_CPUS (CPUs each node announces, 4).
# Nodes n1 and n2 both live on 127.0.0.1; their fake GPUs are character devices (gres.conf
# refuses plain files), so jobs see SLURM_GPUS_ON_NODE / CUDA_VISIBLE_DEVICES as on a GPU node.
set -euo pipefail

DIR="${LOCAL_SLURM_DIR:-/tmp/recipes-local-slurm}"
PORT="${LOCAL_SLURM_PORT:-16817}"
GPUS="${LOCAL_SLURM_GPUS:-2}"
CPUS="${LOCAL_SLURM_CPUS:-4}"
NODES=(n1 n2)
CONF="$DIR/etc/slurm.conf"

say() { echo "local_slurm: $*"; }
die() { echo "local_slurm: $*" >&2; exit 1; }

install_missing() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && return 0
  [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are missing; install them as root (apt-get install slurm-wlm munge)"
  say "installing slurm-wlm and munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q slurm-wlm munge >/dev/null
}

# Node names must resolve; both point at this machine.
add_hosts() {
  local missing=()
  for n in "${NODES[@]}"; do getent hosts "$n" >/dev/null || missing+=("$n"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ -w /etc/hosts ] || die "node names ${missing[*]} do not resolve; add '127.0.0.1 ${missing[*]}' to /etc/hosts"
  echo "127.0.0.1 ${missing[*]}  # recipes local_slurm" >>/etc/hosts
}

write_config() {
  mkdir -p "$DIR"/{etc,log,state,run,dev,munge}
  chmod 700 "$DIR/munge"
  for n in "${NODES[@]}"; do mkdir -p "$DIR/spool/$n"; done
  local files=""
  for ((i = 0; i < GPUS; i++)); do
    [ -c "$DIR/dev/nvidia$i" ] || mknod -m 666 "$DIR/dev/nvidia$i" c 1 3  # same device as /dev/null
  done
  [ "$GPUS" -gt 0 ] && files="$DIR/dev/nvidia[0-$((GPUS - 1))]"
  local gres="" gres_types=""
  if [ "$GPUS" -gt 0 ]; then gres="Gres=gpu:$GPUS"; gres_types="GresTypes=gpu"; fi
  cat >"$CONF" <<EOF
# Written by scripts/local_slurm.sh: two nodes on 127.0.0.1 with fake GPUs.
ClusterName=recipes-local
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
InactiveLimit=0
KillWait=5
MinJobAge=600
$gres_types
NodeName=n[1-2] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$((PORT + 1))-$((PORT + 2))] CPUs=$CPUS RealMemory=4000 $gres State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  if [ "$GPUS" -gt 0 ]; then
    echo "Name=gpu File=$files" >"$DIR/etc/gres.conf"
  else
    : >"$DIR/etc/gres.conf"
  fi
  : >"$DIR/etc/cgroup.conf"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  pid_alive "$DIR/munge/munged.pid" && return 0
  [ -f "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$DIR/munge/munge.key"; }
  munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for ((i = 0; i < limit * 10; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what did not come up in ${limit}s; see $DIR/log/"
}

nodes_idle() {
  local states
  states=$(SLURM_CONF="$CONF" sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
  [ "$(grep -cE ' (idle|mix|alloc)$' <<<"$states")" -eq ${#NODES[@]} ]
}

start() {
  [ "$(id -u)" = 0 ] || die "start needs root (munged, slurmd and /etc/hosts)"
  install_missing
  add_hosts
  write_config
  start_munge
  wait_for 10 munged test -S "$DIR/munge/munge.socket"
  pid_alive "$DIR/run/slurmctld.pid" || slurmctld -f "$CONF"
  wait_for 15 slurmctld env SLURM_CONF="$CONF" scontrol ping
  for n in "${NODES[@]}"; do
    pid_alive "$DIR/run/slurmd-$n.pid" || slurmd -f "$CONF" -N "$n"
  done
  wait_for 30 "the nodes" nodes_idle
  SLURM_CONF="$CONF" scontrol update nodename=n[1-2] state=resume >/dev/null 2>&1 || true
  say "up: ${NODES[*]} with gpu:$GPUS each; export SLURM_CONF=$CONF"
}

stop_pidfile() {  # stop_pidfile FILE NAME
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "stopped $2 (pid $pid)"
  fi
  rm -f "$file"
}

stop() {
  for n in "${NODES[@]}"; do stop_pidfile "$DIR/run/slurmd-$n.pid" "slurmd $n"; done
  stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
  stop_pidfile "$DIR/munge/munged.pid" munged
}

status() {
  local up=0
  for f in "$DIR/munge/munged.pid" "$DIR/run/slurmctld.pid" "$DIR"/run/slurmd-n{1,2}.pid; do
    if pid_alive "$f"; then say "$(basename "$f" .pid) running (pid $(cat "$f"))"; else say "$(basename "$f" .pid) not running"; up=1; fi
  done
  [ $up -eq 0 ] && SLURM_CONF="$CONF" sinfo -N
  return $up
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
