//! Builds the update loop from the config: one resource manager per cluster and the
//! updaters each cluster lists, in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ClusterSource, Pipeline, ResourceManager, Schedule, Updater};
use crate::config::{ClusterConfig, Config};
use crate::storage::Database;

/// A cluster or updater of the config that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cluster {id:?}: resource manager {manager:?} is not supported by this server")]
    UnsupportedManager { id: String, manager: String },
    #[error("cluster {id:?}: {message}")]
    Cluster { id: String, message: String },
    #[error("updater {id:?}: {message}")]
    Updater { id: String, message: String },
}

/// The pipeline of `config`'s clusters over `db`, scheduled from `now_ms`.
pub fn build_pipeline(config: &Config, db: Database, now_ms: i64) -> Result<Pipeline, BuildError> {
    let data = &config.server.data;
    let schedule = Schedule::from_data_config(data, now_ms);
    let updaters = build_updaters(config)?;
    let mut clusters = Vec::with_capacity(config.clusters.len());
    for cluster in &config.clusters {
        let manager = build_manager(cluster, data.time_zone)?;
        let mut chain = Vec::new();
        for id in &cluster.updaters {
            match updaters.get(id) {
                Some(updater) => chain.push((id.clone(), Arc::clone(updater))),
                None => tracing::warn!(
                    cluster_id = %cluster.id,
                    updater = %id,
                    "the cluster lists an updater that is not configured: skipped"
                ),
            }
        }
        clusters.push(ClusterSource {
            cluster_id: cluster.id.clone(),
            manager,
            updaters: chain,
        });
    }
    Ok(Pipeline::new(db, schedule, clusters))
}

fn build_manager(
    cluster: &ClusterConfig,
    _zone: chrono_tz::Tz,
) -> Result<Arc<dyn ResourceManager>, BuildError> {
    Err(BuildError::UnsupportedManager {
        id: cluster.id.clone(),
        manager: cluster.manager.clone(),
    })
}

fn build_updaters(config: &Config) -> Result<BTreeMap<String, Arc<dyn Updater>>, BuildError> {
    let updaters = BTreeMap::new();
    if let Some(updater) = config.updaters.first() {
        return Err(BuildError::Updater {
            id: updater.id.clone(),
            message: "updaters are not wired yet".to_owned(),
        });
    }
    Ok(updaters)
}
