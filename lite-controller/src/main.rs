//! `pimesh`: the control plane (`pimesh controller`) and the operator CLI.
//!
//! Only the command-line shell exists so far; the controller's roles
//! (identity, discovery, policy, injector, telemetry) arrive with their
//! issues. Exit codes: 0 success, 64 bad usage (sysexits `EX_USAGE`).

use clap::Parser;
use std::process::ExitCode;

/// Exit code for bad usage or configuration (sysexits.h `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// pimesh: a service mesh for small ARM clusters.
#[derive(Debug, Parser)]
#[command(name = "pimesh", version, about, long_about = None)]
struct Cli {}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(Cli {}) => {
            eprintln!(
                "pimesh {}: no subcommand yet; the controller arrives with the identity issue (see --help)",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            ExitCode::from(code)
        }
    }
}
