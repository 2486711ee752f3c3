//! Updaters: services that add metrics (CPU/GPU usage, energy, ...) to fetched units.

pub mod tsdb;
