//! Smoke runs of `ceems_bench` at a tiny scale: every subcommand works end to end against
//! the real server binary, SQLite file, `sqlite3` shell and Prometheus, and reports what
//! the full benchmarks report. The numbers themselves are not asserted here (see
//! `scripts/bench.sh` and `docs/benchmarks.md`).

mod generate;
mod ingest;
mod load;
