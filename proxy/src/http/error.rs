//! Why a request got a response from the proxy instead of its target,
//! and that response: the status, a `pimesh-proxy-error` header, and for
//! gRPC clients a trailers-only answer.

use super::body::{Inner, ResponseBody};
use crate::metrics::RequestMetrics;
use bytes::Bytes;
use http::{Response, StatusCode};
use std::net::SocketAddr;

/// Why a request got a response from the proxy instead of its target.
/// Each variant is also the `error` label of `response_total`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Explicit proxy mode and the request names no usable target.
    #[error("request names no target authority")]
    NoTarget,
    /// The request targets the proxy's own outbound listener.
    #[error("request targets the proxy itself")]
    Loop,
    /// The request head is larger than `PIMESH_PROXY_MAX_HEADER_BYTES`.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The target's name could not be resolved.
    #[error("cannot resolve target {0}")]
    Resolve(String, #[source] std::io::Error),
    /// No connection to the target within the connect timeout.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// The target refused or reset the connection attempt.
    #[error("cannot connect to {0}")]
    Connect(SocketAddr, #[source] std::io::Error),
    /// The target failed before sending a response head.
    #[error("target {0} failed")]
    Upstream(SocketAddr, #[source] hyper::Error),
    /// The destination needs mTLS and this proxy has no certificate yet.
    #[error("no mesh identity yet (waiting for a certificate from the controller)")]
    NoIdentity,
    /// The mTLS handshake with the destination's proxy failed (e.g. it
    /// presented another identity, or a certificate the anchors do not trust).
    #[error("mTLS with {0} failed")]
    Tls(SocketAddr, #[source] std::io::Error),
    /// The destination is a service name the controller does not know.
    #[error("unknown service {0}")]
    UnknownService(String),
    /// The controller could not be asked about a service name (unreachable,
    /// or too many destinations watched).
    #[error("cannot resolve service {0}: discovery unavailable")]
    DiscoveryUnavailable(String),
    /// The service has no endpoints.
    #[error("service {0} has no endpoints")]
    NoEndpoints(String),
    /// Every endpoint of the service is ejected by circuit breaking.
    #[error("every endpoint of service {0} is failing (circuit breaking)")]
    AllEjected(String),
    /// The service has HTTP routes and none matches the request (as
    /// linkerd2-proxy: 404).
    #[error("no route of service {0} matches the request")]
    NoRoute(String),
    /// The matching rule of HTTPRoute `{0}` has only backends of weight 0
    /// (Gateway API: 500).
    #[error("HTTPRoute {0}: every backend of the rule has weight 0")]
    NoBackend(String),
    /// The request (or its last try) took longer than its timeout.
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Inbound: the port's Server has routes and none matches the request
    /// (`server NAME`). As linkerd2-proxy's inbound `HttpRouteNotFound`,
    /// which its `ServerRescue` answers with
    /// `SyntheticHttpResponse::not_found`: 404, gRPC `NOT_FOUND`
    /// (`linkerd/app/inbound/src/http/server.rs`).
    #[error("no route of the {0} matches the request")]
    RouteNotFound(String),
    /// Inbound: the port's policy (`server NAME` or `default policy
    /// NAME`) does not admit this client.
    #[error("unauthorized request: the {0} does not admit this client")]
    Unauthorized(String),
    /// Inbound: the port's local rate limit refused the request (its
    /// `HTTPLocalRateLimitPolicy`'s name and the limit).
    #[error("too many requests: {0}")]
    RateLimited(String, #[source] crate::ratelimit::Limited),
}

impl Error {
    /// The `error` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Error::NoTarget => "no_target",
            Error::Loop => "loop",
            Error::HeadersTooLarge => "header_too_large",
            Error::Resolve(..) => "resolve",
            Error::ConnectTimeout(_) => "connect_timeout",
            Error::Connect(..) => "connect",
            Error::Upstream(..) => "upstream",
            Error::NoIdentity => "no_identity",
            Error::Tls(..) => "tls",
            Error::UnknownService(_) => "unknown_service",
            Error::DiscoveryUnavailable(_) => "discovery_unavailable",
            Error::NoEndpoints(_) => "no_endpoints",
            Error::AllEjected(_) => "circuit_breaker",
            Error::Timeout(_) => "timeout",
            Error::NoRoute(_) => "no_route",
            Error::NoBackend(_) => "no_backend",
            Error::RouteNotFound(_) => "route_not_found",
            Error::Unauthorized(_) => "unauthorized",
            Error::RateLimited(..) => "rate_limited",
        }
    }

    /// The gRPC status a gRPC client gets: `UNAVAILABLE` (14) when the
    /// target cannot be reached, `RESOURCE_EXHAUSTED` (8) for oversized
    /// headers, `INTERNAL` (13) for requests the proxy cannot route,
    /// `DEADLINE_EXCEEDED` (4) for a timeout, `PERMISSION_DENIED` (7) for
    /// a client the policy refuses (as linkerd2-proxy), `RESOURCE_EXHAUSTED`
    /// (8) for a request over a rate limit (as linkerd2-proxy's
    /// `SyntheticHttpResponse`); `UNIMPLEMENTED` (12) when no route matches
    /// (HTTP 404's gRPC status, grpc `doc/http-grpc-status-mapping.md`),
    /// `INTERNAL` (13) for a rule without a backend, `NOT_FOUND` (5) when
    /// no inbound route matches (as linkerd2-proxy's inbound).
    pub fn grpc_status(&self) -> u32 {
        match self {
            Error::NoTarget | Error::Loop => 13,
            Error::HeadersTooLarge | Error::RateLimited(..) => 8,
            Error::Resolve(..)
            | Error::ConnectTimeout(_)
            | Error::Connect(..)
            | Error::Upstream(..)
            | Error::NoIdentity
            | Error::Tls(..)
            | Error::UnknownService(_)
            | Error::DiscoveryUnavailable(_)
            | Error::NoEndpoints(_)
            | Error::AllEjected(_) => 14,
            Error::Timeout(_) => 4,
            Error::NoRoute(_) => 12,
            Error::RouteNotFound(_) => 5,
            Error::NoBackend(_) => 13,
            Error::Unauthorized(_) => 7,
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoTarget | Error::Loop => StatusCode::BAD_REQUEST,
            Error::NoRoute(_) | Error::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Error::NoBackend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Unauthorized(_) => StatusCode::FORBIDDEN,
            Error::RateLimited(..) => StatusCode::TOO_MANY_REQUESTS,
            Error::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::ConnectTimeout(_) | Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::NoIdentity
            | Error::UnknownService(_)
            | Error::DiscoveryUnavailable(_)
            | Error::NoEndpoints(_)
            | Error::AllEjected(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Resolve(..) | Error::Connect(..) | Error::Upstream(..) | Error::Tls(..) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }
}

/// A response made by the proxy itself: the error's status, its message
/// as text, and a `pimesh-proxy-error` header (as Linkerd's
/// `l5d-proxy-error`). gRPC clients get a trailers-only response (HTTP 200,
/// `grpc-status`, `grpc-message`) as the gRPC over HTTP/2 protocol asks of
/// proxies, and as linkerd2-proxy answers.
pub(super) fn error_response(e: &Error, grpc: bool) -> Response<ResponseBody> {
    let msg = crate::error_chain(e);
    let encoded = super::headers::percent_encoded(&msg);
    let mut rsp = if grpc {
        let mut rsp = Response::new(ResponseBody::local(Bytes::new()));
        let h = rsp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", http::HeaderValue::from(e.grpc_status()));
        if let Some(v) = &encoded {
            h.insert(&super::headers::GRPC_MESSAGE, v.clone());
        }
        rsp
    } else {
        let mut rsp = Response::new(ResponseBody::local(Bytes::from(format!(
            "pimesh-proxy: {msg}\n"
        ))));
        *rsp.status_mut() = e.status();
        rsp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        rsp
    };
    if let Some(v) = encoded {
        rsp.headers_mut().insert("pimesh-proxy-error", v);
    }
    rsp
}

/// The client's response: the target's, or the proxy's own for an error;
/// the exchange is recorded in `metrics`.
pub fn respond(
    metrics: RequestMetrics,
    is_grpc: bool,
    result: Result<Response<Inner>, Error>,
) -> Response<ResponseBody> {
    let rsp = match result {
        Ok(rsp) => rsp,
        Err(e) => {
            tracing::debug!(error = %crate::error_chain(&e), "request failed");
            let rsp = error_response(&e, is_grpc);
            let grpc_status = is_grpc.then(|| e.grpc_status());
            metrics.end(Some(rsp.status().as_u16()), grpc_status, e.label());
            return rsp;
        }
    };
    let (parts, body) = rsp.into_parts();
    let body = ResponseBody::new(body, metrics, parts.status.as_u16(), &parts.headers);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn outbound_errors_answer_as_linkerd_does() {
        let timeout = Error::Timeout(Duration::from_millis(300));
        let rsp = error_response(&timeout, false);
        assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timeout.label(), "timeout");
        // gRPC: trailers-only DEADLINE_EXCEEDED.
        let rsp = error_response(&timeout, true);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["grpc-status"], "4");
        assert!(rsp.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .contains("timed out"));
        let unknown = Error::UnknownService("web.shop:80".into());
        let rsp = error_response(&unknown, true);
        assert_eq!(rsp.headers()["grpc-status"], "14");
        let rsp = error_response(&unknown, false);
        assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(rsp.headers()["pimesh-proxy-error"]
            .to_str()
            .unwrap()
            .contains("unknown service web.shop:80"));
        assert_eq!(
            error_response(&Error::AllEjected("web.shop:80".into()), false).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
