//! HTTP proxying: serves a detected HTTP/1 or HTTP/2 connection with hyper;
//! outbound, each request is routed (`outbound::route`) to a balanced
//! service (`outbound::balanced`) or forwarded to its target in the same
//! protocol (`forward`), streaming bodies and trailers, carrying `Upgrade`
//! (WebSocket) and `CONNECT` tunnels, and recording Linkerd's
//! request/response metrics.
//!
//! Layout: `forward` (one request to its target), `orig_proto` (HTTP/1
//! across the mesh's HTTP/2 hop), `replay` (request bodies that can be sent
//! again), `headers`, `body` (the response body that records the
//! response), `error` (the proxy's own responses), `route_match` (Gateway
//! API matches, outbound routes' and inbound per-route policy's).

pub mod body;
pub mod error;
pub mod forward;
pub mod headers;
pub mod orig_proto;
pub mod park;
pub mod replay;
pub mod route_match;

use crate::authz::{Authz, Routed};
use crate::connect::mtls;
use crate::connect::pool::{H2_CONN_WINDOW, H2_MAX_SEND_BUF, H2_STREAM_WINDOW};
use crate::ctx::Ctx;
use crate::detect::Protocol;
use crate::metrics::{ConnectionSeries, Direction, RequestLabels, RequestMetrics, TargetLabels};
use crate::outbound::loop_guard;
use crate::outbound::route::{self, Route};
use crate::outbound::{balanced, http_route};
use crate::target::Target;
use body::ResponseBody;
use error::{respond, Error};
use forward::Forward;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use park::Park;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Concurrent streams accepted per HTTP/2 connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// Serves one detected HTTP connection until the client closes it, an
/// error ends it, or shutdown asks it to finish its requests and close;
/// an HTTP/1 connection that went idle is returned parked instead
/// ([`park::Parked`]: the caller waits for its next bytes with
/// [`Parked::readable`] and serves it again with [`Parked::serve`], so
/// that no future of this call is kept while it waits).
/// Connection-level errors are counted in `{direction}_http_errors_total`.
/// With an inbound verdict (`authz`) each request is counted in
/// `inbound_http_authz_{allow,deny}_total`, on the route it matches when
/// the port's Server has routes (none: 404, gRPC `NOT_FOUND`, counted in
/// `inbound_http_route_not_found_total`); a denied one is answered 403
/// (gRPC: `PERMISSION_DENIED`) and never reaches the app, nor does an
/// allowed one over the port's rate limit: 429 (gRPC:
/// `RESOURCE_EXHAUSTED`), counted in `inbound_http_local_ratelimit_total`.
pub async fn serve<I>(
    ctx: &Arc<Ctx>,
    direction: Direction,
    io: I,
    protocol: Protocol,
    target: Target,
    labels: TargetLabels,
    authz: Option<Authz>,
) -> Option<Parked<I>>
where
    I: AsyncRead + AsyncWrite + Park + Unpin + Send + 'static,
{
    let svc = Arc::new(Service {
        ctx: ctx.clone(),
        direction,
        target,
        series: ConnectionSeries::new(labels),
        authz,
        authz_counter: std::sync::OnceLock::new(),
    });
    if protocol != Protocol::Http2 {
        return Parked::new(svc, io).serve().await;
    }
    let cfg = &ctx.config;
    let service = hyper::service::service_fn(move |req| svc.clone().handle(req));
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // h2 itself answers 431 and resets the stream past twice the
        // limit; between 1x and 2x the service refuses and counts it.
        .max_header_list_size(cfg.max_header_bytes.saturating_mul(2) as u32)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .serve_connection(TokioIo::new(io), service);
    // Boxed: h2's state would otherwise size every HTTP/1 connection.
    let mut conn = Box::pin(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = ctx.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    connection_ended(ctx, direction, result);
    None
}

/// An HTTP/1 connection between two hyper connections: its I/O (with what
/// the last one read ahead), its request handler and its [`Gate`]. Once
/// parked, nothing else of the connection exists: no codec, no buffer, no
/// future.
pub struct Parked<I> {
    io: park::GatedIo<I>,
    svc: Arc<Service>,
}

impl<I> Parked<I> {
    /// The connection's I/O.
    pub fn io(&self) -> &I {
        &self.io.io
    }

    /// The proxy's shared state.
    pub fn ctx(&self) -> &Arc<crate::ctx::Ctx> {
        &self.svc.ctx
    }

    /// Which listener accepted the connection.
    pub fn direction(&self) -> crate::metrics::Direction {
        self.svc.direction
    }
}

impl<I> Parked<I>
where
    I: AsyncRead + AsyncWrite + Park + Unpin + Send + 'static,
{
    /// A connection no hyper connection has served yet.
    fn new(svc: Arc<Service>, io: I) -> Parked<I> {
        let io = park::GatedIo {
            io,
            prefix: bytes::Bytes::new(),
            gate: Arc::new(park::Gate::default()),
        };
        Parked { io, svc }
    }

    /// Waits until the connection has bytes to read (or EOF, or an
    /// error): `true`, serve it; `false` when it was reset or the proxy
    /// shuts down, close it (as hyper closes an idle connection, without
    /// an error). Ready at once when bytes read ahead wait, or when the
    /// I/O cannot park.
    pub async fn readable(&mut self) -> bool {
        if !self.io.prefix.is_empty() || !self.io.io.can_park() {
            return true;
        }
        let readable = std::future::poll_fn(|cx| std::pin::Pin::new(&mut self.io.io).poll_park(cx));
        tokio::select! {
            r = readable => r.is_ok(),
            _ = self.svc.ctx.shutdown.cancelled() => false,
        }
    }

    /// Serves the connection with a fresh hyper connection until it ends
    /// (`None`; a connection error counted in
    /// `{direction}_http_errors_total`) or has been idle for [`park::LINGER`]
    /// (`Some`: parked again, hyper dropped). An I/O that cannot park
    /// stays in hyper until the connection ends.
    pub async fn serve(self) -> Option<Parked<I>> {
        let Parked { io, svc } = self;
        let ctx = svc.ctx.clone();
        let parks = io.io.can_park();
        let gate = io.gate.clone();
        gate.reset();
        let (round_svc, round_gate) = (svc.clone(), gate.clone());
        let service = hyper::service::service_fn(move |req| {
            let in_flight = round_gate.request(&req);
            // `handle` returns the request's future already boxed: moving
            // it into this block and hyper's slot copies a pointer.
            let rsp = round_svc.clone().handle(req);
            async move { rsp.await.map(|rsp| park::track(rsp, in_flight)) }
        });
        // Boxed: hyper's connection state is freed when parked.
        let mut conn = Box::new(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ctx.config.header_read_timeout)
                .max_buf_size(ctx.config.max_header_bytes)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        // Parked once idle for `park::LINGER`; the timer is made on the first
        // idle period and moved at each next one.
        let mut linger: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let mut periods = gate.idle_periods();
        let parked = std::future::poll_fn(|cx| match std::pin::Pin::new(&mut conn).poll(cx) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
            std::task::Poll::Pending if parks && gate.is_idle() && park::LINGER.is_zero() => {
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Pending if parks && gate.is_idle() => {
                let sleep =
                    linger.get_or_insert_with(|| Box::pin(tokio::time::sleep(park::LINGER)));
                if gate.idle_periods() != periods {
                    periods = gate.idle_periods();
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + park::LINGER);
                }
                sleep.as_mut().poll(cx).map(|()| None)
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        });
        let ended = tokio::select! {
            r = parked => r,
            _ = ctx.shutdown.cancelled() => {
                std::pin::Pin::new(&mut *conn).graceful_shutdown();
                connection_ended(&ctx, svc.direction, conn.await);
                return None;
            }
        };
        if let Some(r) = ended {
            connection_ended(&ctx, svc.direction, r);
            return None;
        }
        // Idle: take the socket back, with what hyper read ahead.
        let parts = (*conn).into_parts()?;
        let mut io = parts.io.into_inner();
        // A copy: `read_buf` keeps hyper's whole read buffer alive.
        io.prefix = match parts.read_buf.is_empty() {
            true => bytes::Bytes::new(),
            false => bytes::Bytes::copy_from_slice(&parts.read_buf),
        };
        Some(Parked { io, svc })
    }
}

/// Counts a connection that hyper ended with an error in
/// `{direction}_http_errors_total`.
fn connection_ended(ctx: &Ctx, direction: Direction, result: Result<(), hyper::Error>) {
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
    /// The connection's target labels and its requests' metric handles,
    /// per authority (looked up once, not per request).
    series: ConnectionSeries,
    /// An inbound connection's verdict, applied to each request.
    authz: Option<Authz>,
    /// The `inbound_http_authz_*_total` counter of `authz`, from the
    /// first request on.
    authz_counter: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
}

/// What [`Service::handle`] returns: the request's future, boxed.
type Handled = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<ResponseBody>, Error>> + Send>,
>;

impl Service {
    /// The request's future on the heap: hyper's HTTP/2 server spawns a
    /// task per stream and moves the future into it, several KiB copied
    /// per request (callgrind: ~40% of the mesh server proxy's
    /// instructions) where a pointer does.
    fn handle(self: Arc<Self>, req: Request<Incoming>) -> Handled {
        Box::pin(self.handle_request(req))
    }

    async fn handle_request(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Error> {
        let authority = headers::authority(&req);
        let is_grpc = headers::is_grpc(req.headers());
        if let Some(conn_authz) = &self.authz {
            // Made again when the port's policy changed since the
            // connection's verdict.
            let cfg = &self.ctx.config;
            let now = conn_authz.current(&self.ctx.inbound_policies, &cfg.cluster_networks);
            let authz = now.as_ref().unwrap_or(conn_authz);
            let m = self.ctx.metrics.authz();
            let target = self.series.target();
            // A Server with routes decides on the request's route.
            let routed = authz.route(
                req.method(),
                req.uri(),
                req.headers(),
                &cfg.cluster_networks,
            );
            let authz = match &routed {
                Routed::Route(a) => {
                    m.record(target, a, true);
                    a
                }
                Routed::NotFound => {
                    m.record_route_not_found(target, authz);
                    authz
                }
                Routed::Default => {
                    if now.as_ref().is_some_and(|a| !a.same_series(conn_authz)) {
                        m.record(target, authz, true);
                    } else {
                        self.authz_counter
                            .get_or_init(|| m.counter(target, conn_authz, true))
                            .inc();
                    }
                    authz
                }
            };
            // The rate limit only once admitted, as linkerd2-proxy: a
            // refused client takes no token.
            let refused = if matches!(routed, Routed::NotFound) {
                Some(Error::RouteNotFound(authz.describe()))
            } else if !authz.allowed {
                Some(Error::Unauthorized(authz.describe()))
            } else {
                authz.rate_limit().err().map(|limited| {
                    m.record_rate_limited(target, authz, limited.scope());
                    let rl = authz.server.rate_limit.as_ref();
                    let name = rl.map_or("", |r| &*r.name);
                    Error::RateLimited(format!("HTTPLocalRateLimitPolicy {name}"), limited)
                })
            };
            if let Some(e) = refused {
                let start = std::time::Instant::now();
                let mut metrics = self.cached_request_metrics(authority.as_ref(), start);
                metrics.tap(req.method(), req.uri());
                // Read (some of) the body so the client sees the answer,
                // not a reset.
                body::drain(req.into_body()).await;
                return Ok(respond(metrics, is_grpc, Err(e)));
            }
        }
        // Outbound destinations known to discovery are balanced.
        let head_ok = headers::head_size(&req) <= self.ctx.config.max_header_bytes;
        if let (Direction::Outbound, Some(d), true) = (self.direction, &self.ctx.discovery, head_ok)
        {
            let start = std::time::Instant::now();
            match route::route_http(&self.ctx.config, d, self.target, authority.as_ref()).await {
                Route::Balanced(dst) => {
                    let f = self.forwarder();
                    let rsp = match &dst.routes {
                        Some(t) => {
                            http_route::forward(&f, d, dst.clone(), t, req, authority, start).await
                        }
                        None => balanced::forward(&f, dst, None, req, authority, start).await,
                    };
                    return Ok(rsp);
                }
                Route::Refuse(refusal) => {
                    let e = Error::from(refusal.clone());
                    let labels = self.ctx.metrics.target(
                        self.direction,
                        &refusal.dst,
                        self.series.target().tls.clone(),
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
        let start = std::time::Instant::now();
        let auth = authority.as_ref().map_or("", |a| a.as_str());
        let m = &self.ctx.metrics;
        let series = match (&target, self.target) {
            (Ok(addr), Target::Explicit(_)) => self.series.get_explicit(m, *addr, auth, || {
                let tls = match self.ctx.config.mesh_destination(*addr) {
                    Some(dest) => mtls::tls_labels(m, &self.ctx.config, dest),
                    None => self.series.target().tls.clone(),
                };
                m.target(self.direction, &addr.to_string(), tls)
            }),
            _ => self.series.get(m, auth),
        };
        let mut metrics = m.request_in(series.clone(), start);
        let labels = &series.labels().target;
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
                self.forwarder()
                    .forward(req, authority.clone(), target, mesh_dest, labels)
                    .await
            }
            Err(e) => Err(e),
        };
        Ok(respond(metrics, is_grpc, result))
    }

    /// What forwarding this connection's requests uses.
    fn forwarder(&self) -> Forward<'_> {
        Forward {
            clients: &self.ctx.clients,
            metrics: &self.ctx.metrics,
            explicit: matches!(self.target, Target::Explicit(_)),
        }
    }

    /// Counts a request now with the connection's labels, through its
    /// cached handles.
    fn cached_request_metrics(
        &self,
        authority: Option<&http::uri::Authority>,
        start: std::time::Instant,
    ) -> RequestMetrics {
        let m = &self.ctx.metrics;
        let series = self.series.get(m, authority.map_or("", |a| a.as_str()));
        m.request_in(series, start)
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
        if loop_guard::targets_self(addr, local) {
            return Err(Error::Loop);
        }
        Ok(addr)
    }
}
