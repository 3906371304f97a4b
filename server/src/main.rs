//! The `wsredis` binary: parse the command line, set up logging, dispatch, map errors to
//! exit codes. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use wsredis::cli::{Cli, Command};
use wsredis::config::{Config, LogFormat};
use wsredis::logging::{self, Role};
use wsredis::{supervisor, worker};

/// Bad command line or configuration.
const EXIT_USAGE: u8 = 2;
/// The server could not start or failed while running.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One clear line, not clap's whole usage block.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("wsredis: {first} (see `wsredis --help`)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Worker => run_worker(),
        Command::Publish(args) => match wsredis::commands::publish(args) {
            Ok((channels, receivers)) => {
                println!(
                    "published to {} ({receivers} receivers)",
                    channels.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

fn fail(e: &wsredis::commands::CommandError) -> ExitCode {
    eprintln!("wsredis: {e}");
    match e {
        wsredis::commands::CommandError::Usage(_) => ExitCode::from(EXIT_USAGE),
        wsredis::commands::CommandError::Failed(_) => ExitCode::from(EXIT_FAILURE),
    }
}

fn serve(config: Config) -> ExitCode {
    if let Err(e) = config.validate() {
        eprintln!("wsredis: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Err(e) = logging::init(
        Role::Master,
        config.log_format,
        &config.log,
        config.log_file.clone(),
    ) {
        eprintln!("wsredis: cannot open the log: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    match supervisor::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("wsredis: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run_worker() -> ExitCode {
    let id = std::env::var(supervisor::ENV_WORKER_ID)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let config = match std::env::var(supervisor::ENV_WORKER_CONFIG)
        .map_err(|e| e.to_string())
        .and_then(|j| Config::from_json(&j).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsredis worker: {e}; workers are started by `wsredis serve`");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let format = config.log_format;
    if logging::init(
        Role::Worker(id),
        format,
        &config.log,
        config.log_file.clone(),
    )
    .is_err()
    {
        let _ = logging::init(Role::Worker(id), LogFormat::Text, "info", None);
    }
    worker::main(id, config)
}
