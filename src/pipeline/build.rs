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
        RESOURCE_MANAGER_DEMO => match DemoCluster::new(cluster, zone) {
            Ok(demo) => Ok(Arc::new(demo)),
            Err(message) => Err(failed(&message)),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(cluster: &str) -> Config {
        Config {
            clusters: vec![ClusterConfig {
                id: "c1".into(),
                manager: cluster.into(),
                extra_config: yaml_serde::from_str("seed: forty-two").unwrap(),
                ..ClusterConfig::default()
            }],
            ..Config::default()
        }
    }

    fn build(config: &Config) -> Result<Pipeline, BuildError> {
        let dir = tempfile::tempdir().unwrap();
        build_pipeline(config, Database::open(dir.path()).unwrap(), 0)
    }

    #[test]
    fn a_bad_demo_seed_stops_the_start_naming_cluster_and_key() {
        let error = build(&config_with("demo")).err().unwrap();
        assert_eq!(
            error.to_string(),
            "cluster \"c1\": extra_config.seed: expected an integer, found a string"
        );
    }

    #[test]
    fn unsupported_managers_stop_the_start_naming_the_cluster() {
        let error = build(&config_with("k8s")).err().unwrap();
        assert_eq!(
            error.to_string(),
            "cluster \"c1\": resource manager \"k8s\" is not supported by this server"
        );
    }

    #[test]
    fn an_unknown_updater_id_is_skipped() {
        let mut config = config_with("demo");
        config.clusters[0].extra_config = yaml_serde::Value::Null;
        config.clusters[0].updaters = vec!["nope".into()];
        let pipeline = build(&config).unwrap();
        assert_eq!(pipeline.clusters().len(), 1);
        assert!(pipeline.clusters()[0].updaters.is_empty());
    }
}
