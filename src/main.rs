//! The `ceems_api_server` binary: flags, config, telemetry, then [`ceems_api_server::app`].

fn main() {}
