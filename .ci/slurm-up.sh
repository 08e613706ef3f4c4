#!/usr/bin/env bash
# Bring up a one-node Slurm on localhost for the cluster=slurm tests (MPI_AND_SLURM.md).
# Idempotent: installs the Debian packages if missing, writes munge key and Slurm config
# only where none exists, starts only the daemons that are not running, and waits until
# the node is idle. Records what it started in $STATE so that slurm-down.sh stops only that.
# Needs root.
set -euo pipefail

STATE=${SAGIPS_SLURM_STATE:-/run/sagips-slurm-started}
CONF=/etc/slurm/slurm.conf
MARK="# written by sagips .ci/slurm-up.sh"

[ "$(id -u)" = 0 ] || { echo "slurm-up: needs root" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    head -c 1024 /dev/urandom > /etc/munge/munge.key
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge

host=$(hostname -s)
if [ ! -e "$CONF" ] || grep -qxF "$MARK" "$CONF"; then
    # NodeName must match what slurmd detects, or the node is INVALID; keep memory below free.
    node=$(slurmd -C | head -n1 | sed -E 's/ RealMemory=[0-9]+//')
    mem=$(awk '/MemAvailable/ {print int($2 / 1024 / 2)}' /proc/meminfo)
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat > "$CONF" <<CONF
$MARK
ClusterName=sagips-ci
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=60
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    # Slurm 22.05 does not know CgroupPlugin=disabled; v1 with IgnoreSystemd lets slurmd start.
    printf '%s\nCgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n' "$MARK" > /etc/slurm/cgroup.conf
fi

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
touch "$STATE"
started() { grep -qx "$1" "$STATE" || echo "$1" >> "$STATE"; }

if ! alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged
    started munged
fi
if ! alive /run/slurmctld.pid; then
    slurmctld
    started slurmctld
fi
if ! alive /run/slurmd.pid; then
    slurmd
    started slurmd
fi

for _ in $(seq 60); do
    if sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "slurm-up: the node did not become idle; see /var/log/slurm/" >&2
sinfo -N -l >&2 || true
exit 1
