//! Resource managers: where compute units, users and projects come from.

pub mod demo;
pub mod slurm;

use crate::model::Unit;
use crate::pipeline::{BoxFuture, ResourceManager, SourceError, UsersProjects, Window};
use demo::DemoCluster;
use slurm::SlurmManager;

impl ResourceManager for SlurmManager {
    fn fetch_units<'a>(
        &'a self,
        window: &'a Window,
    ) -> BoxFuture<'a, Result<Vec<Unit>, SourceError>> {
        Box::pin(async move { Ok(SlurmManager::fetch_units(self, window).await?) })
    }

    fn fetch_users_projects<'a>(
        &'a self,
        window: &'a Window,
    ) -> BoxFuture<'a, Result<UsersProjects, SourceError>> {
        Box::pin(async move { Ok(SlurmManager::fetch_users_projects(self, window).await?) })
    }
}

impl ResourceManager for DemoCluster {
    fn fetch_units<'a>(
        &'a self,
        window: &'a Window,
    ) -> BoxFuture<'a, Result<Vec<Unit>, SourceError>> {
        Box::pin(async move { Ok(self.units(window)) })
    }

    fn fetch_users_projects<'a>(
        &'a self,
        window: &'a Window,
    ) -> BoxFuture<'a, Result<UsersProjects, SourceError>> {
        Box::pin(async move { Ok(self.users_projects(window)) })
    }
}
