//! Checks of what proxies and operators send the registry: names, ports,
//! addresses, labels, and [`ServicePolicy`] values (shared with the CLI so
//! that a bad flag is refused before it reaches the controller).

use pimesh_api::discovery::ServicePolicy;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Most workload labels an endpoint may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label key, bytes (a Kubernetes label name part).
pub const MAX_LABEL_KEY: usize = 63;
/// Longest label value, bytes.
pub const MAX_LABEL_VALUE: usize = 253;
/// Most entries of `retry_http` / `retry_grpc`.
const MAX_RETRY_CONDITIONS: usize = 16;
/// Longest timeout or backoff accepted, ms (one day).
const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;

/// gRPC status names `retry_grpc` accepts: every code's but `OK`, which is
/// never retried.
pub const GRPC_CODES: &[&str] = pimesh_api::discovery::GRPC_STATUS_NAMES.split_at(1).1;

/// A value that is refused: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The JSON field (the CLI maps it to its flag).
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

/// An RFC 1123 label (service names and namespaces, as Kubernetes').
///
/// # Errors
///
/// [`Invalid`] naming `field`: empty, longer than 63 bytes, or not lower-case
/// letters, digits and inner `-`.
pub fn label(field: &'static str, s: &str) -> Result<(), Invalid> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{s:?} is not an RFC 1123 label (lowercase letters, digits, '-')"),
        ))
    }
}

/// A service port: 1–65535.
///
/// # Errors
///
/// [`Invalid`] naming `field` for port 0.
pub fn port(field: &'static str, p: u16) -> Result<(), Invalid> {
    if p == 0 {
        return Err(invalid(field, "port 0 is not a port"));
    }
    Ok(())
}

/// An endpoint address clients can dial: not unspecified, not port 0,
/// not multicast or broadcast.
///
/// # Errors
///
/// [`Invalid`] naming `field` for an address that is unspecified, multicast,
/// broadcast, or has port 0.
pub fn addr(field: &'static str, a: SocketAddr) -> Result<(), Invalid> {
    let ip = a.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if a.port() == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(invalid(
            field,
            format!("{a} is not an address clients can connect to"),
        ));
    }
    Ok(())
}

/// Workload labels: at most [`MAX_LABELS`]; keys of letters, digits and
/// `_ - . /` up to [`MAX_LABEL_KEY`] bytes; values without control
/// characters up to [`MAX_LABEL_VALUE`] bytes.
///
/// # Errors
///
/// [`Invalid`] naming the label (`labels`): too many, a bad key or value, or
/// one too long.
pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if labels.len() > MAX_LABELS {
        return Err(invalid("labels", format!("more than {MAX_LABELS} labels")));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_-./".contains(&c));
        if !key_ok {
            return Err(invalid(
                "labels",
                format!("{k:?} is not a label key (letters, digits, '_', '-', '.', '/'; at most {MAX_LABEL_KEY} bytes)"),
            ));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(invalid(
                "labels",
                format!("the value of {k:?} is longer than {MAX_LABEL_VALUE} bytes or has control characters"),
            ));
        }
    }
    Ok(())
}

/// A policy's values: timeouts and backoffs 1 ms to one day, min backoff ≤
/// max backoff, failure accrual ≥ 1, a budget ratio in 0–1 (finite),
/// retried HTTP statuses as Linkerd writes them (`5xx`, `503`, `500-504`,
/// `gateway-error`), gRPC codes from [`GRPC_CODES`].
///
/// # Errors
///
/// [`Invalid`] naming the first field out of range or unknown (a timeout,
/// backoff, ratio, status class or gRPC code).
pub fn policy(p: &ServicePolicy) -> Result<(), Invalid> {
    let ms = |field, v: Option<u64>| match v {
        Some(0) => Err(invalid(field, "must be at least 1ms")),
        Some(v) if v > MAX_DURATION_MS => Err(invalid(field, "must be at most 24h")),
        _ => Ok(()),
    };
    ms("timeout_ms", p.timeout_ms)?;
    ms("per_try_timeout_ms", p.per_try_timeout_ms)?;
    ms(
        "failure_accrual_min_backoff_ms",
        p.failure_accrual_min_backoff_ms,
    )?;
    ms(
        "failure_accrual_max_backoff_ms",
        p.failure_accrual_max_backoff_ms,
    )?;
    if let (Some(min), Some(max)) = (
        p.failure_accrual_min_backoff_ms,
        p.failure_accrual_max_backoff_ms,
    ) {
        if min > max {
            return Err(invalid(
                "failure_accrual_min_backoff_ms",
                format!("the minimum backoff ({min}ms) is above the maximum ({max}ms)"),
            ));
        }
    }
    if p.failure_accrual_consecutive == Some(0) {
        return Err(invalid(
            "failure_accrual_consecutive",
            "must be at least 1 failure",
        ));
    }
    if let Some(r) = p.retry_budget_ratio {
        if !(0.0..=1.0).contains(&r) {
            return Err(invalid(
                "retry_budget_ratio",
                format!("{r} is not a ratio between 0 and 1"),
            ));
        }
    }
    if let Some(list) = &p.retry_http {
        if list.len() > MAX_RETRY_CONDITIONS {
            return Err(invalid("retry_http", "too many entries"));
        }
        for s in list {
            http_condition(s).map_err(|r| invalid("retry_http", r))?;
        }
    }
    if let Some(list) = &p.retry_grpc {
        if list.len() > MAX_RETRY_CONDITIONS {
            return Err(invalid("retry_grpc", "too many entries"));
        }
        for s in list {
            if !GRPC_CODES.contains(&s.as_str()) {
                return Err(invalid(
                    "retry_grpc",
                    format!(
                        "{s:?} is not a gRPC status name ({})",
                        GRPC_CODES.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// One `retry_http` entry: `Nxx` (N 1–5), `gateway-error`, a status
/// 100–599, or a range `A-B` of them with A ≤ B.
fn http_condition(s: &str) -> Result<(), String> {
    let status = |t: &str| {
        t.parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c) && t.len() == 3)
    };
    let ok = match s {
        "gateway-error" => true,
        _ if s.len() == 3 && s.ends_with("xx") => matches!(s.as_bytes()[0], b'1'..=b'5'),
        _ => match s.split_once('-') {
            Some((a, b)) => matches!((status(a), status(b)), (Some(a), Some(b)) if a <= b),
            None => status(s).is_some(),
        },
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not an HTTP status condition (5xx, 503, 500-504, gateway-error)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_conditions() {
        for ok in ["5xx", "1xx", "503", "500-504", "gateway-error", "500-500"] {
            assert!(http_condition(ok).is_ok(), "{ok}");
        }
        for bad in [
            "6xx", "5XX", "99", "600", "504-500", "abc", "", "5xxx", "0503",
        ] {
            assert!(http_condition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies() {
        assert!(policy(&ServicePolicy::default()).is_ok());
        let good = ServicePolicy {
            timeout_ms: Some(2000),
            per_try_timeout_ms: Some(500),
            retry_limit: Some(3),
            retry_http: Some(vec!["5xx".into()]),
            retry_grpc: Some(vec!["unavailable".into()]),
            retry_budget_ratio: Some(0.2),
            failure_accrual_consecutive: Some(7),
            failure_accrual_min_backoff_ms: Some(1000),
            failure_accrual_max_backoff_ms: Some(60000),
            ..Default::default()
        };
        assert!(policy(&good).is_ok());
        let field = |p: ServicePolicy| policy(&p).unwrap_err().field;
        assert_eq!(
            field(ServicePolicy {
                timeout_ms: Some(0),
                ..good.clone()
            }),
            "timeout_ms"
        );
        assert_eq!(
            field(ServicePolicy {
                retry_budget_ratio: Some(f64::NAN),
                ..good.clone()
            }),
            "retry_budget_ratio"
        );
        assert_eq!(
            field(ServicePolicy {
                retry_budget_ratio: Some(1.5),
                ..good.clone()
            }),
            "retry_budget_ratio"
        );
        assert_eq!(
            field(ServicePolicy {
                failure_accrual_min_backoff_ms: Some(70000),
                ..good.clone()
            }),
            "failure_accrual_min_backoff_ms"
        );
        assert_eq!(
            field(ServicePolicy {
                retry_grpc: Some(vec!["UNAVAILABLE".into()]),
                ..good.clone()
            }),
            "retry_grpc"
        );
        assert_eq!(
            field(ServicePolicy {
                failure_accrual_consecutive: Some(0),
                ..good
            }),
            "failure_accrual_consecutive"
        );
    }

    #[test]
    fn labels_and_addresses() {
        let l = |k: &str, v: &str| labels(&[(k.to_string(), v.to_string())].into());
        assert!(l("deployment", "web").is_ok());
        assert!(l("app.kubernetes.io/name", "web").is_ok());
        assert!(l("", "x").is_err());
        assert!(l("a b", "x").is_err());
        assert!(l("k", "line\nbreak").is_err());
        let many: BTreeMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(labels(&many).is_err());
        for bad in ["0.0.0.0:80", "10.0.0.1:0", "[::]:80", "224.0.0.1:80"] {
            assert!(addr("addr", bad.parse().unwrap()).is_err(), "{bad}");
        }
        assert!(addr("addr", "10.0.0.1:80".parse().unwrap()).is_ok());
        assert!(label("service", "web-1").is_ok());
        assert!(label("service", "Web").is_err());
    }
}
