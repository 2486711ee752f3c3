//! `ceems_bench load` and `ceems_bench http-floor`.

/// Options of `ceems_bench load`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Options of `ceems_bench http-floor`.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}

pub fn run_floor(_args: &FloorArgs) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
