//! The periodic pull: resource managers (SLURM, ...) and the Prometheus updater will live here.

pub mod slurm;
