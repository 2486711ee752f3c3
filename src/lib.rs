//! ceems_api_server: a usage and accounting API server for HPC and cloud compute units,
//! wire-compatible with the CEEMS API v1.
//!
//! Code map, in reading order (dependencies point up this list, never down):
//!
//! - [`model`]: domain types, their Go-compatible JSON encoding, typed queries and time
//!   windows. Knows nothing of warp, rusqlite or HTTP clients.
//! - [`config`]: the YAML config tree and the command-line flags, validated at load with no
//!   side effects; secrets redacted in `Debug`.
//! - [`storage`]: the only module that imports rusqlite: migrations from `sql/`, the custom
//!   SQL functions, read-only connection pool, the queries behind every route.
//! - [`client`]: outgoing HTTP clients (auth, headers, TLS, proxy) from a client config.
//! - [`resource`]: resource managers, where units, users and projects come from (SLURM
//!   through `sacct`/`sacctmgr`, a synthetic demo cluster).
//! - [`updater`]: updaters that add metrics to fetched units (the Prometheus TSDB updater).
//! - [`grafana`]: the Grafana admin teams: their members become admins (a periodic
//!   all-or-nothing sync into `admin_users`) and the start-up reachability check.
//! - [`pipeline`]: the update loop: windows, their persisted resume points, the one
//!   transaction per window, retention and backups.
//! - [`http`]: the only module that imports warp and hyper: listener (TLS, basic auth), the
//!   route table, filters (identity, query parsing), handlers, envelope, CORS, compression,
//!   rate limiting, OpenAPI.
//! - [`app`]: builds storage and server from the config and owns shutdown.
//!
//! Architecture invariants:
//! - Only `storage` touches SQLite; only `http` touches warp/hyper.
//! - The HTTP side never writes to the database.
//! - Handlers see typed queries (`model::query`), never raw query strings.
#![forbid(unsafe_code)]

pub mod app;
pub mod client;
pub mod config;
pub mod grafana;
pub mod http;
pub mod model;
pub mod pipeline;
pub mod resource;
pub mod storage;
pub mod updater;
