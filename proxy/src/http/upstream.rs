//! Connections to local or unmeshed targets. Each request goes out in its
//! own HTTP version: HTTP/2 on one multiplexed connection per client
//! connection; HTTP/1 on an idle connection from a pool shared by every
//! client connection (so that idle clients hold no upstream connection),
//! retried once on a fresh connection when a pooled one closed before the
//! request was written.

use super::Error;
use crate::metrics::TargetLabels;
use crate::server::{self, Ctx};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// Idle HTTP/1 connections kept per target.
const MAX_IDLE_HTTP1: usize = 16;

/// Idle HTTP/1 connections to targets, shared by all client connections.
#[derive(Debug, Default)]
pub struct Http1Pool {
    idle: std::sync::Mutex<HashMap<SocketAddr, Vec<http1::SendRequest<Incoming>>>>,
}

impl Http1Pool {
    fn take(&self, target: SocketAddr) -> Option<http1::SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let senders = idle.get_mut(&target)?;
        let sender = senders.pop();
        if senders.is_empty() {
            idle.remove(&target);
        }
        sender
    }

    /// Keeps `sender` for a later request; it becomes ready once the
    /// current response body has been read. Closed ones are dropped.
    fn put(&self, target: SocketAddr, sender: http1::SendRequest<Incoming>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let senders = idle.entry(target).or_default();
        senders.retain(|s| !s.is_closed());
        if senders.len() >= MAX_IDLE_HTTP1 {
            senders.remove(0);
        }
        senders.push(sender);
    }
}

/// The HTTP/2 connection of one client connection.
#[derive(Default)]
pub struct Upstream {
    h2: tokio::sync::Mutex<Option<(SocketAddr, http2::SendRequest<Incoming>)>>,
}

impl Upstream {
    /// Sends `req` to `target` in `req`'s HTTP version and returns the
    /// response head and streaming body. `upgrade` requests get an HTTP/1
    /// connection of their own, which the upgrade then consumes.
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
        if req.version() == Version::HTTP_2 {
            return self.send_h2(ctx, target, labels, req).await;
        }
        let mut req = req;
        if !upgrade {
            while let Some(mut sender) = ctx.h1_pool.take(target) {
                if sender.ready().await.is_err() {
                    continue; // closed while idle
                }
                match sender.try_send_request(req).await {
                    Ok(rsp) => {
                        ctx.h1_pool.put(target, sender);
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
            ctx.h1_pool.put(target, sender);
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
            let mut cached = self.h2.lock().await;
            match &*cached {
                Some((addr, s)) if *addr == target && !s.is_closed() => s.clone(),
                _ => {
                    let io = TokioIo::new(connect(ctx, target, labels).await?);
                    let (s, conn) = http2::Builder::new(TokioExecutor::new())
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
                    *cached = Some((target, s.clone()));
                    s
                }
            }
        };
        sender
            .send_request(req)
            .await
            .map_err(|e| Error::Upstream(target, e))
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
