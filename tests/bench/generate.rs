//! Smoke run of `ceems_bench generate`.
