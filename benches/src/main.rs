//! `pimesh-bench`: the mesh benchmark (see benches/README.md). Exit codes:
//! 0 every run completed, 1 a run failed or the benchmark could not run,
//! 64 bad usage (sysexits `EX_USAGE`).

use clap::Parser;
use pimesh_benches::config::{Cli, Command};
use pimesh_benches::{error_chain, harness, upstream};
use std::process::ExitCode;

/// Exit code for bad usage (sysexits.h `EX_USAGE`).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(Command::Upstream { payload }) = cli.command {
        return match upstream::serve(payload) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pimesh-bench upstream: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match harness::run(&cli.args) {
        Ok(report) => {
            let failed: Vec<_> = report.runs.iter().filter(|r| r.failure.is_some()).collect();
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "pimesh-bench: {} run(s) failed (see report.md)",
                    failed.len()
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("pimesh-bench: {}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
