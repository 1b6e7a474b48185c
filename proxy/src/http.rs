//! HTTP proxying: serves a detected HTTP/1 or HTTP/2 connection with hyper
//! and forwards each request to its target in the same protocol, streaming
//! bodies and trailers, carrying `Upgrade` (WebSocket) and `CONNECT`
//! tunnels, and recording Linkerd's request/response metrics.

mod body;
mod headers;
mod upstream;

use crate::detect::Protocol;
use crate::mesh;
use crate::metrics::{Direction, RequestLabels, TargetLabels};
use crate::server::{Ctx, Target};
use body::ResponseBody;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use upstream::Upstream;
pub use upstream::{connect, Http1Pool};

/// HTTP/2 flow-control windows and send buffer, in bytes: the spec's
/// defaults (RFC 9113 §6.9.2) rather than hyper's megabytes, so that a slow
/// reader costs at most this much memory per stream.
pub(crate) const H2_STREAM_WINDOW: u32 = 64 * 1024;
pub(crate) const H2_CONN_WINDOW: u32 = 256 * 1024;
pub(crate) const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// Concurrent streams accepted per HTTP/2 connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// A byte stream to a target (plain TCP or mTLS), for tunnels.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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
        }
    }

    /// The gRPC status a gRPC client gets: `UNAVAILABLE` (14) when the
    /// target cannot be reached, `RESOURCE_EXHAUSTED` (8) for oversized
    /// headers, `INTERNAL` (13) for requests the proxy cannot route.
    pub fn grpc_status(&self) -> u32 {
        match self {
            Error::NoTarget | Error::Loop => 13,
            Error::HeadersTooLarge => 8,
            Error::Resolve(..)
            | Error::ConnectTimeout(_)
            | Error::Connect(..)
            | Error::Upstream(..)
            | Error::NoIdentity
            | Error::Tls(..) => 14,
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoTarget | Error::Loop => StatusCode::BAD_REQUEST,
            Error::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::ConnectTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::NoIdentity => StatusCode::SERVICE_UNAVAILABLE,
            Error::Resolve(..) | Error::Connect(..) | Error::Upstream(..) | Error::Tls(..) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }
}

/// Serves one detected HTTP connection until the client closes it, an
/// error ends it, or shutdown asks it to finish its requests and close.
/// Connection-level errors are counted in `{direction}_http_errors_total`.
pub async fn serve<I>(
    ctx: &Arc<Ctx>,
    direction: Direction,
    io: I,
    protocol: Protocol,
    target: Target,
    labels: TargetLabels,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = Arc::new(Service {
        ctx: ctx.clone(),
        direction,
        target,
        labels,
        upstream: Upstream::default(),
    });
    let service = hyper::service::service_fn(move |req| svc.clone().handle(req));
    let io = TokioIo::new(io);
    let cfg = &ctx.config;
    let result = if protocol == Protocol::Http2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // h2 itself answers 431 and resets the stream past twice the
            // limit; between 1x and 2x the service refuses and counts it.
            .max_header_list_size(cfg.max_header_bytes.saturating_mul(2) as u32)
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONN_WINDOW)
            .max_send_buf_size(H2_MAX_SEND_BUF)
            .serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = ctx.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(cfg.max_header_bytes)
            .serve_connection(io, service)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = ctx.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    if let Err(e) = result {
        let label = connection_error_label(&e);
        tracing::debug!(%e, label, ?direction, "HTTP connection ended with an error");
        ctx.metrics.http_error(direction, label);
    }
}

/// The `error` label of `{direction}_http_errors_total` for a connection
/// that hyper ended with `e`.
fn connection_error_label(e: &hyper::Error) -> &'static str {
    if e.is_parse_too_large() {
        "header_too_large"
    } else if e.is_timeout() {
        "header_timeout"
    } else if e.is_parse() || e.is_parse_status() {
        "parse"
    } else if e.is_incomplete_message() {
        "incomplete"
    } else if e.is_canceled() || e.is_closed() {
        "closed"
    } else if e.is_user() {
        "user"
    } else {
        "io"
    }
}

/// One connection's request handler.
struct Service {
    ctx: Arc<Ctx>,
    direction: Direction,
    target: Target,
    labels: TargetLabels,
    /// Connections to the target, reused across this connection's requests.
    upstream: Upstream,
}

impl Service {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Error> {
        let authority = headers::authority(&req);
        let target = match self.target {
            Target::Fixed(addr) => Ok(addr),
            Target::Explicit(local) => self.resolve(authority.as_ref(), &req, local).await,
        };
        // Explicit proxy mode: label with the request's own target.
        let labels = match (&target, self.target) {
            (Ok(addr), Target::Explicit(_)) => {
                let tls = match self.ctx.config.mesh_destination(*addr) {
                    Some(dest) => mesh::outbound_tls(&self.ctx, dest),
                    None => self.labels.tls.clone(),
                };
                self.ctx
                    .metrics
                    .target(self.direction, &addr.to_string(), tls)
            }
            _ => self.labels.clone(),
        };
        let mut metrics = self.ctx.metrics.request(RequestLabels {
            target: labels.clone(),
            authority: self
                .ctx
                .metrics
                .authority(authority.as_ref().map_or("", |a| a.as_str())),
        });
        metrics.tap(req.method(), req.uri());
        let is_grpc = headers::is_grpc(req.headers());
        let result = if headers::head_size(&req) > self.ctx.config.max_header_bytes {
            self.ctx
                .metrics
                .http_error(self.direction, "header_too_large");
            if req.version() == http::Version::HTTP_2 {
                // Reset the stream (RST_STREAM), as h2 does past its own limit.
                metrics.end(None, None, Error::HeadersTooLarge.label());
                return Err(Error::HeadersTooLarge);
            }
            Err(Error::HeadersTooLarge)
        } else {
            match target {
                Ok(target) => self.forward(req, authority, target, &labels).await,
                Err(e) => Err(e),
            }
        };
        let rsp = match result {
            Ok(rsp) => rsp,
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                let rsp = error_response(&e, is_grpc);
                let grpc_status = is_grpc.then(|| e.grpc_status());
                metrics.end(Some(rsp.status().as_u16()), grpc_status, e.label());
                return Ok(rsp);
            }
        };
        let (parts, body) = rsp.into_parts();
        let body = ResponseBody::new(body, metrics, parts.status.as_u16(), &parts.headers);
        Ok(Response::from_parts(parts, body))
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        authority: Option<http::uri::Authority>,
        target: SocketAddr,
        labels: &TargetLabels,
    ) -> Result<Response<body::Inner>, Error> {
        let explicit = matches!(self.target, Target::Explicit(_));
        if explicit && req.method() == Method::CONNECT {
            return self.tunnel(req, target, labels).await;
        }
        let upgrade = headers::is_upgrade(&req);
        let is_connect = req.method() == Method::CONNECT;
        headers::strip_hop_by_hop(req.headers_mut(), upgrade, explicit);
        // An HTTP/1 request that crossed the mesh as HTTP/2 goes to the app
        // as HTTP/1 again.
        if let Some(orig) = req.headers_mut().remove(mesh::ORIG_PROTO) {
            *req.version_mut() = if orig == "HTTP/1.0" {
                http::Version::HTTP_10
            } else {
                http::Version::HTTP_11
            };
            headers::to_origin_form(&mut req, authority.as_ref());
        } else if explicit && req.version() != http::Version::HTTP_2 {
            headers::to_origin_form(&mut req, authority.as_ref());
        }
        let mesh_dest = match self.direction {
            Direction::Outbound => self.ctx.config.mesh_destination(target),
            Direction::Inbound => None,
        };
        if let (Some(dest), false) = (mesh_dest, upgrade) {
            return self.send_mesh(dest, labels, req, authority, target).await;
        }
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let mut rsp = match mesh_dest {
            Some(dest) => self.send_mesh_upgrade(dest, labels, req).await?,
            None => {
                self.upstream
                    .send(&self.ctx, target, labels, req, upgrade)
                    .await?
            }
        };
        if let Some(client_upgrade) = client_upgrade {
            let switched = rsp.status() == StatusCode::SWITCHING_PROTOCOLS
                || (is_connect && rsp.status().is_success());
            if switched {
                let server_upgrade = hyper::upgrade::on(&mut rsp);
                self.ctx.tracker.spawn(async move {
                    match tokio::try_join!(client_upgrade, server_upgrade) {
                        Ok((client, server)) => {
                            let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                        }
                        Err(e) => tracing::debug!(%e, "upgrade failed"),
                    }
                });
            }
        }
        let keep_upgrade = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(rsp.headers_mut(), keep_upgrade, false);
        Ok(rsp.map(body::Inner::Upstream))
    }

    /// Sends a request to a mesh destination over the shared HTTP/2
    /// connection to its proxy; HTTP/1 requests travel as HTTP/2 marked
    /// with their version and come back as HTTP/1 responses.
    async fn send_mesh(
        &self,
        dest: &crate::config::MeshDestination,
        labels: &TargetLabels,
        mut req: Request<Incoming>,
        authority: Option<http::uri::Authority>,
        target: SocketAddr,
    ) -> Result<Response<body::Inner>, Error> {
        let version = req.version();
        if version != http::Version::HTTP_2 {
            let authority = authority.map_or_else(|| target.to_string(), |a| a.to_string());
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = format!("http://{authority}{path}")
                .parse()
                .map_err(|_| Error::NoTarget)?;
            let orig = if version == http::Version::HTTP_10 {
                "HTTP/1.0"
            } else {
                "HTTP/1.1"
            };
            let h = req.headers_mut();
            h.remove(http::header::HOST);
            h.insert(mesh::ORIG_PROTO, http::HeaderValue::from_static(orig));
            *req.version_mut() = http::Version::HTTP_2;
        }
        let mut rsp = self.ctx.mesh.send(&self.ctx, dest, labels, req).await?;
        *rsp.version_mut() = version;
        headers::strip_hop_by_hop(rsp.headers_mut(), false, false);
        Ok(rsp.map(body::Inner::Upstream))
    }

    /// Sends an upgrade request to a mesh destination on an mTLS HTTP/1
    /// connection of its own (upgrades cannot ride HTTP/2).
    async fn send_mesh_upgrade(
        &self,
        dest: &crate::config::MeshDestination,
        labels: &TargetLabels,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, Error> {
        let tls = mesh::connect(&self.ctx, dest, mesh::Carries::Http1, labels).await?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| Error::Upstream(dest.proxy_addr, e))?;
        self.ctx.tracker.spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| Error::Upstream(dest.proxy_addr, e))
    }

    /// Explicit proxy mode: the target named by the request, resolved.
    async fn resolve(
        &self,
        authority: Option<&http::uri::Authority>,
        req: &Request<Incoming>,
        local: SocketAddr,
    ) -> Result<SocketAddr, Error> {
        let authority = authority.ok_or(Error::NoTarget)?;
        let default_port = if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addr = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => {
                let lookup = tokio::net::lookup_host((host, port));
                let mut addrs = tokio::time::timeout(self.ctx.config.connect_timeout, lookup)
                    .await
                    .map_err(|_| Error::Resolve(host.into(), std::io::ErrorKind::TimedOut.into()))?
                    .map_err(|e| Error::Resolve(host.into(), e))?;
                addrs.next().ok_or_else(|| {
                    Error::Resolve(host.into(), std::io::ErrorKind::NotFound.into())
                })?
            }
        };
        let is_self = addr == local
            || (addr.port() == local.port()
                && (addr.ip().is_loopback() || addr.ip().is_unspecified())
                && (local.ip().is_loopback() || local.ip().is_unspecified()));
        if is_self {
            return Err(Error::Loop);
        }
        Ok(addr)
    }

    /// Explicit proxy `CONNECT host:port`: connect, answer 200, then splice
    /// the upgraded client connection and the target's bytes.
    async fn tunnel(
        &self,
        mut req: Request<Incoming>,
        target: SocketAddr,
        labels: &TargetLabels,
    ) -> Result<Response<body::Inner>, Error> {
        // A mesh destination is reached over mTLS to its proxy (opaque).
        let server: Box<dyn Io> = match self.ctx.config.mesh_destination(target) {
            Some(dest) => {
                Box::new(mesh::connect(&self.ctx, dest, mesh::Carries::Opaque, labels).await?)
            }
            None => Box::new(upstream::connect(&self.ctx, target, labels).await?),
        };
        let mut server = server;
        let client = hyper::upgrade::on(&mut req);
        self.ctx.tracker.spawn(async move {
            match client.await {
                Ok(client) => {
                    let mut client = TokioIo::new(client);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                Err(e) => tracing::debug!(%e, "CONNECT upgrade failed"),
            }
        });
        Ok(Response::new(body::Inner::Local(None)))
    }
}

/// A response made by the proxy itself: the error's status, its message
/// as text, and a `pimesh-proxy-error` header (as Linkerd's
/// `l5d-proxy-error`). gRPC clients get a trailers-only response (HTTP 200,
/// `grpc-status`, `grpc-message`) as the gRPC over HTTP/2 protocol asks of
/// proxies, and as linkerd2-proxy answers.
fn error_response(e: &Error, grpc: bool) -> Response<ResponseBody> {
    let msg = crate::error_chain(e);
    // Header-safe: printable ASCII, the rest percent-encoded (as
    // grpc-message requires).
    let encoded: String = msg
        .bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let encoded = http::HeaderValue::from_str(&encoded).ok();
    let mut rsp = if grpc {
        let mut rsp = Response::new(ResponseBody::local(Bytes::new()));
        let h = rsp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", http::HeaderValue::from(e.grpc_status()));
        if let Some(v) = &encoded {
            h.insert("grpc-message", v.clone());
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
