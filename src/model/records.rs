//! The records the API serves, with their JSON shape (field order = output order).

use serde::Serialize;

use super::values::{Generic, List, MetricMap};

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// The 13 metric-map columns shared by units, usage and daily usage, in API key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    TotalTimeSeconds,
    AvgCpuUsage,
    AvgCpuMemUsage,
    TotalCpuEnergyUsageKwh,
    TotalCpuEmissionsGms,
    AvgGpuUsage,
    AvgGpuMemUsage,
    TotalGpuEnergyUsageKwh,
    TotalGpuEmissionsGms,
    TotalIoWriteStats,
    TotalIoReadStats,
    TotalIngressStats,
    TotalEgressStats,
}

impl Metric {
    pub const ALL: [Metric; 13] = [
        Metric::TotalTimeSeconds,
        Metric::AvgCpuUsage,
        Metric::AvgCpuMemUsage,
        Metric::TotalCpuEnergyUsageKwh,
        Metric::TotalCpuEmissionsGms,
        Metric::AvgGpuUsage,
        Metric::AvgGpuMemUsage,
        Metric::TotalGpuEnergyUsageKwh,
        Metric::TotalGpuEmissionsGms,
        Metric::TotalIoWriteStats,
        Metric::TotalIoReadStats,
        Metric::TotalIngressStats,
        Metric::TotalEgressStats,
    ];

    /// Column name, also the JSON key.
    pub fn column(self) -> &'static str {
        match self {
            Metric::TotalTimeSeconds => "total_time_seconds",
            Metric::AvgCpuUsage => "avg_cpu_usage",
            Metric::AvgCpuMemUsage => "avg_cpu_mem_usage",
            Metric::TotalCpuEnergyUsageKwh => "total_cpu_energy_usage_kwh",
            Metric::TotalCpuEmissionsGms => "total_cpu_emissions_gms",
            Metric::AvgGpuUsage => "avg_gpu_usage",
            Metric::AvgGpuMemUsage => "avg_gpu_mem_usage",
            Metric::TotalGpuEnergyUsageKwh => "total_gpu_energy_usage_kwh",
            Metric::TotalGpuEmissionsGms => "total_gpu_emissions_gms",
            Metric::TotalIoWriteStats => "total_io_write_stats",
            Metric::TotalIoReadStats => "total_io_read_stats",
            Metric::TotalIngressStats => "total_ingress_stats",
            Metric::TotalEgressStats => "total_egress_stats",
        }
    }

    /// For the four `avg_*` metrics, the `total_time_seconds` key that weights them.
    pub fn weight_key(self) -> Option<&'static str> {
        match self {
            Metric::AvgCpuUsage => Some("alloc_cputime"),
            Metric::AvgCpuMemUsage => Some("alloc_cpumemtime"),
            Metric::AvgGpuUsage => Some("alloc_gputime"),
            Metric::AvgGpuMemUsage => Some("alloc_gpumemtime"),
            _ => None,
        }
    }

    pub fn from_column(name: &str) -> Option<Metric> {
        Metric::ALL
            .into_iter()
            .find(|metric| metric.column() == name)
    }
}

/// The 13 metric maps of a unit or a usage row.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub total_time_seconds: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub avg_cpu_usage: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub avg_cpu_mem_usage: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub total_cpu_energy_usage_kwh: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub total_cpu_emissions_gms: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub avg_gpu_usage: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub avg_gpu_mem_usage: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub total_gpu_energy_usage_kwh: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub total_gpu_emissions_gms: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub total_io_write_stats: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub total_io_read_stats: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub total_ingress_stats: MetricMap,
    #[serde(skip_serializing_if = "MetricMap::is_empty")]
    pub total_egress_stats: MetricMap,
}

impl Metrics {
    pub fn get(&self, metric: Metric) -> &MetricMap {
        match metric {
            Metric::TotalTimeSeconds => &self.total_time_seconds,
            Metric::AvgCpuUsage => &self.avg_cpu_usage,
            Metric::AvgCpuMemUsage => &self.avg_cpu_mem_usage,
            Metric::TotalCpuEnergyUsageKwh => &self.total_cpu_energy_usage_kwh,
            Metric::TotalCpuEmissionsGms => &self.total_cpu_emissions_gms,
            Metric::AvgGpuUsage => &self.avg_gpu_usage,
            Metric::AvgGpuMemUsage => &self.avg_gpu_mem_usage,
            Metric::TotalGpuEnergyUsageKwh => &self.total_gpu_energy_usage_kwh,
            Metric::TotalGpuEmissionsGms => &self.total_gpu_emissions_gms,
            Metric::TotalIoWriteStats => &self.total_io_write_stats,
            Metric::TotalIoReadStats => &self.total_io_read_stats,
            Metric::TotalIngressStats => &self.total_ingress_stats,
            Metric::TotalEgressStats => &self.total_egress_stats,
        }
    }

    pub fn get_mut(&mut self, metric: Metric) -> &mut MetricMap {
        match metric {
            Metric::TotalTimeSeconds => &mut self.total_time_seconds,
            Metric::AvgCpuUsage => &mut self.avg_cpu_usage,
            Metric::AvgCpuMemUsage => &mut self.avg_cpu_mem_usage,
            Metric::TotalCpuEnergyUsageKwh => &mut self.total_cpu_energy_usage_kwh,
            Metric::TotalCpuEmissionsGms => &mut self.total_cpu_emissions_gms,
            Metric::AvgGpuUsage => &mut self.avg_gpu_usage,
            Metric::AvgGpuMemUsage => &mut self.avg_gpu_mem_usage,
            Metric::TotalGpuEnergyUsageKwh => &mut self.total_gpu_energy_usage_kwh,
            Metric::TotalGpuEmissionsGms => &mut self.total_gpu_emissions_gms,
            Metric::TotalIoWriteStats => &mut self.total_io_write_stats,
            Metric::TotalIoReadStats => &mut self.total_io_read_stats,
            Metric::TotalIngressStats => &mut self.total_ingress_stats,
            Metric::TotalEgressStats => &mut self.total_egress_stats,
        }
    }
}

/// One compute unit (a SLURM job, a VM, a pod). Only the selected fields are filled; the
/// others keep their zero value and are omitted, except `uuid`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Unit {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_manager: String,
    pub uuid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub project: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub groupname: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub started_at: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ended_at: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub created_at_ts: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub started_at_ts: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub ended_at_ts: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub elapsed: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(skip_serializing_if = "Generic::is_empty")]
    pub allocation: Generic,
    #[serde(flatten)]
    pub metrics: Metrics,
    #[serde(skip_serializing_if = "Generic::is_empty")]
    pub tags: Generic,
}

/// Usage of one (cluster, user, project): lifetime (`usage` table) or aggregated over a
/// window (current usage).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub cluster_id: String,
    pub resource_manager: String,
    pub num_units: i64,
    pub project: String,
    pub groupname: String,
    pub username: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// Per-cluster unit counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stat {
    pub cluster_id: String,
    pub resource_manager: String,
    pub num_units: i64,
    pub num_inactive_units: i64,
    pub num_active_units: i64,
    pub num_projects: i64,
    pub num_users: i64,
}

/// A project (SLURM account, OpenStack project, k8s namespace) and its members.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Project {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    pub cluster_id: String,
    pub resource_manager: String,
    pub name: String,
    pub users: List,
    #[serde(skip_serializing_if = "List::is_empty")]
    pub tags: List,
}

/// A user and the projects they are in; also the shape of an admin user row.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct User {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    pub cluster_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_manager: String,
    pub name: String,
    #[serde(skip_serializing_if = "List::is_empty")]
    pub projects: List,
    #[serde(skip_serializing_if = "List::is_empty")]
    pub tags: List,
}

/// A cluster seen in the units table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cluster {
    pub id: String,
    pub manager: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::json::to_go_json;

    #[test]
    fn unit_omits_zero_fields_but_keeps_uuid() {
        let unit = Unit {
            cluster_id: "slurm-0".into(),
            ended_at: "Unknown".into(),
            metrics: Metrics {
                avg_cpu_usage: MetricMap::decode(r#"{"global":12.5}"#).unwrap(),
                ..Metrics::default()
            },
            ..Unit::default()
        };
        assert_eq!(
            String::from_utf8(to_go_json(&unit)).unwrap(),
            r#"{"cluster_id":"slurm-0","uuid":"","ended_at":"Unknown","avg_cpu_usage":{"global":12.50000000}}"#
        );
    }

    #[test]
    fn usage_keeps_its_plain_fields() {
        let usage = Usage {
            num_units: 1,
            project: "acc1".into(),
            username: "usr1".into(),
            ..Usage::default()
        };
        assert_eq!(
            String::from_utf8(to_go_json(&usage)).unwrap(),
            r#"{"cluster_id":"","resource_manager":"","num_units":1,"project":"acc1","groupname":"","username":"usr1"}"#
        );
    }

    #[test]
    fn project_prints_null_members_and_omits_empty_tags() {
        let project = Project {
            cluster_id: "c".into(),
            name: "p".into(),
            users: List::decode("null").unwrap(),
            tags: List::decode("[]").unwrap(),
            ..Project::default()
        };
        assert_eq!(
            String::from_utf8(to_go_json(&project)).unwrap(),
            r#"{"cluster_id":"c","resource_manager":"","name":"p","users":null}"#
        );
    }
}
