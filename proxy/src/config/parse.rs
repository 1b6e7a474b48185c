//! How configuration values are read and parsed: the [`Env`] source, the
//! [`Error`] naming a bad variable, and the value parsers shared by the
//! configuration's parts (addresses, durations, retry classes).

use std::net::SocketAddr;
use std::time::Duration;

pub use pimesh_api::env::{Env, OsEnv};

/// A configuration value that could not be used. The binary prints it and
/// exits with code 64.
#[derive(Debug, thiserror::Error)]
#[error("invalid {name}={value:?}: {reason}")]
pub struct Error {
    /// The environment variable, e.g. `PIMESH_PROXY_THREADS`.
    pub name: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

pub(super) struct Parser<'a> {
    pub(super) env: &'a dyn Env,
}

impl Parser<'_> {
    pub(super) fn parse<T>(
        &self,
        name: &'static str,
        default: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, Error> {
        let value = self.env.get(name).unwrap_or_else(|| default.to_string());
        f(value.trim()).map_err(|reason| Error {
            name,
            value,
            reason,
        })
    }

    pub(super) fn parse_opt<T>(
        &self,
        name: &'static str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        match self.env.get(name) {
            None => Ok(None),
            Some(value) => f(value.trim()).map(Some).map_err(|reason| Error {
                name,
                value,
                reason,
            }),
        }
    }

    pub(super) fn duration(
        &self,
        name: &'static str,
        default: Duration,
    ) -> Result<Duration, Error> {
        Ok(self.parse_opt(name, parse_duration)?.unwrap_or(default))
    }

    pub(super) fn number(
        &self,
        name: &'static str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, Error> {
        let n = self.parse_opt(name, |v| {
            let n: usize = v.parse().map_err(|_| "not a whole number".to_string())?;
            if range.contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "must be between {} and {}",
                    range.start(),
                    range.end()
                ))
            }
        })?;
        Ok(n.unwrap_or(default))
    }
}

pub(super) fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| "not an IP:PORT socket address".to_string())
}

/// `5xx`, `503`, `500-504`, `gateway-error` (502–504) → inclusive ranges,
/// as Linkerd's `retry.http` annotation.
///
/// # Errors
///
/// A class that is none of these.
pub fn parse_http_classes(classes: &[String]) -> Result<Vec<(u16, u16)>, String> {
    classes
        .iter()
        .map(|c| {
            let c = c.trim().to_ascii_lowercase();
            let status = |s: &str| match s.parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{c:?} is not an HTTP status class (5xx, 503, 500-504, gateway-error)"
                )),
            };
            if c == "gateway-error" {
                return Ok((502, 504));
            }
            if let Some(d) = c.strip_suffix("xx") {
                let d = status(&format!("{d}00"))?;
                return Ok((d, d + 99));
            }
            match c.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (status(lo)?, status(hi)?);
                    if lo > hi {
                        return Err(format!("{c:?} is a reversed range"));
                    }
                    Ok((lo, hi))
                }
                None => status(&c).map(|s| (s, s)),
            }
        })
        .collect()
}

/// gRPC status names (`unavailable`, `deadline-exceeded`, ... — `-` or
/// `_`, any case) or numbers → codes (grpc/doc/statuscodes.md).
///
/// # Errors
///
/// An unknown name or a number over 16.
pub fn parse_grpc_codes(names: &[String]) -> Result<Vec<u32>, String> {
    names
        .iter()
        .map(|n| {
            let n = n.trim().to_ascii_lowercase().replace('_', "-");
            if let Ok(code) = n.parse::<u32>() {
                return if code <= 16 {
                    Ok(code)
                } else {
                    Err(format!("{code} is not a gRPC status code (0-16)"))
                };
            }
            pimesh_api::discovery::GRPC_STATUS_NAMES
                .iter()
                .position(|x| *x == n)
                .map(|i| i as u32)
                .ok_or_else(|| format!("{n:?} is not a gRPC status name"))
        })
        .collect()
}

/// Durations of `PIMESH_PROXY_*` variables: [`pimesh_api::text`]'s form,
/// greater than zero.
pub use pimesh_api::text::parse_positive_duration as parse_duration;
