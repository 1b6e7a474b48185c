//! HTTP client connections. Each request goes out in its own HTTP
//! version: HTTP/2 on one multiplexed connection per address, shared by
//! every client connection ([`SharedH2Pool`]: fixed targets, balanced
//! endpoints, and peer proxies over mTLS); HTTP/1 on an idle connection
//! from a pool shared by every client connection, retried once on a fresh
//! connection when a pooled one closed before the request was written.
//! So an idle client connection holds no upstream connection of its own.

use super::mtls::{self, Carries};
use super::tcp::Dialer;
use crate::balance::Endpoint;
use crate::config::MeshDestination;
use crate::http::error::Error;
use crate::http::replay::ReqBody;
use crate::metrics::TargetLabels;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio_util::task::TaskTracker;

/// HTTP/2 flow-control windows and send buffer, in bytes: the spec's
/// defaults (RFC 9113 §6.9.2) rather than hyper's megabytes, so that a slow
/// reader costs at most this much memory per stream.
pub const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// The HTTP/2 connection window, bytes.
pub const H2_CONN_WINDOW: u32 = 256 * 1024;
/// The HTTP/2 send buffer per stream, bytes.
pub const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// The one HTTP/2 client builder: every client connection (targets,
/// endpoints, peer proxies) gets the same windows.
pub fn h2_client() -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_send_buf_size(H2_MAX_SEND_BUF);
    b
}

/// Everything the proxy connects with, shared by every connection task.
#[derive(Debug)]
pub struct Clients {
    /// Opens TCP connections (and, with the certificate, mTLS).
    pub dialer: Dialer,
    /// Where connection tasks run, so that shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Idle HTTP/1 connections to targets, shared by client connections.
    pub h1: Http1Pool,
    /// Plaintext HTTP/2 connections, one per address: fixed targets (the
    /// app, an unmeshed destination) and endpoints of balanced services.
    pub h2: SharedH2Pool,
    /// Multiplexed mTLS connections to peer proxies.
    pub mesh: SharedH2Pool,
}

impl Clients {
    /// Drops idle pooled connections (at shutdown: they would keep the
    /// drain waiting for the grace period).
    pub fn clear(&self) {
        self.h1.clear();
        self.h2.clear();
        self.mesh.clear();
    }

    /// Sends `req` to the fixed target `target` in `req`'s HTTP version
    /// and returns the response head and streaming body: HTTP/2 on the
    /// target's shared connection ([`Clients::h2`]), HTTP/1 on an idle
    /// pooled connection or a new one. `upgrade` requests get an HTTP/1
    /// connection of their own, which the upgrade then consumes.
    ///
    /// Shared, an idle client connection costs no upstream connection
    /// (an idle h2c client connection held 55 KB with one of its own,
    /// 27 KB without; benches/README), and the app sees one HTTP/2
    /// connection per proxy. The app's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §6.5.2) then bounds the
    /// streams of all clients together; past it, hyper holds a request
    /// until a stream ends.
    ///
    /// # Errors
    ///
    /// Connect failures and a target that fails before answering.
    pub async fn send(
        &self,
        target: SocketAddr,
        labels: &TargetLabels,
        req: Request<ReqBody>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, Error> {
        if req.version() == Version::HTTP_2 {
            return self.h2.send(self, None, target, labels, req).await;
        }
        let mut req = req;
        if !upgrade {
            while let Some(mut sender) = self.h1.take(target) {
                if sender.ready().await.is_err() {
                    continue; // closed while idle
                }
                match sender.try_send_request(req).await {
                    Ok(rsp) => {
                        self.h1.put(target, sender);
                        return Ok(rsp);
                    }
                    Err(mut e) => match e.take_message() {
                        // Never written: safe to send on another connection.
                        Some(unsent) => req = unsent,
                        None => return Err(Error::Upstream(target, e.into_error())),
                    },
                }
            }
        }
        let io = TokioIo::new(self.dialer.tcp_http(target, labels).await?);
        let (mut sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Error::Upstream(target, e))?;
        self.tracker.spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%e, "HTTP/1 target connection failed");
            }
        });
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Upstream(target, e))?;
        if !upgrade {
            self.h1.put(target, sender);
        }
        Ok(rsp)
    }
}

/// Idle HTTP/1 connections kept per target.
const MAX_IDLE_HTTP1: usize = 16;

/// Idle HTTP/1 connections to targets, shared by all client connections.
#[derive(Debug, Default)]
pub struct Http1Pool {
    idle: std::sync::Mutex<HashMap<SocketAddr, Vec<http1::SendRequest<ReqBody>>>>,
    /// Shutting down: connections are no longer kept.
    closed: std::sync::atomic::AtomicBool,
}

impl Http1Pool {
    fn take(&self, target: SocketAddr) -> Option<http1::SendRequest<ReqBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let senders = idle.get_mut(&target)?;
        let sender = senders.pop();
        if senders.is_empty() {
            idle.remove(&target);
        }
        sender
    }

    /// Drops every idle connection (at shutdown: they would keep the
    /// drain waiting).
    pub fn clear(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Keeps `sender` for a later request; it becomes ready once the
    /// current response body has been read. Closed ones are dropped.
    fn put(&self, target: SocketAddr, sender: http1::SendRequest<ReqBody>) {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let senders = idle.entry(target).or_default();
        senders.retain(|s| !s.is_closed());
        if senders.len() >= MAX_IDLE_HTTP1 {
            senders.remove(0);
        }
        senders.push(sender);
    }
}

/// Shared HTTP/2 connections, one per peer address: peer proxies over
/// mTLS (a mesh destination given), and plaintext fixed targets and
/// endpoints of balanced services. Connecting to one peer does not hold up requests to others.
#[derive(Debug, Default)]
pub struct SharedH2Pool {
    peers: std::sync::Mutex<HashMap<SocketAddr, H2Slot>>,
    /// Shutting down: new connections are used once, not kept.
    closed: std::sync::atomic::AtomicBool,
}

type H2Slot = std::sync::Arc<tokio::sync::Mutex<Option<http2::SendRequest<ReqBody>>>>;

/// Peers remembered before closed connections are forgotten.
const MAX_H2_PEERS: usize = 1024;

impl SharedH2Pool {
    /// Forgets every connection (at shutdown): each closes once its
    /// streams in flight are done, instead of keeping the drain waiting.
    pub fn clear(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The connection to `addr`, opened (over mTLS to `mesh`'s identity
    /// when given) if there is none or it closed.
    ///
    /// # Errors
    ///
    /// Connect, TLS and handshake failures.
    pub async fn sender(
        &self,
        c: &Clients,
        mesh: Option<&MeshDestination>,
        addr: SocketAddr,
        labels: &TargetLabels,
    ) -> Result<http2::SendRequest<ReqBody>, Error> {
        let slot = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            if peers.len() >= MAX_H2_PEERS && !peers.contains_key(&addr) {
                peers.retain(|_, s| {
                    s.try_lock()
                        .map_or(true, |s| s.as_ref().is_some_and(|s| !s.is_closed()))
                });
            }
            peers.entry(addr).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let builder = h2_client();
        let (sender, conn) = match mesh {
            Some(dest) => {
                let tls = mtls::connect(&c.dialer, dest, Carries::Http2, labels).await?;
                let (s, c) = builder
                    .handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| Error::Upstream(addr, e))?;
                (s, futures_util::future::Either::Left(c))
            }
            None => {
                let io = TokioIo::new(c.dialer.tcp_http(addr, labels).await?);
                let (s, c) = builder
                    .handshake(io)
                    .await
                    .map_err(|e| Error::Upstream(addr, e))?;
                (s, futures_util::future::Either::Right(c))
            }
        };
        c.tracker.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%e, "shared HTTP/2 connection failed");
            }
        });
        if !self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            *slot = Some(sender.clone());
        }
        Ok(sender)
    }

    /// Sends `req` (HTTP/2-shaped) on the connection to `addr`.
    ///
    /// # Errors
    ///
    /// Those of [`SharedH2Pool::sender`], and [`Error::Upstream`] when the
    /// peer fails before answering.
    pub async fn send(
        &self,
        c: &Clients,
        mesh: Option<&MeshDestination>,
        addr: SocketAddr,
        labels: &TargetLabels,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, Error> {
        let mut sender = self.sender(c, mesh, addr, labels).await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| Error::Upstream(addr, e))
    }
}

/// A connection ready to take one request to a balanced endpoint.
pub enum Ready {
    /// An HTTP/1 connection of the shared pool (or a new one).
    H1(http1::SendRequest<ReqBody>),
    /// The endpoint's shared HTTP/2 connection.
    H2(http2::SendRequest<ReqBody>),
}

impl Ready {
    /// Connects to `ep` (or reuses a connection) for a request of
    /// `version`: meshed endpoints always get HTTP/2 over mTLS.
    ///
    /// # Errors
    ///
    /// The endpoint cannot be reached; no request was sent.
    pub async fn connect(c: &Clients, ep: &Endpoint, version: Version) -> Result<Ready, Error> {
        if ep.mesh.is_some() || version == Version::HTTP_2 {
            let pool = if ep.mesh.is_some() { &c.mesh } else { &c.h2 };
            return pool
                .sender(c, ep.mesh.as_ref(), ep.connect, &ep.labels)
                .await
                .map(Ready::H2);
        }
        while let Some(mut sender) = c.h1.take(ep.connect) {
            if sender.ready().await.is_ok() {
                return Ok(Ready::H1(sender));
            }
        }
        new_h1(c, ep.connect, &ep.labels).await.map(Ready::H1)
    }

    /// Sends `req`. A connection that closed before the request was
    /// written (an idle one the peer dropped) is replaced, twice at most:
    /// nothing was sent, so this is safe for any method.
    ///
    /// # Errors
    ///
    /// The endpoint failed before answering, or cannot be reached again.
    pub async fn send(
        self,
        c: &Clients,
        ep: &Endpoint,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, Error> {
        let addr = ep.connect;
        let mut ready = self;
        let mut req = req;
        let mut attempt = 0;
        loop {
            let unsent = match ready {
                Ready::H2(mut s) => match s.try_send_request(req).await {
                    Ok(rsp) => return Ok(rsp),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if attempt < 2 => unsent,
                        _ => return Err(Error::Upstream(addr, e.into_error())),
                    },
                },
                Ready::H1(mut s) => match s.try_send_request(req).await {
                    Ok(rsp) => {
                        c.h1.put(addr, s);
                        return Ok(rsp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if attempt < 2 => unsent,
                        _ => return Err(Error::Upstream(addr, e.into_error())),
                    },
                },
            };
            req = unsent;
            ready = match req.version() {
                // A fresh connection (the pool may hold more stale ones).
                Version::HTTP_11 | Version::HTTP_10 if ep.mesh.is_none() => {
                    Ready::H1(new_h1(c, addr, &ep.labels).await?)
                }
                v => Ready::connect(c, ep, v).await?,
            };
            attempt += 1;
        }
    }
}

async fn new_h1(
    c: &Clients,
    addr: SocketAddr,
    labels: &TargetLabels,
) -> Result<http1::SendRequest<ReqBody>, Error> {
    let io = TokioIo::new(c.dialer.tcp_http(addr, labels).await?);
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| Error::Upstream(addr, e))?;
    c.tracker.spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%e, "HTTP/1 endpoint connection failed");
        }
    });
    Ok(sender)
}
