#!/usr/bin/env bash
# Stop the single-host SLURM that .ci/slurm-up.sh started: the daemons named by its pid files in
# $MPIQ_SLURM_DIR (default /tmp/mpiq-slurm), nothing else. Bounded: TERM, then KILL after 10 s.
set -uo pipefail

DIR=${MPIQ_SLURM_DIR:-/tmp/mpiq-slurm}
pids=()
for pidfile in "$DIR"/slurmd.*.pid "$DIR"/slurmctld.pid "$DIR"/munge/munged.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null) || continue
    # only a live process whose command is one of our daemons
    if [ -n "$pid" ] && grep -Eq '(slurmctld|slurmd|munged)' "/proc/$pid/comm" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "$pidfile"
done
for _ in $(seq 20); do
    alive=()
    for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && alive+=("$pid"); done
    [ ${#alive[@]} = 0 ] && break
    sleep 0.5
done
for pid in "${alive[@]:-}"; do [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; done
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$DIR/slurm.conf" ]; then
    rm -f /etc/slurm/slurm.conf
fi
echo "slurm-down: stopped ${#pids[@]} daemon(s) from $DIR" >&2
