//! The proxy-facing listener (8086): HTTP/2 over TLS 1.3 (ALPN `h2`),
//! serving the controller's own certificate for `CONTROLLER_IDENTITY`
//! (swapped in place on renewal, see `cert_slot`). Client certificates
//! are optional at the TLS level (a proxy has none before certifying) and
//! required per route (see `client_auth`).
//!
//! `POST /v1/identity/certify` (`CertifyRequest` → `CertifyResponse`; 400
//! bad JSON or CSR, 401 bad token, 403 identity not allowed, 413 body too
//! large; Kubernetes mode: the token is a ServiceAccount token checked by a
//! TokenReview, 503 `unavailable` when that fails), `GET /v1/identity/trust-anchors` (PEM), `PUT`/`DELETE`
//! `/v1/discovery/endpoints` (join token) and `GET /v1/discovery/watch`
//! (client certificate), see `discovery`; `GET /v1/policy/inbound` (client
//! certificate), the proxy's inbound policy, see `policy`. Errors are
//! `ApiError` JSON.

pub mod client_auth;
pub mod discovery;
pub mod policy;

use crate::cert_slot::CertSlot;
use crate::identity::{now_unix, Authority};
use crate::kube::Kube;
use crate::metrics::Metrics;
use crate::registry::watch::WatchBody;
use crate::rest::{self, Body};
use client_auth::ClientAuth;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pimesh_api::discovery::{ENDPOINTS_PATH, WATCH_PATH};
use pimesh_api::identity::{Identity, ALPN_H2, CERTIFY_PATH, TRUST_ANCHORS_PATH};
use pimesh_api::policy::inbound::INBOUND_POLICY_PATH;
use rustls::ServerConfig;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Open proxy connections at most; more are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Concurrent HTTP/2 streams per connection (a proxy keeps one watch per
/// destination it talks to open on one connection).
const MAX_STREAMS: u32 = 128;
/// Time for a client to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection older than this is asked to go away (GOAWAY, graceful), so
/// that idle or forgotten clients cannot hold connection slots forever;
/// its watch streams end cleanly first and proxies resume them, with their
/// last revision, on a new connection.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// HTTP/2 PING interval and timeout that detect dead peers.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Time open connections get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the proxy port uses; `server` builds it.
pub struct Ctx {
    /// The CA: certifies proxies, serves the trust anchors, names the
    /// trust domain of client certificates.
    pub authority: Arc<Authority>,
    /// Every series (certify outcomes and durations, TokenReviews).
    pub metrics: Arc<Metrics>,
    /// Cancelled on SIGTERM/SIGINT: the listener stops, connections drain.
    pub shutdown: CancellationToken,
    /// Kubernetes mode: certify reviews ServiceAccount tokens with it;
    /// `None` standalone.
    pub kube: Option<Arc<Kube>>,
    /// What the discovery API (registration, watches) uses.
    pub discovery: Arc<discovery::Ctx>,
    /// The policy resources whose changes the inbound-policy streams
    /// follow: standalone mode's sled store, or Kubernetes mode's watches.
    pub policies: crate::policy::snapshot::Snapshots,
}

/// Every response body: a complete one, or a watch stream.
pub type ProxyBody = Either<Body, WatchBody>;

/// TLS 1.3 only (ring provider), ALPN `h2`, certificates from `slot`,
/// optional client certificates verified by `client_auth`.
///
/// # Errors
///
/// [`rustls::Error`] when the ring provider does not offer TLS 1.3.
pub fn tls_config(
    slot: Arc<CertSlot>,
    client_auth: Arc<ClientAuth>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_auth)
        .with_cert_resolver(slot);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts proxies until `ctx.shutdown`, then lets open connections finish
/// their streams for up to [`SHUTDOWN_GRACE`].
pub async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, ctx: Arc<Ctx>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "proxy port accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing");
            continue;
        };
        let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let peer_id = client_auth::peer_identity(
                tls.get_ref().1.peer_certificates(),
                ctx.authority.trust_domain(),
            );
            // Ends this connection's watch streams (shutdown, or age).
            let stop = ctx.shutdown.child_token();
            let conn_stop = stop.clone();
            let service = hyper::service::service_fn(move |req| {
                let (ctx, peer_id, stop) = (ctx.clone(), peer_id.clone(), stop.clone());
                async move { Ok::<_, Infallible>(handle(&ctx, req, peer_id.as_ref(), stop).await) }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS)
                .initial_stream_window_size(64 * 1024)
                .initial_connection_window_size(256 * 1024)
                .max_header_list_size(16 * 1024)
                .keep_alive_interval(KEEP_ALIVE)
                .keep_alive_timeout(KEEP_ALIVE)
                .serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async {
                    tokio::select! {
                        _ = conn_stop.cancelled() => {}
                        _ = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
                    }
                } => {
                    conn_stop.cancel();
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "proxy connection failed");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Routes one request; `peer` is the client certificate's identity.
async fn handle(
    ctx: &Arc<Ctx>,
    req: Request<Incoming>,
    peer: Option<&Identity>,
    stop: CancellationToken,
) -> Response<ProxyBody> {
    let left = |r: Response<Body>| r.map(Either::Left);
    match (req.method(), req.uri().path()) {
        (&Method::POST, CERTIFY_PATH) => left(certify(ctx, req).await),
        (&Method::GET, TRUST_ANCHORS_PATH) => left(rest::pem(ctx.authority.trust_anchors_pem())),
        (&Method::PUT, ENDPOINTS_PATH) => discovery::register(&ctx.discovery, req, false).await,
        (&Method::DELETE, ENDPOINTS_PATH) => discovery::register(&ctx.discovery, req, true).await,
        (&Method::GET, WATCH_PATH) => discovery::watch(&ctx.discovery, &req, peer, stop),
        (&Method::GET, INBOUND_POLICY_PATH) => policy::inbound(
            &ctx.policies,
            ctx.authority.trust_domain(),
            &ctx.discovery.watch_slots,
            &req,
            peer,
            stop,
        ),
        (
            _,
            CERTIFY_PATH | TRUST_ANCHORS_PATH | ENDPOINTS_PATH | WATCH_PATH | INBOUND_POLICY_PATH,
        ) => left(rest::method_not_allowed()),
        _ => left(rest::not_found()),
    }
}

/// Parses the request, then checks, signs and records on the blocking pool
/// (signing and the flushed write block); every outcome is counted.
async fn certify(ctx: &Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let req = match rest::read_json(req).await {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.refused(e.code());
            return e.response();
        }
    };
    // Kubernetes mode: the ServiceAccount token is reviewed by the API
    // server (async) before the signing goes to the blocking pool.
    let kubernetes = ctx.kube.is_some();
    if let Some(kube) = &ctx.kube {
        let req: &pimesh_api::identity::CertifyRequest = &req;
        if let Err(e) = crate::kube::identity::review(
            &kube.client,
            &ctx.metrics.kube,
            &req.token,
            &req.identity,
        )
        .await
        {
            ctx.metrics.refused(e.code());
            ctx.metrics
                .certify_duration
                .observe(start.elapsed().as_secs_f64());
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let message = crate::error_chain(&e);
            if status.is_server_error() {
                tracing::warn!(identity = %req.identity, error = %message, "certify: TokenReview failed");
            } else {
                tracing::info!(identity = %req.identity, reason = e.code(), error = %message, "certify refused");
            }
            return rest::error(status, e.code(), message);
        }
    }
    let authority = ctx.authority.clone();
    let result = tokio::task::spawn_blocking(move || {
        if kubernetes {
            authority.issue(&req, now_unix())
        } else {
            authority.certify(&req, now_unix())
        }
    })
    .await;
    ctx.metrics
        .certify_duration
        .observe(start.elapsed().as_secs_f64());
    match result {
        Ok(Ok(rsp)) => {
            ctx.metrics.certificates_issued.inc();
            rest::json(StatusCode::OK, &rsp)
        }
        Ok(Err(e)) => {
            ctx.metrics.refused(e.code());
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            if status.is_server_error() {
                tracing::error!(error = %crate::error_chain(&e), "certify failed");
                rest::error(
                    status,
                    e.code(),
                    "the controller cannot issue now; see its log",
                )
            } else {
                tracing::info!(reason = e.code(), "certify refused");
                rest::error(status, e.code(), e.to_string())
            }
        }
        Err(e) => {
            ctx.metrics.refused("internal");
            tracing::error!(error = %e, "certify task failed");
            rest::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}
