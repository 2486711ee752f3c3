//! Builds the update loop from the config: one resource manager per cluster and the
//! updaters each cluster lists, in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ClusterSource, Pipeline, ResourceManager, Schedule, Updater};
use crate::config::{ClusterConfig, Config};
use crate::resource::demo::DemoCluster;
use crate::resource::slurm::parse::RESOURCE_MANAGER_SLURM;
use crate::resource::slurm::SlurmManager;

/// The `manager` of the synthetic demo cluster.
const RESOURCE_MANAGER_DEMO: &str = "demo";
use crate::storage::Database;
use crate::updater::tsdb::TsdbUpdater;

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
    zone: chrono_tz::Tz,
) -> Result<Arc<dyn ResourceManager>, BuildError> {
    let failed = |error: &dyn std::fmt::Display| BuildError::Cluster {
        id: cluster.id.clone(),
        message: error.to_string(),
    };
    match cluster.manager.as_str() {
        RESOURCE_MANAGER_SLURM => match SlurmManager::new(cluster, zone) {
            Ok(manager) => Ok(Arc::new(manager)),
            Err(error) => Err(failed(&error)),
        },
        RESOURCE_MANAGER_DEMO => Ok(Arc::new(DemoCluster::new(cluster, zone))),
        _ => Err(BuildError::UnsupportedManager {
            id: cluster.id.clone(),
            manager: cluster.manager.clone(),
        }),
    }
}

fn build_updaters(config: &Config) -> Result<BTreeMap<String, Arc<dyn Updater>>, BuildError> {
    let mut updaters: BTreeMap<String, Arc<dyn Updater>> = BTreeMap::new();
    for updater in &config.updaters {
        // The config parser admits only the kinds in UPDATER_KINDS, all of them `tsdb`.
        let tsdb = TsdbUpdater::new(updater).map_err(|error| BuildError::Updater {
            id: updater.id.clone(),
            message: error.to_string(),
        })?;
        updaters.insert(updater.id.clone(), Arc::new(tsdb));
    }
    Ok(updaters)
}
