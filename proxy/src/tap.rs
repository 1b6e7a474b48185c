//! Tap (linkerd2-proxy's tap server, port 4190): a live stream of request
//! metadata — no bodies, no query strings — to the controller's identity
//! only, over HTTP/2 + mTLS.
//!
//! The data path pays one atomic load per request while nobody taps
//! ([`Hub::is_active`]). Each open tap has its own bounded queue and rate
//! (`max_rps`): events beyond either are dropped and counted in the next
//! event's `skipped`, so a slow reader never slows requests or grows memory.

use crate::metrics::Metrics;
use crate::tls::CredentialStore;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pimesh_api::identity::Identity;
use pimesh_api::query::percent_decode;
use pimesh_api::tap::{TapEvent, DEFAULT_TAP_MAX_RPS, MAX_TAP_MAX_RPS, TAP_PATH};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Lines queued per tap stream before events are skipped.
const STREAM_CAPACITY: usize = 64;
/// Taps open at once; more are answered 503.
pub const MAX_TAPS: usize = 4;
/// Longest TLS handshake on the tap listener.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub mod hub;
pub use hub::Hub;

/// What the tap server uses.
#[derive(Debug, Clone)]
pub struct Tap {
    /// Where the hub is (`metrics.tap`).
    pub metrics: Arc<Metrics>,
    /// The proxy's certificate, to terminate TLS with.
    pub creds: Arc<CredentialStore>,
    /// The only identity allowed to tap.
    pub controller: Identity,
    /// Ends open taps.
    pub shutdown: CancellationToken,
}

/// What a tap selects: every given field must match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// Events per second at most.
    pub max_rps: u32,
    /// Request method, exact.
    pub method: Option<String>,
    /// `:authority`, exact.
    pub authority: Option<String>,
    /// Path prefix.
    pub path: Option<String>,
}

impl Filter {
    /// Parses `max_rps=N&method=M&authority=A&path=P` (percent-decoded).
    ///
    /// # Errors
    ///
    /// An unknown key, or `max_rps` not in 1..=[`MAX_TAP_MAX_RPS`].
    pub fn parse(query: &str) -> Result<Filter, String> {
        let mut f = Filter {
            max_rps: DEFAULT_TAP_MAX_RPS,
            ..Filter::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or_else(|| format!("{k}: bad percent-encoding"))?;
            match k {
                "max_rps" => {
                    f.max_rps = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_TAP_MAX_RPS).contains(n))
                        .ok_or_else(|| format!("max_rps={v:?}: not 1..={MAX_TAP_MAX_RPS}"))?
                }
                "method" => f.method = Some(v),
                "authority" => f.authority = Some(v),
                "path" => f.path = Some(v),
                _ => return Err(format!("unknown parameter {k:?}")),
            }
        }
        Ok(f)
    }

    fn matches(&self, ev: &TapEvent) -> bool {
        self.method.as_ref().is_none_or(|m| *m == ev.method)
            && self.authority.as_ref().is_none_or(|a| *a == ev.authority)
            && self.path.as_ref().is_none_or(|p| ev.path.starts_with(p))
    }
}

/// Serves the tap listener until the task is aborted: TLS with the proxy's
/// current certificate, client certificate required; requests from any
/// identity but `config.controller_identity` get 403.
pub async fn serve(listener: TcpListener, ctx: Arc<Tap>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%e, "tap accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let Some(creds) = ctx.creds.get() else {
                return; // no certificate yet: nothing to prove who we are
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(creds.server.clone());
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, %e, "tap handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let client = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::tls::peer_identity(c, &creds.trust_domain));
            let allowed = client.as_ref() == Some(&ctx.controller);
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, allowed, req)) }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_TAPS as u32)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, %e, "tap connection ended");
            }
        });
    }
}

fn handle(ctx: &Arc<Tap>, allowed: bool, req: Request<Incoming>) -> Response<TapBody> {
    if !allowed {
        return error(
            StatusCode::FORBIDDEN,
            "tap is open to the controller's identity only\n",
        );
    }
    if req.method() != Method::GET || req.uri().path() != TAP_PATH {
        return error(StatusCode::NOT_FOUND, "not found\n");
    }
    let filter = match Filter::parse(req.uri().query().unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    let hub = &ctx.metrics.tap;
    if hub.open.fetch_add(1, Ordering::AcqRel) >= MAX_TAPS {
        hub.open.fetch_sub(1, Ordering::AcqRel);
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many taps open\n");
    }
    let (out, rx) = mpsc::channel(STREAM_CAPACITY);
    tokio::spawn(relay(ctx.clone(), hub.tx.subscribe(), filter, out));
    let mut rsp = Response::new(TapBody::Stream(rx));
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    rsp
}

/// Moves matching events from the hub to one stream, within its rate.
async fn relay(
    ctx: Arc<Tap>,
    mut events: broadcast::Receiver<Arc<TapEvent>>,
    filter: Filter,
    out: mpsc::Sender<Bytes>,
) {
    let mut window = Instant::now();
    let mut sent_in_window = 0u32;
    let mut skipped = 0u64;
    loop {
        let ev = tokio::select! {
            _ = out.closed() => break,
            _ = ctx.shutdown.cancelled() => break,
            ev = events.recv() => ev,
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                skipped += n;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if !filter.matches(&ev) {
            continue;
        }
        if window.elapsed() >= Duration::from_secs(1) {
            window = Instant::now();
            sent_in_window = 0;
        }
        if sent_in_window >= filter.max_rps {
            skipped += 1;
            continue;
        }
        let mut line = match serde_json::to_vec(&TapEvent {
            skipped,
            ..(*ev).clone()
        }) {
            Ok(l) => l,
            Err(_) => continue,
        };
        line.push(b'\n');
        match out.try_send(Bytes::from(line)) {
            Ok(()) => {
                sent_in_window += 1;
                skipped = 0;
            }
            Err(mpsc::error::TrySendError::Full(_)) => skipped += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    ctx.metrics.tap.open.fetch_sub(1, Ordering::AcqRel);
}

fn error(status: StatusCode, msg: &str) -> Response<TapBody> {
    let mut rsp = Response::new(TapBody::Once(Some(Bytes::from(msg.to_string()))));
    *rsp.status_mut() = status;
    rsp
}

/// A tap response: an error text, or the stream of event lines.
pub enum TapBody {
    /// One chunk then the end.
    Once(Option<Bytes>),
    /// Lines until the relay ends.
    Stream(mpsc::Receiver<Bytes>),
}

impl http_body::Body for TapBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TapBody::Once(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            TapBody::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f = Filter::parse("max_rps=5&method=GET&path=%2Fapi%2F&authority=web%3A80").unwrap();
        assert_eq!(f.max_rps, 5);
        assert_eq!(f.path.as_deref(), Some("/api/"));
        assert_eq!(f.authority.as_deref(), Some("web:80"));
        assert_eq!(Filter::parse("").unwrap().max_rps, DEFAULT_TAP_MAX_RPS);
        for bad in [
            "max_rps=0",
            "max_rps=100000",
            "max_rps=x",
            "nope=1",
            "path=%zz",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
