//! The admin listener (4191), as linkerd2-proxy's: `GET /metrics`
//! (Prometheus/OpenMetrics text), `GET /ready`, `GET /live`,
//! `POST /shutdown` (loopback clients only: drain and exit, for Jobs), and
//! `GET`/`PUT /proxy-log-level` (the log filter, `RUST_LOG` syntax; `PUT`
//! from loopback only). It runs beside the data plane and never blocks it.

use crate::metrics::Metrics;
use crate::tls::CredentialStore;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the log filter at run time.
pub type LogHandle = reload::Handle<EnvFilter, Registry>;

/// Longest `PUT /proxy-log-level` body, in bytes.
const MAX_LOG_LEVEL_BYTES: usize = 4096;

/// `Content-Type` of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin server uses.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Encoded at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled by `POST /shutdown`; once cancelled `/ready` fails.
    pub shutdown: CancellationToken,
    /// The certificate `/ready` waits for; `None` without an identity.
    pub creds: Option<Arc<CredentialStore>>,
}

impl Admin {
    /// Whether the proxy can serve: it has a certificate if it needs one.
    pub fn is_ready(&self) -> bool {
        self.creds.as_ref().is_none_or(|c| c.get().is_some())
    }
}

/// Serves admin requests until the task is aborted.
pub async fn serve(listener: TcpListener, ctx: Arc<Admin>, log: LogHandle) {
    let log = Arc::new(log);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (ctx, log) = (ctx.clone(), log.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (ctx, log) = (ctx.clone(), log.clone());
                async move { Ok::<_, Infallible>(handle(&ctx, &log, peer, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%e, "admin connection failed");
            }
        });
    }
}

async fn handle(
    ctx: &Admin,
    log: &LogHandle,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let loopback = peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut rsp = text(StatusCode::OK, ctx.metrics.encode());
            rsp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(OPENMETRICS),
            );
            rsp
        }
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") if ctx.shutdown.is_cancelled() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        }
        (&Method::GET, "/ready") if !ctx.is_ready() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for a certificate\n",
        ),
        (&Method::GET, "/ready") => text(StatusCode::OK, "ready\n"),
        (&Method::POST, "/shutdown") if loopback => {
            tracing::info!(%peer, "shutdown requested on the admin port");
            ctx.shutdown.cancel();
            text(StatusCode::OK, "shutdown\n")
        }
        (&Method::POST, "/shutdown") => text(
            StatusCode::FORBIDDEN,
            "shutdown is only allowed from loopback\n",
        ),
        (&Method::GET, "/proxy-log-level") => {
            let current = log.with_current(|f| f.to_string()).unwrap_or_default();
            text(StatusCode::OK, format!("{current}\n"))
        }
        (&Method::PUT, "/proxy-log-level") if loopback => set_log_level(log, req).await,
        (&Method::PUT, "/proxy-log-level") => text(
            StatusCode::FORBIDDEN,
            "changing the log level is only allowed from loopback\n",
        ),
        (_, "/metrics" | "/live" | "/ready" | "/shutdown" | "/proxy-log-level") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn set_log_level(log: &LogHandle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_LOG_LEVEL_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "log filter too long\n"),
    };
    let Ok(filter) = std::str::from_utf8(&body).map(str::trim) else {
        return text(StatusCode::BAD_REQUEST, "log filter is not UTF-8\n");
    };
    match EnvFilter::try_new(filter) {
        Ok(f) => match log.reload(f) {
            Ok(()) => {
                tracing::info!(filter, "log filter changed");
                text(StatusCode::OK, format!("{filter}\n"))
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("invalid log filter {filter:?}: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp
}
