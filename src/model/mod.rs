//! Domain types: units, usage, projects, users, their JSON shape and the typed queries.
//!
//! Architecture invariant: this module knows nothing of warp, rusqlite or HTTP clients.

pub mod fields;
pub mod json;
pub mod query;
pub mod records;
pub mod time;
pub mod values;

pub use fields::{InvalidFields, UnitField, UnitFieldSet, UsageField, UsageFieldSet};
pub use query::{
    CurrentUsageQuery, Filters, GlobalUsageQuery, GroupBy, ProjectQuery, Rows, Scope, StatsQuery,
    UnitQuery, UserQuery, VerifyQuery,
};
pub use records::{Cluster, Metric, Metrics, Project, Stat, Unit, Usage, User};
pub use time::{DtWindow, TimeWindow};
pub use values::{DecodeError, Generic, List, MetricMap};

/// The built-in service account of the CEEMS load balancer, always an admin.
pub const SERVICE_ACCOUNT: &str = "ceems-int-svc";
