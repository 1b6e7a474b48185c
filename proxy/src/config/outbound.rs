//! The outbound part of the configuration: service registration, discovery
//! bounds, the opaque-TCP upstream listeners, and the proxy-side defaults
//! of the resilience settings that `pimesh service set` overrides per
//! service.

use super::identity::IdentityConfig;
use super::parse::{
    parse_addr, parse_duration, parse_grpc_codes, parse_http_classes, Error, Parser,
};
use pimesh_api::discovery::ServiceName;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long the first request to a destination waits for the
/// controller's first answer before the destination counts as unknown.
pub const DEFAULT_DISCOVERY_WAIT: Duration = Duration::from_secs(1);
/// A watch nobody used for this long is closed.
pub const DEFAULT_DISCOVERY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Destinations watched at once; more are not resolved (names: 503,
/// addresses: forwarded as they are).
pub const DEFAULT_DISCOVERY_MAX_WATCHES: usize = 1000;
/// Retries per request when neither the service nor
/// `PIMESH_PROXY_OUTBOUND_RETRY_LIMIT` says otherwise: none, as Linkerd
/// (retries are opted into per service).
pub const DEFAULT_RETRY_LIMIT: u32 = 0;
/// HTTP statuses retried once retries are on (Linkerd's `retry.http` example).
pub const DEFAULT_RETRY_HTTP: &str = "5xx";
/// gRPC statuses retried once retries are on.
pub const DEFAULT_RETRY_GRPC: &str = "unavailable";
/// Retry budget: retries as a share of requests (Linkerd's 20 %).
pub const DEFAULT_RETRY_BUDGET_RATIO: f64 = 0.2;
/// Retry budget: retries per second always allowed (Linkerd's 10).
pub const DEFAULT_RETRY_BUDGET_MIN_PER_SEC: u32 = 10;
/// Consecutive failures that eject an endpoint (Linkerd's failure accrual).
pub const DEFAULT_FAILURE_ACCRUAL_CONSECUTIVE: u32 = 7;
/// First probe of an ejected endpoint after this long; doubles (jittered).
pub const DEFAULT_FAILURE_ACCRUAL_MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between probes of an ejected endpoint.
pub const DEFAULT_FAILURE_ACCRUAL_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Outbound settings: registration, discovery, upstream listeners, defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundConfig {
    /// `PIMESH_PROXY_SERVICE`: the service this pod serves (`NAME`, port),
    /// registered with the controller; `None`: nothing is registered.
    pub service: Option<(String, Option<u16>)>,
    /// `PIMESH_PROXY_ADVERTISE_ADDR`: the pod's IP as clients reach it;
    /// unset: the local IP of the connection to the controller.
    pub advertise_ip: Option<IpAddr>,
    /// `PIMESH_PROXY_TCP_UPSTREAMS`: extra local listeners whose connections
    /// go, as opaque TCP, to a service (apps without HTTP, no iptables).
    pub tcp_upstreams: Vec<TcpUpstream>,
    /// `PIMESH_PROXY_CLUSTER_DOMAIN`: the domain of fully-qualified names.
    pub cluster_domain: String,
    /// `PIMESH_PROXY_DISCOVERY_WAIT`: first-use wait for a resolution.
    pub discovery_wait: Duration,
    /// `PIMESH_PROXY_DISCOVERY_IDLE_TIMEOUT`: unused watches are closed.
    pub discovery_idle_timeout: Duration,
    /// `PIMESH_PROXY_DISCOVERY_MAX_WATCHES`: bound on watched destinations.
    pub discovery_max_watches: usize,
    /// Resilience defaults for what a service's policy leaves unset.
    pub defaults: Defaults,
}

/// One `PIMESH_PROXY_TCP_UPSTREAMS` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpUpstream {
    /// Where the local listener binds.
    pub listen: SocketAddr,
    /// The service its connections go to (bare names are in the proxy's namespace).
    pub service: ServiceName,
    /// The service port.
    pub port: u16,
}

/// Proxy-side defaults of [`pimesh_api::discovery::ServicePolicy`].
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// `PIMESH_PROXY_OUTBOUND_TIMEOUT`: whole request incl. retries, until
    /// the response head; `None`: no limit.
    pub timeout: Option<Duration>,
    /// `PIMESH_PROXY_OUTBOUND_PER_TRY_TIMEOUT`: each try, until its response head.
    pub per_try_timeout: Option<Duration>,
    /// `PIMESH_PROXY_OUTBOUND_RETRY_LIMIT`: retries after the first try.
    pub retry_limit: u32,
    /// `PIMESH_PROXY_OUTBOUND_RETRY_HTTP`: statuses retried (`5xx,429`).
    pub retry_http: Vec<String>,
    /// `PIMESH_PROXY_OUTBOUND_RETRY_GRPC`: gRPC statuses retried.
    pub retry_grpc: Vec<String>,
    /// `PIMESH_PROXY_OUTBOUND_RETRY_BUDGET_RATIO`: retries per request.
    pub retry_budget_ratio: f64,
    /// `PIMESH_PROXY_OUTBOUND_RETRY_BUDGET_MIN_PER_SEC`: retries always allowed.
    pub retry_budget_min_per_sec: u32,
    /// `PIMESH_PROXY_FAILURE_ACCRUAL_CONSECUTIVE`: failures that eject (0: never).
    pub failure_accrual_consecutive: u32,
    /// `PIMESH_PROXY_FAILURE_ACCRUAL_MIN_BACKOFF`.
    pub failure_accrual_min_backoff: Duration,
    /// `PIMESH_PROXY_FAILURE_ACCRUAL_MAX_BACKOFF`.
    pub failure_accrual_max_backoff: Duration,
}

pub(super) fn outbound_config(
    p: &Parser<'_>,
    identity: Option<&IdentityConfig>,
) -> Result<OutboundConfig, Error> {
    let cluster_domain = p.parse(
        "PIMESH_PROXY_CLUSTER_DOMAIN",
        pimesh_api::discovery::DEFAULT_CLUSTER_DOMAIN,
        |v| {
            let ok = v.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
            if ok {
                Ok(v.to_string())
            } else {
                Err("not a DNS domain".into())
            }
        },
    )?;
    let namespace = identity.map_or("default", |i| i.identity.namespace());
    let needs_controller = |name: &'static str| -> Result<(), Error> {
        match (identity, p.env.get(name)) {
            (None, Some(value)) => Err(Error {
                name,
                value,
                reason: "needs PIMESH_PROXY_CONTROLLER_ADDR (discovery)".into(),
            }),
            _ => Ok(()),
        }
    };
    needs_controller("PIMESH_PROXY_SERVICE")?;
    needs_controller("PIMESH_PROXY_TCP_UPSTREAMS")?;
    let service = p.parse_opt("PIMESH_PROXY_SERVICE", |v| {
        let (name, port) = match v.split_once(':') {
            Some((n, port)) => (n, Some(parse_port(port)?)),
            None => (v, None),
        };
        if name.contains('.') || ServiceName::parse(name, "x", "x").is_err() {
            return Err(format!(
                "{name:?} is not a service name (an RFC 1123 label)"
            ));
        }
        Ok((name.to_string(), port))
    })?;
    let tcp_upstreams = p
        .parse_opt("PIMESH_PROXY_TCP_UPSTREAMS", |v| {
            parse_tcp_upstreams(v, namespace, &cluster_domain)
        })?
        .unwrap_or_default();
    let timeout = |name| p.parse_opt(name, parse_duration);
    let classes = |name, default: &str| p.parse(name, default, parse_list);
    let defaults = Defaults {
        timeout: timeout("PIMESH_PROXY_OUTBOUND_TIMEOUT")?,
        per_try_timeout: timeout("PIMESH_PROXY_OUTBOUND_PER_TRY_TIMEOUT")?,
        retry_limit: p.number(
            "PIMESH_PROXY_OUTBOUND_RETRY_LIMIT",
            DEFAULT_RETRY_LIMIT as usize,
            0..=10,
        )? as u32,
        retry_http: classes("PIMESH_PROXY_OUTBOUND_RETRY_HTTP", DEFAULT_RETRY_HTTP)?,
        retry_grpc: classes("PIMESH_PROXY_OUTBOUND_RETRY_GRPC", DEFAULT_RETRY_GRPC)?,
        retry_budget_ratio: p
            .parse_opt("PIMESH_PROXY_OUTBOUND_RETRY_BUDGET_RATIO", |v| {
                match v.parse::<f64>() {
                    Ok(r) if (0.0..=10.0).contains(&r) => Ok(r),
                    _ => Err("not a ratio between 0 and 10".into()),
                }
            })?
            .unwrap_or(DEFAULT_RETRY_BUDGET_RATIO),
        retry_budget_min_per_sec: p.number(
            "PIMESH_PROXY_OUTBOUND_RETRY_BUDGET_MIN_PER_SEC",
            DEFAULT_RETRY_BUDGET_MIN_PER_SEC as usize,
            0..=100_000,
        )? as u32,
        failure_accrual_consecutive: p.number(
            "PIMESH_PROXY_FAILURE_ACCRUAL_CONSECUTIVE",
            DEFAULT_FAILURE_ACCRUAL_CONSECUTIVE as usize,
            0..=10_000,
        )? as u32,
        failure_accrual_min_backoff: p.duration(
            "PIMESH_PROXY_FAILURE_ACCRUAL_MIN_BACKOFF",
            DEFAULT_FAILURE_ACCRUAL_MIN_BACKOFF,
        )?,
        failure_accrual_max_backoff: p.duration(
            "PIMESH_PROXY_FAILURE_ACCRUAL_MAX_BACKOFF",
            DEFAULT_FAILURE_ACCRUAL_MAX_BACKOFF,
        )?,
    };
    for (name, list) in [
        ("PIMESH_PROXY_OUTBOUND_RETRY_HTTP", &defaults.retry_http),
        ("PIMESH_PROXY_OUTBOUND_RETRY_GRPC", &defaults.retry_grpc),
    ] {
        let check = if name.ends_with("HTTP") {
            parse_http_classes(list).map(|_| ())
        } else {
            parse_grpc_codes(list).map(|_| ())
        };
        check.map_err(|reason| Error {
            name,
            value: list.join(","),
            reason,
        })?;
    }
    if defaults.failure_accrual_min_backoff > defaults.failure_accrual_max_backoff {
        return Err(Error {
            name: "PIMESH_PROXY_FAILURE_ACCRUAL_MIN_BACKOFF",
            value: format!("{:?}", defaults.failure_accrual_min_backoff),
            reason: "longer than PIMESH_PROXY_FAILURE_ACCRUAL_MAX_BACKOFF".into(),
        });
    }
    Ok(OutboundConfig {
        service,
        advertise_ip: p.parse_opt("PIMESH_PROXY_ADVERTISE_ADDR", |v| {
            v.parse::<IpAddr>()
                .ok()
                .filter(|ip| !ip.is_unspecified())
                .ok_or_else(|| "not a (specified) IP address".to_string())
        })?,
        tcp_upstreams,
        cluster_domain,
        discovery_wait: p.duration("PIMESH_PROXY_DISCOVERY_WAIT", DEFAULT_DISCOVERY_WAIT)?,
        discovery_idle_timeout: p.duration(
            "PIMESH_PROXY_DISCOVERY_IDLE_TIMEOUT",
            DEFAULT_DISCOVERY_IDLE_TIMEOUT,
        )?,
        discovery_max_watches: p.number(
            "PIMESH_PROXY_DISCOVERY_MAX_WATCHES",
            DEFAULT_DISCOVERY_MAX_WATCHES,
            1..=100_000,
        )?,
        defaults,
    })
}

fn parse_port(v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{v:?} is not a port (1-65535)")),
    }
}

fn parse_list(v: &str) -> Result<Vec<String>, String> {
    Ok(v.split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect())
}

/// `127.0.0.1:15432=db:5432,127.0.0.1:16379=cache.shop:6379`.
fn parse_tcp_upstreams(
    v: &str,
    namespace: &str,
    cluster_domain: &str,
) -> Result<Vec<TcpUpstream>, String> {
    let mut out: Vec<TcpUpstream> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (listen, dst) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not LISTEN_ADDR=SERVICE:PORT"))?;
        let listen = parse_addr(listen.trim())?;
        let (name, port) = dst
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| format!("{dst:?} has no port (SERVICE:PORT)"))?;
        let service =
            ServiceName::parse(name, namespace, cluster_domain).map_err(|e| e.to_string())?;
        if out.iter().any(|u| u.listen == listen) {
            return Err(format!("{listen} given twice"));
        }
        out.push(TcpUpstream {
            listen,
            service,
            port: parse_port(port)?,
        });
    }
    Ok(out)
}
