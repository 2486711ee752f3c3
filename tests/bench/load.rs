//! Smoke run of `ceems_bench load`.
