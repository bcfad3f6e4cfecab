//! `wsline`: a WebSocket echo server and an interactive client.
//!
//! Flow: [`args`] (what was typed, parsed by clap) → [`settings`] (resolved library
//! configuration) → [`serve`] or [`connect`].

mod args;
mod connect;
mod memory;
mod page;
mod serve;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use args::{Args, Command};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    let outcome = match args.command {
        Command::Serve(serve) => {
            settings::ServeSettings::try_from(serve).and_then(|settings| serve::run(&settings))
        }
        Command::Connect(connect) => settings::ConnectSettings::try_from(connect)
            .and_then(|settings| connect::run(&settings)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("wsline: {failure}");
            failure.exit_code()
        }
    }
}

/// Logs to stderr: warnings by default, `-v` connections, `-vv` messages and protocol
/// details. `RUST_LOG` overrides.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
