#!/usr/bin/env bash
# A single-node, CPU-only SLURM cluster on this machine, for the scale-out tests (tests/test_slurm.py) and for trying
# the submitit launcher by hand:
#   tests/slurm/cluster.sh up      install slurm-wlm + munge when missing (apt-get, as root or with sudo -n), write a
#                                  private config under $WORKBENCH_SLURM_DIR and start munged, slurmctld, slurmd
#   tests/slurm/cluster.sh env     the environment lines that point the SLURM commands at it (eval "$(... env)")
#   tests/slurm/cluster.sh down    stop the three daemons and remove the state folder
# One node (this host, its real CPU count and memory), one partition `debug`, no accounting, no cgroups. `up` is
# idempotent: a running cluster of this state folder is left as it is. Two clusters side by side need their own
# state folders and ports (WORKBENCH_SLURM_PORT, default 16817, and the port after it).
set -euo pipefail
STATE="${WORKBENCH_SLURM_DIR:-/tmp/workbench-slurm}"
PORT="${WORKBENCH_SLURM_PORT:-16817}"   # slurmctld's; slurmd takes the next one
CONF="$STATE/etc/slurm.conf"
SOCKET="$STATE/munge/munge.socket"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif sudo -n true 2>/dev/null; then sudo -n "$@"; else return 1; fi
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return 0
  as_root true || { echo "cluster.sh: slurm-wlm/munge are missing and this user is neither root nor has sudo -n" >&2; return 3; }
  (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge \
    >/dev/null) || { echo "cluster.sh: apt-get install slurm-wlm munge failed" >&2; return 3; }
}

print_env() {
  echo "export SLURM_CONF=$CONF"
  echo "export MUNGE_SOCKET=$SOCKET"   # read by libmunge as the client socket (slurm's auth/munge honours it too)
}

write_config() {
  local cpus mem_mb host
  host="$(hostname -s)"
  cpus="$(nproc --all)"
  mem_mb="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))"
  mkdir -p "$STATE"/{etc,munge,spool/ctld,spool/d,log,run}
  chmod 700 "$STATE/munge"
  [ -s "$STATE/munge/munge.key" ] || { dd if=/dev/urandom bs=1 count=1024 of="$STATE/munge/munge.key" status=none; }
  chmod 400 "$STATE/munge/munge.key"
  cat > "$CONF" <<CONFIG
ClusterName=workbench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldPort=$PORT
SlurmdPort=$(( PORT + 1 ))
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONFIG
}

running() { [ -f "$STATE/run/$1.pid" ] && kill -0 "$(cat "$STATE/run/$1.pid")" 2>/dev/null; }

up() {
  local start=$SECONDS
  install_packages
  as_root true || { echo "cluster.sh: starting slurmd needs root (or sudo -n)" >&2; return 3; }
  if running slurmctld && running slurmd && running munged; then
    echo "cluster.sh: already up ($STATE)"; print_env; return 0
  fi
  write_config
  running munged || as_root munged --key-file="$STATE/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munge.seed" \
    --force
  export SLURM_CONF="$CONF" MUNGE_SOCKET="$SOCKET"
  running slurmctld || as_root env SLURM_CONF="$CONF" slurmctld -f "$CONF"
  running slurmd || as_root env SLURM_CONF="$CONF" slurmd -f "$CONF"
  for _ in $(seq 60); do  # the node registers with the controller within seconds
    if sinfo -h -o "%t" 2>/dev/null | grep -qE "^(idle|mix|alloc)"; then
      echo "cluster.sh: up in $(( SECONDS - start )) s ($STATE)"; print_env; return 0
    fi
    sleep 1
  done
  echo "cluster.sh: the node did not come up; see $STATE/log/" >&2
  sinfo >&2 || true
  return 1
}

stray_stepds() {  # this cluster's slurmstepd processes (they carry its SLURM_CONF), e.g. left by a killed slurmd
  local environ pid
  for environ in /proc/[0-9]*/environ; do
    pid="${environ#/proc/}"; pid="${pid%/environ}"
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ] || continue
    tr '\0' '\n' < "$environ" 2>/dev/null | grep -qx "SLURM_CONF=$CONF" && echo "$pid"
  done
  return 0
}

down() {
  local name pid
  if running slurmctld; then  # end the jobs first: a step whose slurmd is gone waits for it forever
    SLURM_CONF="$CONF" scancel --full --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 30); do
      [ -z "$(SLURM_CONF="$CONF" squeue -h -t PD,R,CG,CF,S 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  for name in slurmd slurmctld munged; do
    if running "$name"; then as_root kill "$(cat "$STATE/run/$name.pid")" || true; fi
  done
  for name in slurmd slurmctld munged; do
    for _ in $(seq 20); do running "$name" || break; sleep 0.5; done
  done
  for pid in $(stray_stepds); do as_root kill -9 "$pid" 2>/dev/null || true; done
  as_root rm -rf "$STATE"
  echo "cluster.sh: down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  *) echo "usage: $0 up|down|env  (state folder: \$WORKBENCH_SLURM_DIR, default /tmp/workbench-slurm)" >&2; exit 2 ;;
esac
