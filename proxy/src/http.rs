//! HTTP proxying: serves a detected HTTP/1 or HTTP/2 connection with hyper
//! and forwards each request to its target in the same protocol, streaming
//! bodies and trailers, carrying `Upgrade` (WebSocket) and `CONNECT`
//! tunnels, and recording Linkerd's request/response metrics.

mod balanced;
mod body;
mod error;
mod headers;
mod upstream;

use crate::config::MeshDestination;
use crate::detect::Protocol;
use crate::mesh;
use crate::metrics::{Direction, RequestLabels, RequestMetrics, TargetLabels};
use crate::outbound::{self, replay::ReqBody, Route};
use crate::server::{Ctx, Target};
use body::ResponseBody;
use error::error_response;
pub use error::Error;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use upstream::Upstream;
pub use upstream::{connect, Http1Pool, SharedH2Pool};

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
        let is_grpc = headers::is_grpc(req.headers());
        // Outbound destinations known to discovery are balanced.
        let head_ok = headers::head_size(&req) <= self.ctx.config.max_header_bytes;
        if let (Direction::Outbound, Some(d), true) = (self.direction, &self.ctx.discovery, head_ok)
        {
            let start = std::time::Instant::now();
            match outbound::route_http(&self.ctx, d, self.target, authority.as_ref()).await {
                Route::Balanced(dst) => {
                    return Ok(self.forward_balanced(dst, req, authority, start).await);
                }
                Route::Refuse(refusal) => {
                    let e = Error::from(refusal.clone());
                    let labels = self.ctx.metrics.target(
                        self.direction,
                        &refusal.dst,
                        self.labels.tls.clone(),
                    );
                    let mut metrics = self.request_metrics(labels, authority.as_ref(), start);
                    metrics.tap(req.method(), req.uri());
                    return Ok(respond(metrics, is_grpc, Err(e)));
                }
                Route::Passthrough => {}
            }
        }
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
        let mut metrics = self.request_metrics(
            labels.clone(),
            authority.as_ref(),
            std::time::Instant::now(),
        );
        metrics.tap(req.method(), req.uri());
        if !head_ok {
            self.ctx
                .metrics
                .http_error(self.direction, "header_too_large");
            if req.version() == http::Version::HTTP_2 {
                // Reset the stream (RST_STREAM), as h2 does past its own limit.
                metrics.end(None, None, Error::HeadersTooLarge.label());
                return Err(Error::HeadersTooLarge);
            }
            return Ok(respond(metrics, is_grpc, Err(Error::HeadersTooLarge)));
        }
        let result = match target {
            Ok(target) => {
                let mesh_dest = match self.direction {
                    Direction::Outbound => self.ctx.config.mesh_destination(target),
                    Direction::Inbound => None,
                };
                self.forward(req, authority.clone(), target, mesh_dest, &labels)
                    .await
            }
            Err(e) => Err(e),
        };
        Ok(respond(metrics, is_grpc, result))
    }

    /// Counts a request now (its labels are known).
    fn request_metrics(
        &self,
        labels: TargetLabels,
        authority: Option<&http::uri::Authority>,
        start: std::time::Instant,
    ) -> RequestMetrics {
        let authority = self
            .ctx
            .metrics
            .authority(authority.map_or("", |a| a.as_str()));
        self.ctx.metrics.request_since(
            RequestLabels {
                target: labels,
                authority,
            },
            start,
        )
    }

    /// Forwards `req` to `target` (over mTLS to its proxy when
    /// `mesh_dest` is given).
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        authority: Option<http::uri::Authority>,
        target: SocketAddr,
        mesh_dest: Option<&MeshDestination>,
        labels: &TargetLabels,
    ) -> Result<Response<body::Inner>, Error> {
        let explicit = matches!(self.target, Target::Explicit(_));
        if explicit && req.method() == Method::CONNECT {
            return self.tunnel(req, target, mesh_dest, labels).await;
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
        if let (Some(dest), false) = (mesh_dest, upgrade) {
            return self.send_mesh(dest, labels, req, authority, target).await;
        }
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let mut rsp = match mesh_dest {
            Some(dest) => self.send_mesh_upgrade(dest, labels, req).await?,
            None => {
                self.upstream
                    .send(&self.ctx, target, labels, req.map(ReqBody::from), upgrade)
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
        dest: &MeshDestination,
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
        let mut rsp = self
            .ctx
            .mesh
            .send(
                &self.ctx,
                Some(dest),
                dest.proxy_addr,
                labels,
                req.map(ReqBody::from),
            )
            .await?;
        *rsp.version_mut() = version;
        headers::strip_hop_by_hop(rsp.headers_mut(), false, false);
        Ok(rsp.map(body::Inner::Upstream))
    }

    /// Sends an upgrade request to a mesh destination on an mTLS HTTP/1
    /// connection of its own (upgrades cannot ride HTTP/2).
    async fn send_mesh_upgrade(
        &self,
        dest: &MeshDestination,
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
        mesh_dest: Option<&MeshDestination>,
        labels: &TargetLabels,
    ) -> Result<Response<body::Inner>, Error> {
        // A mesh destination is reached over mTLS to its proxy (opaque).
        let server: Box<dyn Io> = match mesh_dest {
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

/// The client's response: the target's, or the proxy's own for an error;
/// the exchange is recorded in `metrics`.
fn respond(
    metrics: RequestMetrics,
    is_grpc: bool,
    result: Result<Response<body::Inner>, Error>,
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
