//! Resource managers: where compute units, users and projects come from.

pub mod demo;
pub mod slurm;

use crate::model::{Project, Unit, User};
use crate::pipeline::{BoxFuture, ResourceManager, SourceError, Window};
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
    ) -> BoxFuture<'a, Result<(Vec<User>, Vec<Project>), SourceError>> {
        Box::pin(async move { Ok(SlurmManager::fetch_users_projects(self, window).await?) })
    }
}
