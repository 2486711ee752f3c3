#!/usr/bin/env bash
# Runs the whole test suite: unit tests, property tests and the integration tests (the real
# server and binary on loopback ports over real SQLite files and real HTTP, a real Prometheus
# with backfilled series, a real single-node SLURM with accounting), then prints one summary
# line. Installs the Debian packages of those components first when they are missing (needs
# root or sudo); the tests start and stop the components themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
cargo test --locked --all-targets 2>&1 | tee "$log" || status=$?

summary=$(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) {
        if ($(i + 1) ~ /^passed/) passed += $i
        if ($(i + 1) ~ /^failed/) failed += $i
    }
} END { printf "%d passed, %d failed", passed, failed }' "$log")
echo "tests: $summary"
exit "$status"
