//! Tap: a live stream of request metadata (no bodies) from the proxies,
//! as `linkerd viz tap`.
//!
//! Each proxy serves [`TAP_PATH`] on its tap listener (default port
//! [`DEFAULT_TAP_PORT`], as linkerd2-proxy's), HTTP/2 over mTLS, to one
//! client identity only: the controller's. The controller relays the
//! streams of the proxies a `pimesh tap deploy/web` selects on its operator
//! port ([`OPERATOR_TAP_PATH`]). Both are newline-delimited JSON streams of
//! [`TapEvent`]s.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default port of a proxy's tap listener (linkerd2-proxy's 4190).
pub const DEFAULT_TAP_PORT: u16 = 4190;

/// `GET ?max_rps=N[&method=M][&authority=A][&path=PREFIX]` on a proxy's tap
/// listener: an `application/x-ndjson` stream of [`TapEvent`]s for the
/// requests that end while it is open. `max_rps` (default
/// [`DEFAULT_TAP_MAX_RPS`], at most [`MAX_TAP_MAX_RPS`]) bounds the events
/// per second; requests beyond it are sampled out and counted in the next
/// event's `skipped`. Errors: 403 for any client but the controller's
/// identity, 400 for a bad query, 503 when too many taps are open.
pub const TAP_PATH: &str = "/v1/tap";

/// `GET ?resource=deploy/NAME|pod/NAME|svc/NAME|ns/NAME[&namespace=NS]
/// [&max_rps=N][&method=..][&authority=..][&path=..]` on the controller's
/// operator port: the selected proxies' tap streams merged, each event
/// labelled with the proxy's workload (`labels`).
pub const OPERATOR_TAP_PATH: &str = "/v1/tap";

/// Events per second a tap sends unless asked otherwise.
pub const DEFAULT_TAP_MAX_RPS: u32 = 100;

/// Largest `max_rps` a proxy accepts.
pub const MAX_TAP_MAX_RPS: u32 = 1000;

/// The metadata of one request/response exchange, recorded when the
/// response ends (or fails).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapEvent {
    /// When the request arrived, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// `inbound` or `outbound` (the proxy's side of the exchange).
    pub direction: String,
    /// The `ip:port` the request was for (the metrics' `target_addr`).
    pub destination: String,
    /// Whether the hop was mTLS.
    pub tls: bool,
    /// The client's identity name (as the metrics' `client_id`,
    /// `SA.NS.serviceaccount.identity.pimesh.TD`) on meshed inbound requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The server's identity name (as `server_id`) on meshed outbound requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// Request method.
    pub method: String,
    /// `:authority` / `Host`.
    pub authority: String,
    /// Request path (no query string: queries may carry secrets).
    pub path: String,
    /// Response status; absent when no response head was produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `grpc-status` of a gRPC response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// From request arrival to the end of the response, microseconds.
    pub latency_us: u64,
    /// The proxy's error label when the exchange failed (`tls`, `timeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Requests sampled out (over `max_rps` or dropped by a slow reader)
    /// since the previous event of this stream.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// The tapped proxy's workload labels (`namespace`, `deployment`,
    /// `pod`); filled in by the controller's relay.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_event_json() {
        let ev = TapEvent {
            ts_ms: 1,
            direction: "inbound".into(),
            destination: "127.0.0.1:80".into(),
            tls: true,
            client_id: Some("web.shop.serviceaccount.identity.pimesh.cluster.local".into()),
            server_id: None,
            method: "GET".into(),
            authority: "emoji:8080".into(),
            path: "/list".into(),
            status: Some(200),
            grpc_status: None,
            latency_us: 1500,
            error: None,
            skipped: 0,
            labels: BTreeMap::new(),
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert!(
            !line.contains("skipped") && !line.contains("server_id"),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<TapEvent>(&line).unwrap(), ev);
    }
}
