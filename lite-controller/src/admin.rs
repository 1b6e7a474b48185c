//! The operator listener (8085, plain HTTP/1.1): `GET /metrics`, `/ready`,
//! `/live`, the trust-anchor bundle, CA status and issued serials, join
//! tokens, and trust-anchor rotation. The `pimesh` CLI talks to it.
//!
//! Interim authorization model: every mutating request (`POST`, `DELETE`:
//! creating or revoking tokens, rotating the CA) is only accepted from
//! loopback clients (403 otherwise), so only someone on the controller's
//! host (or in its pod) can change anything. Reads are open. mTLS client
//! authentication for operators replaces this later.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/identity/trust-anchors` | the bundle, PEM |
//! | `GET /v1/identity/ca` | [`CaStatus`](crate::identity::CaStatus) |
//! | `GET /v1/identity/certificates` | [`Certificates`]: every issued-serial record |
//! | `POST /v1/identity/rotate` | [`RotateRequest`] → `CaStatus` (409 while a rotation runs) |
//! | `POST /v1/identity/rotate/finish` | [`FinishRequest`] → `CaStatus` (409 while refused) |
//! | `POST /v1/tokens` | [`CreateToken`] → 201 [`CreatedToken`](crate::token::CreatedToken) |
//! | `GET /v1/tokens` | `[TokenInfo]` |
//! | `DELETE /v1/tokens/{id}` | revokes → `TokenInfo` (404 unknown) |
//! | `/v1/services...`, `/v1/endpoints` | the service registry, see `services` |
//! | `GET /v1/tap?resource=KIND/NAME&namespace=NS&...` | live tap stream (NDJSON), loopback only, see `crate::tap` |
//! | `GET /v1/stat`, `/v1/edges`, `/v1/history`, `/v1/targets`, `/dashboard` | telemetry ([`crate::telemetry::api`]) |

pub mod policies;
mod reply;
pub mod services;

use crate::identity::{now_unix, Authority, IssuedCert};
use crate::kube::Kube;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::rest::{self, Body};
use crate::tap;
use crate::telemetry::Telemetry;
use crate::token::{CreateToken, Status};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use reply::blocking;
pub use reply::ApiFailure;

use pimesh_api::identity::TRUST_ANCHORS_PATH;
use pimesh_api::tap::OPERATOR_TAP_PATH;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the operator port uses; `server` builds it.
pub struct Ctx {
    /// The CA: status, issued serials, rotation, join tokens, the bundle.
    pub authority: Arc<Authority>,
    /// The service registry (`/v1/services`, `/v1/endpoints`, metrics).
    pub registry: Arc<Registry>,
    /// Every series, encoded on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled on SIGTERM/SIGINT: the listener stops, `/ready` fails.
    pub shutdown: CancellationToken,
    /// The telemetry role (`/v1/stat`, `/v1/edges`, history, dashboard,
    /// its series on `/metrics`).
    pub telemetry: Arc<Telemetry>,
    /// Kubernetes mode (readiness; no join tokens); `None` standalone.
    pub kube: Option<Arc<Kube>>,
    /// The tap relay behind `GET /v1/tap`.
    pub tap: Arc<tap::Ctx>,
    /// Standalone mode's policy resources (`pimesh apply -f`).
    pub policies: Arc<crate::policy::stored::Policies>,
    /// The resources the streams serve (`pimesh policy ls`): the same
    /// store standalone, the watched CRDs in Kubernetes mode.
    pub policy_snapshots: crate::policy::snapshot::Snapshots,
}

/// `POST /v1/identity/rotate` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateRequest {
    /// Seconds until the new issuer signs, so that every proxy fetches the
    /// new bundle first; default [`DEFAULT_ACTIVATE_AFTER_SECS`].
    #[serde(default)]
    pub activate_after_seconds: Option<u64>,
}

/// Default wait between a rotation's start and the new issuer signing.
pub const DEFAULT_ACTIVATE_AFTER_SECS: u64 = 120;

/// `POST /v1/identity/rotate/finish` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishRequest {
    /// Finish even before activation or while old leaves are valid.
    #[serde(default)]
    pub force: bool,
}

/// `GET /v1/identity/certificates` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificates {
    /// How many records.
    pub count: usize,
    /// The records, in serial order.
    pub certificates: Vec<IssuedCert>,
}

const TOKENS_PATH: &str = "/v1/tokens";
const CA_PATH: &str = "/v1/identity/ca";
const CERTIFICATES_PATH: &str = "/v1/identity/certificates";
const ROTATE_PATH: &str = "/v1/identity/rotate";
const FINISH_PATH: &str = "/v1/identity/rotate/finish";

/// `Content-Type` of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves operators until `ctx.shutdown`; open connections finish their
/// request (HTTP/1 graceful shutdown).
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            let shutdown = ctx.shutdown.clone();
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move {
                    Ok::<_, Infallible>(if req.uri().path() == OPERATOR_TAP_PATH {
                        tap(&ctx, peer, &req)
                    } else {
                        handle(&ctx, peer, req).await.map(Either::Left)
                    })
                }
            });
            let result = rest::serve_http1(stream, service, &shutdown).await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin connection failed");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// `GET /v1/tap`: the tap relay, to loopback clients only (request
/// metadata is sensitive; the interim model has no operator identities).
fn tap(ctx: &Ctx, peer: SocketAddr, req: &Request<Incoming>) -> tap::TapResponse {
    if req.method() != Method::GET {
        return rest::method_not_allowed().map(Either::Left);
    }
    if !peer.ip().to_canonical().is_loopback() {
        return rest::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "tap is only open to loopback clients (interim authorization model)",
        )
        .map(Either::Left);
    }
    tap::relay(&ctx.tap, req.uri().query().unwrap_or(""))
}

async fn handle(ctx: &Arc<Ctx>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if !allowed(&method, peer) {
        tracing::warn!(%peer, %method, path, "mutating request from a non-loopback client refused");
        return rest::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "changes are only accepted from loopback clients (interim authorization model)",
        );
    }
    if let Some(rsp) =
        crate::telemetry::api::handle(&ctx.telemetry, &method, &path, req.uri().query()).await
    {
        return rsp;
    }
    if services::owns(&path) {
        return services::handle(&ctx.registry, req).await;
    }
    if policies::owns(&path) {
        return policies::handle(
            &ctx.policies,
            &ctx.policy_snapshots,
            &ctx.registry,
            ctx.kube.is_some(),
            req,
        )
        .await;
    }
    let token_id = path.strip_prefix("/v1/tokens/").map(str::to_string);
    match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => metrics(ctx).await,
        (&Method::GET, "/live") => rest::text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") if ctx.shutdown.is_cancelled() => {
            rest::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        }
        (&Method::GET, "/ready") => match &ctx.kube {
            Some(k) if !k.status.ready() => rest::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}\n", k.status.reason()),
            ),
            _ => rest::text(StatusCode::OK, "ready\n"),
        },
        (&Method::POST, TOKENS_PATH) if ctx.kube.is_some() => rest::error(
            StatusCode::CONFLICT,
            "kubernetes_mode",
            "join tokens are for standalone mode; in Kubernetes mode proxies certify with \
             ServiceAccount tokens (TokenReview)",
        ),
        (&Method::GET, TRUST_ANCHORS_PATH) => rest::pem(ctx.authority.trust_anchors_pem()),
        (&Method::GET, CA_PATH) => blocking(ctx, |c, now| c.authority.status(now)).await,
        (&Method::GET, CERTIFICATES_PATH) => {
            blocking(ctx, |c, _| {
                c.authority.certificates().map(|certificates| Certificates {
                    count: certificates.len(),
                    certificates,
                })
            })
            .await
        }
        (&Method::POST, ROTATE_PATH) => match rest::read_json::<RotateRequest, _>(req).await {
            Ok(r) => {
                let after = r
                    .activate_after_seconds
                    .unwrap_or(DEFAULT_ACTIVATE_AFTER_SECS);
                blocking(ctx, move |c, now| {
                    c.authority.rotate(Duration::from_secs(after), now)
                })
                .await
            }
            Err(e) => e.response(),
        },
        (&Method::POST, FINISH_PATH) => match rest::read_json::<FinishRequest, _>(req).await {
            Ok(r) => blocking(ctx, move |c, now| c.authority.finish_rotation(r.force, now)).await,
            Err(e) => e.response(),
        },
        (&Method::POST, TOKENS_PATH) => match rest::read_json::<CreateToken, _>(req).await {
            Ok(r) => {
                let rsp = blocking(ctx, move |c, now| c.authority.tokens().create(&r, now)).await;
                if rsp.status() == StatusCode::OK {
                    let (mut parts, body) = rsp.into_parts();
                    parts.status = StatusCode::CREATED;
                    return Response::from_parts(parts, body);
                }
                rsp
            }
            Err(e) => e.response(),
        },
        (&Method::GET, TOKENS_PATH) => blocking(ctx, |c, now| c.authority.tokens().list(now)).await,
        (&Method::DELETE, _) if token_id.is_some() => {
            let id = token_id.unwrap_or_default();
            blocking(ctx, move |c, now| c.authority.tokens().revoke(&id, now)).await
        }
        (_, "/metrics" | "/live" | "/ready" | TRUST_ANCHORS_PATH | CA_PATH | CERTIFICATES_PATH)
        | (_, ROTATE_PATH | FINISH_PATH | TOKENS_PATH) => rest::method_not_allowed(),
        (_, _) if token_id.is_some() => rest::method_not_allowed(),
        _ => rest::not_found(),
    }
}

/// The interim authorization rule: reads from anywhere, changes
/// (anything but `GET`/`HEAD`) only from loopback (IPv4, IPv6, or
/// IPv4-mapped IPv6).
fn allowed(method: &Method, peer: SocketAddr) -> bool {
    matches!(*method, Method::GET | Method::HEAD) || peer.ip().to_canonical().is_loopback()
}

/// Sets the gauges that mirror stored state, then encodes every series.
async fn metrics(ctx: &Arc<Ctx>) -> Response<Body> {
    let c = ctx.clone();
    let text = tokio::task::spawn_blocking(move || {
        let now = now_unix();
        if let Some(k) = &c.kube {
            c.metrics.kube.ready.set(i64::from(k.status.ready()));
        }
        if let Ok(st) = c.authority.status(now) {
            c.metrics.issuer_expiry.set(st.issuer.not_after_unix as i64);
            let first = st.anchors.iter().map(|a| a.not_after_unix).min();
            c.metrics.anchor_expiry.set(first.unwrap_or(0) as i64);
            c.metrics.issued_records.set(st.certificates as i64);
        }
        if let Ok(counts) = c.authority.tokens().counts(now) {
            for (status, n) in counts {
                c.metrics.set_tokens(Status::as_str(status), n);
            }
        }
        c.metrics.discovery.observe(&c.registry);
        let mut text = c.metrics.encode();
        crate::telemetry::metrics::strip_eof(&mut text);
        text.push_str(&c.telemetry.encode_metrics());
        text.push_str("# EOF\n");
        text
    })
    .await
    .unwrap_or_default();
    let mut rsp = rest::text(StatusCode::OK, text);
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(OPENMETRICS),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_only_from_loopback() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        for peer in [
            "127.0.0.1:1",
            "127.9.9.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            for m in [Method::POST, Method::DELETE, Method::PUT, Method::GET] {
                assert!(allowed(&m, at(peer)), "{m} from {peer}");
            }
        }
        for peer in [
            "10.0.0.5:1",
            "[fd00::5]:1",
            "[::ffff:10.0.0.5]:1",
            "0.0.0.0:1",
        ] {
            assert!(allowed(&Method::GET, at(peer)), "GET from {peer}");
            for m in [Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
                assert!(!allowed(&m, at(peer)), "{m} from {peer}");
            }
        }
    }
}
