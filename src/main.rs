//! The `ceems_api_server` binary: flags, config, telemetry, then [`ceems_api_server::app`].

use std::io::IsTerminal;
use std::process::ExitCode;

use ceems_api_server::app::App;
use ceems_api_server::config::{self, FlagsError};

fn main() -> ExitCode {
    let flags = match config::parse_flags(std::env::args_os()) {
        Ok(flags) => flags,
        Err(FlagsError::Display { text }) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("ceems_api_server: {error}");
            return ExitCode::FAILURE;
        }
    };
    let settings = match config::load_settings(flags) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ceems_api_server: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = init_tracing(&settings.flags.log_level, &settings.flags.log_format) {
        eprintln!("ceems_api_server: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ceems_api_server: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = App::build(settings).await?;
        app.run_until_stopped(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("ceems_api_server: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `level`, as logfmt-like text or JSON lines.
fn init_tracing(level: &str, format: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|error| format!("--log.level {level}: {error}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        _ => builder.init(),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
