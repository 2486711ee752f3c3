//! `ceems_bench`: reproducible benchmarks of the server at the scale of a large centre.
//!
//! - `generate`: a CEEMS-schema database of N units with their usage and daily usage,
//!   written through the server's own storage code.
//! - `load`: the release server on such a database under the requests Grafana sends when
//!   many users open their dashboards at once, against the `sqlite3` shell running the same
//!   SQL and a minimal warp handler returning the same bytes.
//! - `ingest`: units per second through the update loop, from a stand-in `sacct` and a real
//!   Prometheus.
//!
//! `scripts/bench.sh` runs them all and writes the tables of `docs/benchmarks.md`.

mod generate;
mod ingest;
mod load;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ceems_bench", about = "Benchmarks of ceems_api_server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a database of N units with their usage and daily usage.
    Generate(generate::Args),
    /// Replays the dashboards of many users against the server and its floors.
    Load(load::Args),
    /// Serves fixed-size responses with a minimal warp handler (the HTTP floor).
    HttpFloor(load::FloorArgs),
    /// Units per second through the update loop.
    Ingest(ingest::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => generate::run(&args),
        Command::Load(args) => load::run(&args),
        Command::HttpFloor(args) => load::run_floor(&args),
        Command::Ingest(args) => ingest::run(&args),
    }
}
