#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests (the real server on port 0 over
# real SQLite files and real HTTP) and doc tests. Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets
cargo test --locked --doc
