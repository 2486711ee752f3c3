//! The SLURM resource manager: `sacct` and `sacctmgr` through the command line.

pub mod parse;
