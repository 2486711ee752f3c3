//! Resource managers: where compute units, users and projects come from.

pub mod demo;
pub mod slurm;
