#!/usr/bin/env bash
# Stop the daemons that .ci/slurm-up.sh started (and only those), newest first.
set -uo pipefail

STATE=${SAGIPS_SLURM_STATE:-/run/sagips-slurm-started}
[ -s "$STATE" ] || exit 0

pidfile() {
    case $1 in
        munged) echo /run/munge/munged.pid ;;
        *) echo "/run/$1.pid" ;;
    esac
}

for daemon in $(tac "$STATE"); do
    file=$(pidfile "$daemon")
    [ -s "$file" ] || continue
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
done
rm -f "$STATE"
