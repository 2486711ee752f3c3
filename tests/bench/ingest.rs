//! Smoke run of `ceems_bench ingest`.
