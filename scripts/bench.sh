#!/usr/bin/env bash
# Runs every benchmark of docs/benchmarks.md on this machine and writes the results to
# target/bench/: the machine, then per dataset size the generation and the load run, then
# the ingest run.
#
#   bash scripts/bench.sh                      # 1e5, 1e6 and 1e7 units (about an hour)
#   BENCH_SIZES="100000" bash scripts/bench.sh # one size
#
# Datasets are kept in target/bench/db-<N>/ and reused by later runs; delete them to
# generate again. Needs sqlite3 and prometheus (scripts/install-test-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=${BENCH_SIZES:-"100000 1000000 10000000"}
duration=${BENCH_DURATION:-30s}
users=${BENCH_USERS:-50}
jobs=${BENCH_INGEST_JOBS:-100000}
out=target/bench
mkdir -p "$out"

bash scripts/install-test-deps.sh
cargo build --release --locked --bins
bench=target/release/ceems_bench
server=target/release/ceems_api_server

{
    echo "# Machine"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "- memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
    echo "- kernel: $(uname -r); $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- sqlite3 shell: $(sqlite3 --version | cut -d' ' -f1-2)"
    echo "- rustc: $(rustc --version)"
} | tee "$out/machine.md"

for units in $sizes; do
    data="$out/db-$units"
    if [ ! -f "$data/ceems.db" ]; then
        rm -rf "$data"
        "$bench" generate --units "$units" --out "$data" | tee "$out/generate-$units.txt"
    fi
    "$bench" load --data "$data" --server "$server" --users "$users" --duration "$duration" \
        --label "$units units" --out "$out/load-$units.json" | tee "$out/load-$units.md"
done

"$bench" ingest --server "$server" --jobs "$jobs" --out "$out/ingest.json" | tee "$out/ingest.md"
