#!/usr/bin/env bash
# Stops what start.sh BASE started: cancels the jobs still queued or running (their
# processes outlive slurmd otherwise), then stops the daemons by recorded PID in reverse
# order, checking each PID still belongs to that daemon.
#
# Usage: stop.sh BASE
set -uo pipefail
BASE=${1:?usage: stop.sh BASE_DIR}
[ -d "$BASE" ] || exit 0

alive() { # pid name: that pid runs that program (not a reused pid)
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

ctld_pid=$(cat "$BASE/run/slurmctld.bgpid" 2>/dev/null || true)
if [ -n "$ctld_pid" ] && alive "$ctld_pid" slurmctld && [ -f "$BASE/etc/slurm.conf" ]; then
  export SLURM_CONF="$BASE/etc/slurm.conf"
  jobs=$(squeue -h -o %A 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 50); do
      [ -z "$(squeue -h -t RUNNING,COMPLETING -o %A 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
fi

for daemon in slurmd:slurmd slurmctld:slurmctld slurmdbd:slurmdbd mysqld:mariadbd munged:munged; do
  file="$BASE/run/${daemon%%:*}.bgpid"
  name=${daemon##*:}
  [ -f "$file" ] || continue
  pid=$(cat "$file")
  if alive "$pid" "$name"; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do alive "$pid" "$name" || break; sleep 0.2; done
    alive "$pid" "$name" && kill -KILL "$pid"
  fi
  rm -f "$file"
done
exit 0
