//! Updaters: services that add metrics (CPU/GPU usage, energy, ...) to fetched units.

pub mod tsdb;

use std::collections::BTreeSet;

use crate::model::Unit;
use crate::pipeline::{BoxFuture, SourceError, Updater, Window};
use tsdb::TsdbUpdater;

impl Updater for TsdbUpdater {
    fn update<'a>(
        &'a self,
        window: &'a Window,
        units: &'a mut [Unit],
    ) -> BoxFuture<'a, Result<BTreeSet<String>, SourceError>> {
        Box::pin(async move { Ok(TsdbUpdater::update(self, window, units).await?) })
    }
}
