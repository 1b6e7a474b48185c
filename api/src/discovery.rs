//! Service discovery: the standalone registry and the watch API.
//!
//! Proxies started with `PIMESH_PROXY_SERVICE=NAME[:PORT]` register the
//! endpoint of the pod they front ([`Registration`], `PUT`
//! [`ENDPOINTS_PATH`] on the proxy port 8086, authenticated by the proxy's
//! join token) and renew it before its lease ([`Lease`]) runs out; an
//! endpoint whose lease expired is dropped. Operators add endpoints
//! outside the mesh with `pimesh service add`.
//!
//! Proxies resolve a destination — a service name or an `ip:port` — with a
//! watch (`GET` [`WATCH_PATH`], HTTP/2 over mTLS): a newline-delimited JSON
//! stream of [`WatchEvent`]s in the shape of Kubernetes watch events
//! (`{"type":"ADDED","revision":…,"object":{…}}`). Each event carries the
//! whole [`Resolution`] (endpoint sets are small), so a reconnecting proxy
//! that sends the last revision it saw gets either a `BOOKMARK` (nothing
//! changed) or the new state.
//!
//! Names follow Kubernetes Service DNS: `web`, `web.ns`, `web.ns.svc`,
//! `web.ns.svc.cluster.local` (see [`ServiceName`]).

pub mod route;

use crate::identity::Identity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// `PUT` a [`Registration`] (register or renew; idempotent, keyed by
/// service, port, address and proxy address, so replicas sharing a host's
/// address each keep an endpoint) → [`Lease`]; `DELETE` with the same body
/// deregisters. Proxy port 8086. Errors: 400 malformed body, 401/403 bad
/// token or a service the token does not allow, 409 `endpoint_conflict`
/// when another identity's proxy holds that endpoint ([`crate::ApiError`]).
pub const ENDPOINTS_PATH: &str = "/v1/discovery/endpoints";

/// `GET ?name=NAME[:PORT]&revision=N` or `GET ?addr=IP:PORT&revision=N`:
/// a stream of [`WatchEvent`]s, `application/x-ndjson`, one JSON object
/// per line. Proxy port 8086, client certificate required (any identity
/// of the trust domain). `name` is resolved in the namespace of the
/// caller's identity when it has no namespace; a missing port is 80.
/// `revision` (optional) is the last revision the caller saw. Errors: 400
/// for a malformed name/address, 401 without a client certificate.
pub const WATCH_PATH: &str = "/v1/discovery/watch";

/// Lease length the controller grants unless configured otherwise, seconds.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 30;

/// The controller sends a `BOOKMARK` on a watch at least this often when
/// nothing else happened, seconds; a proxy that hears nothing for twice as
/// long reconnects.
pub const BOOKMARK_INTERVAL_SECS: u64 = 10;

/// The cluster DNS domain of fully-qualified service names, as Kubernetes'.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Default HTTP port of a name given without one (RFC 9110 `http` scheme).
pub const DEFAULT_PORT: u16 = 80;

/// A proxy registers the endpoint of the pod it fronts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The proxy's join token (the one it was certified with). Its
    /// identity is the endpoint's identity, its namespace the service's.
    pub token: String,
    /// Service name (RFC 1123 label), in the namespace of the token's identity.
    pub service: String,
    /// Service port clients address (`web:8080` → 8080).
    pub port: u16,
    /// Where clients reach the app: in transparent mode the pod's address
    /// and the app's port (connections to it are redirected to the pod's
    /// inbound proxy).
    pub addr: SocketAddr,
    /// Where the pod's inbound proxy listens when connections to `addr`
    /// are *not* redirected to it (no iptables: systemd/Compose installs,
    /// loopback labs). Meshed clients dial this address instead of `addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_addr: Option<SocketAddr>,
    /// The proxy's admin listener (`/metrics`), scraped by the controller's
    /// telemetry role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<SocketAddr>,
    /// The proxy's tap listener (see [`crate::tap`]), opened by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_addr: Option<SocketAddr>,
    /// Protocol of the app's port.
    #[serde(default)]
    pub protocol: ProtocolHint,
    /// Workload labels of the pod (`PIMESH_PROXY_WORKLOAD_LABELS`:
    /// `namespace`, `deployment`, `pod`, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The controller's answer to a [`Registration`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The endpoint is dropped unless renewed within this many seconds.
    /// Proxies renew every third of it.
    pub ttl_secs: u64,
    /// Registry revision after the registration.
    pub revision: u64,
}

/// What the app on an endpoint's port speaks, as far as the registry knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolHint {
    /// Unknown: the client's proxy detects the protocol.
    #[default]
    Unknown,
    /// HTTP/1.x or HTTP/2.
    Http,
    /// Opaque TCP: never detected, forwarded as bytes (Linkerd's opaque ports).
    Opaque,
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The app's address (see [`Registration::addr`]).
    pub addr: SocketAddr,
    /// The peer proxy's inbound address when connections to `addr` are
    /// not redirected (see [`Registration::proxy_addr`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_addr: Option<SocketAddr>,
    /// The identity the endpoint's proxy must present; `None` for an
    /// endpoint outside the mesh (plaintext, no mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Relative weight for load balancing (default [`Endpoint::DEFAULT_WEIGHT`]).
    #[serde(default = "Endpoint::default_weight")]
    pub weight: u32,
    /// What the app speaks.
    #[serde(default)]
    pub protocol: ProtocolHint,
    /// Workload labels: `namespace`, `service`, `deployment`, `pod`, ...;
    /// a client proxy's outbound metrics carry them prefixed `dst_`
    /// (`dst_namespace`, `dst_service`, `dst_deployment`, `dst_pod`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The endpoint proxy's admin listener, if it registered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<SocketAddr>,
    /// The endpoint proxy's tap listener, if it registered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_addr: Option<SocketAddr>,
}

impl Endpoint {
    /// Default load-balancing weight (Linkerd's default endpoint weight).
    pub const DEFAULT_WEIGHT: u32 = 10_000;

    fn default_weight() -> u32 {
        Self::DEFAULT_WEIGHT
    }

    /// The address a meshed client connects to: `proxy_addr` if set, else `addr`.
    pub fn connect_addr(&self) -> SocketAddr {
        self.proxy_addr.unwrap_or(self.addr)
    }
}

/// Resilience settings of a service, set with `pimesh service set`. Every
/// field is optional: the proxy's defaults apply to what is unset.
/// Durations are milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicePolicy {
    /// Whole-request timeout including retries, ms (Linkerd's `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Timeout of each try, ms (`retry.timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Retries per request after the first try (Linkerd's `retry.limit`); 0 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_limit: Option<u32>,
    /// HTTP statuses that are retried, as Linkerd's `retry.http` annotation:
    /// `"5xx"`, `"503"`, `"500-504"`, `"gateway-error"` (502–504).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_http: Option<Vec<String>>,
    /// gRPC status names retried (`"unavailable"`, `"deadline-exceeded"`,
    /// `"internal"`, `"resource-exhausted"`, `"cancelled"`), as Linkerd's
    /// `retry.grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_grpc: Option<Vec<String>>,
    /// Also retry non-idempotent methods (POST, PATCH) — only for routes
    /// known to be safe (RFC 9110 §9.2.2 defines the idempotent ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_non_idempotent: Option<bool>,
    /// Retry budget: retries allowed as a share of requests (Linkerd: 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget_ratio: Option<f64>,
    /// Retry budget: retries per second always allowed (Linkerd: 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget_min_per_sec: Option<u32>,
    /// Circuit breaking: consecutive failures that eject an endpoint
    /// (Linkerd's `failure-accrual` consecutive, default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_accrual_consecutive: Option<u32>,
    /// First probe back after an ejection, ms; doubles up to the max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_accrual_min_backoff_ms: Option<u64>,
    /// Longest wait between probes of an ejected endpoint, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_accrual_max_backoff_ms: Option<u64>,
}

/// gRPC status names by code (grpc/doc/statuscodes.md), in the kebab case
/// Linkerd's `retry.grpc` uses: `GRPC_STATUS_NAMES[14] == "unavailable"`.
/// [`ServicePolicy::retry_grpc`] takes these names (never `ok`).
pub const GRPC_STATUS_NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid-argument",
    "deadline-exceeded",
    "not-found",
    "already-exists",
    "permission-denied",
    "resource-exhausted",
    "failed-precondition",
    "aborted",
    "out-of-range",
    "unimplemented",
    "internal",
    "unavailable",
    "data-loss",
    "unauthenticated",
];

/// The state of one watched destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// Whether the destination is a known service. `false` → the name is
    /// unknown (HTTP: 503, TCP: closed) or the address is not a service's
    /// (forwarded as it is, no mesh).
    pub exists: bool,
    /// Fully-qualified service name, `NAME.NS.svc.<cluster domain>`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Service port.
    #[serde(default)]
    pub port: u16,
    /// The endpoints (may be empty for a known service with none alive).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The service's resilience settings.
    #[serde(default)]
    pub policy: ServicePolicy,
    /// The service's outbound HTTP routes (`HTTPRoute`s whose parentRef is
    /// it); empty: every request goes to the service itself. Absent for
    /// older controllers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<route::HttpRoute>,
}

/// Kind of a [`WatchEvent`] (Kubernetes watch event types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// First state of a known destination on this stream.
    Added,
    /// The endpoint set or the policy changed.
    Modified,
    /// The destination is not (or no longer) a known service; `object.exists` is false.
    Deleted,
    /// Nothing changed up to `revision`; sent on resume and as a keep-alive
    /// (at least every 15 s) so a proxy can tell a dead stream from a quiet one.
    Bookmark,
}

/// One line of a watch stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Registry revision (monotonic, kept across controller restarts).
    pub revision: u64,
    /// The destination's whole state; absent on `BOOKMARK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Resolution>,
}

/// A Kubernetes-style service name: `NAME.NAMESPACE.svc.<cluster domain>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    /// Service name (RFC 1123 label).
    pub name: String,
    /// Namespace (RFC 1123 label).
    pub namespace: String,
}

/// A string that is not a service name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a service name (NAME, NAME.NS, NAME.NS.svc or NAME.NS.svc.<cluster domain>)")]
pub struct InvalidServiceName(pub String);

impl ServiceName {
    /// Parses `web`, `web.ns`, `web.ns.svc` or `web.ns.svc.<cluster_domain>`
    /// (case-insensitive, a trailing dot allowed). A bare name is in
    /// `default_namespace`.
    ///
    /// # Errors
    ///
    /// Anything else (other domains, bad labels, IP addresses).
    pub fn parse(
        s: &str,
        default_namespace: &str,
        cluster_domain: &str,
    ) -> Result<Self, InvalidServiceName> {
        let bad = || InvalidServiceName(s.to_string());
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let mut parts = lower.splitn(3, '.');
        let name = parts.next().filter(|n| is_label(n)).ok_or_else(bad)?;
        let namespace = match parts.next() {
            None => default_namespace,
            Some(ns) if is_label(ns) => ns,
            Some(_) => return Err(bad()),
        };
        match parts.next() {
            None | Some("svc") => {}
            Some(rest) => {
                let domain = rest.strip_prefix("svc.").ok_or_else(bad)?;
                if !domain.eq_ignore_ascii_case(cluster_domain.trim_end_matches('.')) {
                    return Err(bad());
                }
            }
        }
        if !is_label(namespace) {
            return Err(bad());
        }
        Ok(ServiceName {
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// `NAME.NAMESPACE.svc.<cluster_domain>`.
    pub fn fqdn(&self, cluster_domain: &str) -> String {
        format!("{}.{}.svc.{cluster_domain}", self.name, self.namespace)
    }
}

impl fmt::Display for ServiceName {
    /// `NAME.NAMESPACE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// RFC 1123 label (as `identity` checks namespaces).
fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        let web = ServiceName {
            name: "web".into(),
            namespace: "shop".into(),
        };
        for ok in [
            "web",
            "web.shop",
            "WEB.shop.svc",
            "web.shop.svc.cluster.local",
            "web.shop.svc.cluster.local.",
        ] {
            assert_eq!(
                ServiceName::parse(ok, "shop", "cluster.local"),
                Ok(web.clone()),
                "{ok}"
            );
        }
        assert_eq!(web.fqdn("cluster.local"), "web.shop.svc.cluster.local");
        for bad in [
            "",
            "10.0.0.1",
            "web.shop.svc.example.com",
            "web.shop.pod",
            "-web",
            "web..svc",
            "w_b",
        ] {
            assert!(
                ServiceName::parse(bad, "shop", "cluster.local").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn watch_event_json() {
        let ev = WatchEvent {
            kind: EventType::Added,
            revision: 7,
            object: Some(Resolution {
                exists: true,
                service: Some("web.shop.svc.cluster.local".into()),
                port: 80,
                endpoints: vec![Endpoint {
                    addr: "10.0.0.2:80".parse().unwrap(),
                    proxy_addr: None,
                    identity: Some("shop/web".parse().unwrap()),
                    weight: Endpoint::DEFAULT_WEIGHT,
                    protocol: ProtocolHint::Http,
                    labels: [("pod".to_string(), "web-1".to_string())].into(),
                    admin_addr: None,
                    tap_addr: None,
                }],
                policy: ServicePolicy {
                    timeout_ms: Some(2000),
                    ..Default::default()
                },
                routes: vec![route::HttpRoute {
                    name: "shop/split".into(),
                    rules: vec![route::RouteRule {
                        matches: vec![route::RouteMatch {
                            path: Some(route::PathMatch::PathPrefix("/api".into())),
                            ..Default::default()
                        }],
                        backends: vec![route::Backend {
                            service: "web-v2.shop".into(),
                            port: Some(80),
                            weight: 10,
                        }],
                        timeout_ms: Some(200),
                        ..Default::default()
                    }],
                }],
            }),
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert!(
            line.contains(r#""path":{"type":"PathPrefix","value":"/api"}"#),
            "{line}"
        );
        // Without routes the field is left out, as older peers send it.
        let plain = Resolution {
            exists: true,
            ..Default::default()
        };
        let plain_line = serde_json::to_string(&plain).unwrap();
        assert!(!plain_line.contains("routes"), "{plain_line}");
        assert_eq!(
            serde_json::from_str::<Resolution>(&plain_line).unwrap(),
            plain
        );
        assert!(
            line.starts_with(r#"{"type":"ADDED","revision":7,"object":{"exists":true"#),
            "{line}"
        );
        assert!(line.contains(r#""addr":"10.0.0.2:80""#), "{line}");
        assert_eq!(serde_json::from_str::<WatchEvent>(&line).unwrap(), ev);
        let bookmark: WatchEvent =
            serde_json::from_str(r#"{"type":"BOOKMARK","revision":9}"#).unwrap();
        assert_eq!(bookmark.object, None);
        // Defaults for what a minimal endpoint leaves out.
        let ep: Endpoint = serde_json::from_str(r#"{"addr":"127.0.0.1:9"}"#).unwrap();
        assert_eq!(ep.weight, Endpoint::DEFAULT_WEIGHT);
        assert_eq!(ep.connect_addr(), "127.0.0.1:9".parse().unwrap());
    }
}
