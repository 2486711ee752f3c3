//! Typed queries: what the HTTP layer has parsed and checked, handed to storage.
//!
//! Each query carries the [`Scope`] it runs in, so the access rules live in one place
//! (storage's SQL builder) and a handler cannot forget them.

use super::fields::{UnitFieldSet, UsageFieldSet};
use super::time::DtWindow;

/// Who asks, and on which route family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A user on a non-admin route: sees their own rows and what their project
    /// memberships (in the same cluster) grant.
    User(String),
    /// An admin on an `/admin` route: sees everything the filters select.
    Admin,
}

/// Filters every listing route shares. Empty lists mean "no filter".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    pub cluster_ids: Vec<String>,
    pub projects: Vec<String>,
    /// Only honoured on admin routes.
    pub users: Vec<String>,
}

/// `GET /units[/admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitQuery {
    pub scope: Scope,
    pub filters: Filters,
    pub uuids: Vec<String>,
    /// Units that ended in this window; `None` when `uuids` is given.
    pub window: Option<DtWindow>,
    /// Also every unit still running, whenever it started.
    pub running: bool,
    pub fields: UnitFieldSet,
}

/// `GET /units/verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyQuery {
    pub user: String,
    pub cluster_ids: Vec<String>,
    pub uuids: Vec<String>,
}

/// A column current usage may additionally be grouped by (`groupby=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupBy {
    ClusterId,
    ResourceManager,
    Groupname,
}

impl GroupBy {
    pub fn parse(name: &str) -> Option<GroupBy> {
        match name {
            "cluster_id" => Some(GroupBy::ClusterId),
            "resource_manager" => Some(GroupBy::ResourceManager),
            "groupname" => Some(GroupBy::Groupname),
            _ => None,
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            GroupBy::ClusterId => "cluster_id",
            GroupBy::ResourceManager => "resource_manager",
            GroupBy::Groupname => "groupname",
        }
    }
}

/// `GET /usage/current[/admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CurrentUsageQuery {
    pub scope: Scope,
    pub filters: Filters,
    /// Window on `last_updated_at`.
    pub window: DtWindow,
    pub fields: UsageFieldSet,
    /// Read the per-day rollup (`daily_usage`) instead of units.
    pub experimental: bool,
    /// Only units that have ended.
    pub terminated_only: bool,
    /// Extra group keys besides username and project.
    pub group_by: Vec<GroupBy>,
}

/// `GET /usage/global[/admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalUsageQuery {
    pub scope: Scope,
    pub filters: Filters,
    pub fields: UsageFieldSet,
}

/// `GET /projects[/admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectQuery {
    pub scope: Scope,
    pub filters: Filters,
}

/// `GET /users[/admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    pub scope: Scope,
    pub filters: Filters,
}

/// `GET /stats/{current,global}/admin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    pub cluster_ids: Vec<String>,
    /// Current mode: units that ended in this window or are still running.
    pub window: Option<DtWindow>,
}

/// Rows plus the warnings that go into the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows<T> {
    pub rows: Vec<T>,
    pub warnings: Vec<String>,
}

impl<T> Rows<T> {
    pub fn new(rows: Vec<T>) -> Self {
        Self {
            rows,
            warnings: Vec::new(),
        }
    }
}
