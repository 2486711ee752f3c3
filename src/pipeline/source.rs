//! What the update loop pulls from: a resource manager per cluster (units, users and
//! projects of a window) and the updaters that add metrics to those units. Object-safe
//! traits so that the loop is written once for SLURM, the demo cluster and test doubles.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use super::Window;
use crate::model::{Project, Unit, User};

/// Any error of a source, with its message as the log shows it.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// A cluster's users and projects.
pub type UsersProjects = (Vec<User>, Vec<Project>);

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the units, users and projects of one cluster come from.
pub trait ResourceManager: Send + Sync {
    /// The units that existed during `window`, with the metrics of that window only.
    fn fetch_units<'a>(
        &'a self,
        window: &'a Window,
    ) -> BoxFuture<'a, Result<Vec<Unit>, SourceError>>;

    /// The cluster's users and projects as of the end of `window`.
    fn fetch_users_projects<'a>(
        &'a self,
        window: &'a Window,
    ) -> BoxFuture<'a, Result<UsersProjects, SourceError>>;
}

/// Adds metrics to the units of a window.
pub trait Updater: Send + Sync {
    /// Fills the units' metric maps for `window`. `Ok` holds the uuids to store as
    /// ignored. `Err` means the window cannot be completed now (the TSDB is unreachable):
    /// nothing of it is written and it is retried later.
    fn update<'a>(
        &'a self,
        window: &'a Window,
        units: &'a mut [Unit],
    ) -> BoxFuture<'a, Result<BTreeSet<String>, SourceError>>;
}
