//! The operator CLI: `pimesh token ...`, `pimesh identity ...` and
//! `pimesh service ...`, clients
//! of the controller's operator port (`--controller URL`, env
//! `PIMESH_CONTROLLER`, default `http://127.0.0.1:8085`). The controller
//! holds the database (sled allows one process), so the CLI never opens it.
//!
//! - `token`: create, list, revoke join tokens.
//! - `identity`: print the trust anchors, show the CA, rotate it.
//! - `service`: the standalone service registry and per-service policy.
//! - `tap`: `pimesh tap` and `pimesh top`, live request metadata.
//! - `telemetry`: `stat`, `edges`, `dashboard`.
//! - `authz`: `pimesh authz`, allowed and denied traffic per server and authorization.
//! - `inject`: `pimesh inject`, offline (no controller).
//! - `check`: `pimesh check [--pre]`, against the Kubernetes API.
//!
//! Exit codes: 0 success, 1 the controller failed or refused, 64 bad usage.

pub mod authz;
pub mod check;
pub mod identity;
pub mod inject;
pub mod policy;
pub mod service;
pub mod tap;
pub mod telemetry;
pub mod token;

use crate::client::{self, Client, DEFAULT_CONTROLLER};
use crate::config::Env;
use clap::{Args, ValueEnum};

/// Where the controller's operator API is.
#[derive(Debug, Clone, Default, Args)]
pub struct ControllerFlag {
    /// The controller's operator API [env: PIMESH_CONTROLLER] [default:
    /// http://127.0.0.1:8085]
    #[arg(long, value_name = "URL")]
    pub controller: Option<String>,
}

impl ControllerFlag {
    /// A client for the flag's URL, else `PIMESH_CONTROLLER`'s, else the default.
    ///
    /// # Errors
    ///
    /// [`Error::Client`] ([`client::Error::BadUrl`]) when the URL is not
    /// `http://HOST[:PORT]`.
    pub fn client(&self, env: &dyn Env) -> Result<Client, Error> {
        let url = self
            .controller
            .clone()
            .or_else(|| env.get("PIMESH_CONTROLLER"))
            .unwrap_or_else(|| DEFAULT_CONTROLLER.to_string());
        Ok(Client::new(&url)?)
    }
}

/// `-o` / `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable (`table` is the same).
    #[value(alias = "table")]
    Text,
    /// JSON, as the operator API answers.
    Json,
}

/// A CLI command that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value cannot be used.
    #[error("invalid {flag} {value:?}: {reason}")]
    Usage {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Talking to the controller failed, or it refused.
    #[error(transparent)]
    Client(#[from] client::Error),
    /// `stat`/`edges` of a resource kind that does not exist (exit code 1,
    /// as `linkerd viz stat`).
    #[error("unknown resource {0:?}: use deploy, svc or pod")]
    UnknownResource(String),
    /// The input (a file to inject) is not what it must be (exit 1).
    #[error("{0}")]
    Input(String),
    /// Printing failed.
    #[error("cannot write the output")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// 64 for bad usage (including a bad `--controller`), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage { .. } | Error::Client(client::Error::BadUrl(_)) => 64,
            _ => 1,
        }
    }
}

/// Runs `f` on a current-thread runtime (the CLI makes one request or two).
fn block_on<T>(f: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// `2026-11-21T00:13:00Z` for Unix seconds (RFC 3339, UTC).
pub fn format_time(unix: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

/// Prints `value` as pretty JSON.
fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    println!("{s}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_750_000_000), "2025-06-15T15:06:40Z");
    }

    #[test]
    fn controller_url_flag_then_env_then_default() {
        let env: HashMap<&str, &str> = [("PIMESH_CONTROLLER", "http://10.0.0.1:1")].into();
        let none: HashMap<&str, &str> = HashMap::new();
        let flag = ControllerFlag {
            controller: Some("http://127.0.0.1:2".into()),
        };
        let debug = |c: Client| format!("{c:?}");
        assert!(debug(flag.client(&env).unwrap()).contains("127.0.0.1:2"));
        assert!(debug(ControllerFlag::default().client(&env).unwrap()).contains("10.0.0.1:1"));
        assert!(debug(ControllerFlag::default().client(&none).unwrap()).contains("127.0.0.1:8085"));
        let bad = ControllerFlag {
            controller: Some("ftp://x".into()),
        };
        assert_eq!(bad.client(&none).unwrap_err().exit_code(), 64);
    }
}
