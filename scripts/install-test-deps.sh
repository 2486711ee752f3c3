#!/usr/bin/env bash
# Installs the real components the test suite runs against, when they are missing:
# Prometheus and promtool, a single-node SLURM with accounting (slurmctld, slurmd, slurmdbd,
# MariaDB, munge) and the sqlite3 shell. Debian packages; needs root (or sudo).
set -euo pipefail

packages=()
need() { command -v "$1" >/dev/null 2>&1 || packages+=("$2"); }
need prometheus prometheus
need promtool prometheus
need slurmctld slurm-wlm
need slurmd slurm-wlm
need sacct slurm-client
need slurmdbd slurmdbd
need munged munge
need mariadbd mariadb-server
need sqlite3 sqlite3
need ss iproute2
need kill procps
need mariadb-install-db mariadb-server
need mariadb mariadb-client

[ ${#packages[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-test-deps: need root or sudo to install: ${packages[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "install-test-deps: installing ${packages[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends $(printf '%s\n' "${packages[@]}" | sort -u) >/dev/null
