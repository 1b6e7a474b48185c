//! Connections from one client connection to its target(s), in the
//! client's protocol: HTTP/2 multiplexes every stream on one connection;
//! HTTP/1 keeps the last idle connection for the next request (a client
//! connection sends one request at a time), and retries a request once on
//! a fresh connection when a kept one closed before the request was sent.

use super::Error;
use crate::detect::Protocol;
use crate::metrics::TargetLabels;
use crate::server::{self, Ctx};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// A handle to send requests on one connection.
enum Sender {
    H1(http1::SendRequest<Incoming>),
    H2(http2::SendRequest<Incoming>),
}

/// The cached connection to the last target, for reuse.
pub struct Upstream {
    protocol: Protocol,
    cached: tokio::sync::Mutex<Option<(SocketAddr, Sender)>>,
}

impl Upstream {
    /// No connection yet; requests will use `protocol` (the client's).
    pub fn new(protocol: Protocol) -> Self {
        Upstream {
            protocol,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `req` to `target` and returns its response head and streaming
    /// body. `upgrade` requests get a connection of their own, which the
    /// upgrade then consumes.
    ///
    /// Errors: connect failures and a target that fails before answering.
    pub async fn send(
        &self,
        ctx: &Ctx,
        target: SocketAddr,
        labels: &TargetLabels,
        req: Request<Incoming>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, Error> {
        if self.protocol == Protocol::Http2 {
            return self.send_h2(ctx, target, labels, req).await;
        }
        let mut req = req;
        if !upgrade {
            let cached = self.cached.lock().await.take();
            if let Some((addr, Sender::H1(mut sender))) = cached.filter(|(a, _)| *a == target) {
                if sender.ready().await.is_ok() {
                    match sender.try_send_request(req).await {
                        Ok(rsp) => {
                            *self.cached.lock().await = Some((addr, Sender::H1(sender)));
                            return Ok(rsp);
                        }
                        Err(mut e) => match e.take_message() {
                            // Never written: safe to send on a new connection.
                            Some(unsent) => req = unsent,
                            None => return Err(Error::Upstream(target, e.into_error())),
                        },
                    }
                }
            }
        }
        let io = TokioIo::new(connect(ctx, target, labels).await?);
        let (mut sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Error::Upstream(target, e))?;
        ctx.tracker.spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%e, "HTTP/1 target connection failed");
            }
        });
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Upstream(target, e))?;
        if !upgrade {
            *self.cached.lock().await = Some((target, Sender::H1(sender)));
        }
        Ok(rsp)
    }

    async fn send_h2(
        &self,
        ctx: &Ctx,
        target: SocketAddr,
        labels: &TargetLabels,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, Error> {
        let mut sender = {
            let mut cached = self.cached.lock().await;
            match &*cached {
                Some((addr, Sender::H2(s))) if *addr == target && !s.is_closed() => s.clone(),
                _ => {
                    let s = self.connect_h2(ctx, target, labels).await?;
                    *cached = Some((target, Sender::H2(s.clone())));
                    s
                }
            }
        };
        sender
            .send_request(req)
            .await
            .map_err(|e| Error::Upstream(target, e))
    }

    async fn connect_h2(
        &self,
        ctx: &Ctx,
        target: SocketAddr,
        labels: &TargetLabels,
    ) -> Result<http2::SendRequest<Incoming>, Error> {
        let io = TokioIo::new(connect(ctx, target, labels).await?);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(super::H2_STREAM_WINDOW)
            .initial_connection_window_size(super::H2_CONN_WINDOW)
            .max_send_buf_size(super::H2_MAX_SEND_BUF)
            .handshake(io)
            .await
            .map_err(|e| Error::Upstream(target, e))?;
        ctx.tracker.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%e, "HTTP/2 target connection failed");
            }
        });
        Ok(sender)
    }
}

/// A TCP connection to `target`, as an HTTP error when it fails.
pub async fn connect(
    ctx: &Ctx,
    target: SocketAddr,
    labels: &TargetLabels,
) -> Result<crate::io::MeteredIo<TcpStream>, Error> {
    server::connect(ctx, target, labels).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Error::ConnectTimeout(target)
        } else {
            Error::Connect(target, e)
        }
    })
}
