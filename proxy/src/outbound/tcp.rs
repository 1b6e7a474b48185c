//! Opaque TCP to balanced services: one endpoint per connection (p2c over
//! connect latency, circuit breaking on connect failures, fail-over to
//! another endpoint when connecting fails), and the
//! `PIMESH_PROXY_TCP_UPSTREAMS` listeners whose connections all go to one
//! named service (apps without HTTP or iptables, standalone mode).

use super::dst::{count_transition, Dst};
use super::route::Route;
use crate::config::TcpUpstream;
use crate::connect::mtls::{self, Carries};
use crate::connect::pool::Clients;
use crate::ctx::Ctx;
use crate::discovery::key::DstKey;
use crate::io::{self, MeteredIo};
use crate::metrics::{Direction, Metrics, Peer, TcpLabels, Tls};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Endpoints tried per connection before it is closed.
const MAX_ATTEMPTS: usize = 3;

/// Forwards `client` to one of `dst`'s endpoints until both directions
/// closed. When no endpoint can be reached the client connection is
/// closed, its `tcp_close_total` carrying the error.
pub async fn forward<I>(clients: &Clients, metrics: &Metrics, client: &mut MeteredIo<I>, dst: &Dst)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut avoid = None;
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            metrics.outbound().failover();
        }
        let mut picked = match dst.balancer.pick_connection(avoid.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(dst = %dst.name, %e, "no endpoint to connect to; closing connection");
                client.conn().set_error(&std::io::Error::other(e));
                return;
            }
        };
        let ep = picked.endpoint.clone();
        let connected: Result<Box<dyn Io>, std::io::Error> = match &ep.mesh {
            Some(dest) => mtls::connect(&clients.dialer, dest, Carries::Opaque, &ep.labels)
                .await
                .map(|tls| Box::new(tls) as Box<dyn Io>)
                .map_err(std::io::Error::other),
            None => clients
                .dialer
                .tcp(ep.connect, &ep.labels)
                .await
                .map(|tcp| Box::new(tcp) as Box<dyn Io>),
        };
        picked.responded();
        let probe = picked.probe;
        match connected {
            Ok(mut upstream) => {
                let _open = ep.open_connection();
                count_transition(metrics, picked.success(), probe);
                io::splice(client, &mut upstream, ep.addr).await;
                return;
            }
            Err(e) => {
                tracing::info!(endpoint = %ep.addr, error = %crate::error_chain(&e), "cannot connect to endpoint");
                count_transition(metrics, picked.failure(), probe);
                if attempt + 1 == MAX_ATTEMPTS {
                    client.conn().set_error(&e);
                }
                avoid = Some(ep);
            }
        }
    }
}

/// A byte stream to an endpoint (plain TCP or mTLS).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Accepts connections on a `PIMESH_PROXY_TCP_UPSTREAMS` listener until
/// shutdown; each goes to the upstream's service.
pub async fn serve_upstream(ctx: Arc<Ctx>, listener: TcpListener, upstream: TcpUpstream) {
    let upstream = Arc::new(upstream);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let (ctx2, up) = (ctx.clone(), upstream.clone());
                ctx.tracker
                    .spawn(async move { upstream_connection(ctx2, stream, &up).await });
            }
            Err(e) => {
                tracing::warn!(%e, "TCP upstream accept failed");
                ctx.metrics.accept_error(Direction::Outbound, "accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn upstream_connection(ctx: Arc<Ctx>, stream: TcpStream, upstream: &TcpUpstream) {
    let _ = stream.set_nodelay(true);
    let Some(d) = ctx.discovery.clone() else {
        return;
    };
    let key = DstKey::Name(upstream.service.clone(), upstream.port);
    let route = match d.resolve(&key).await {
        crate::discovery::Resolved::Answered(dst) if dst.exists => Route::Balanced(dst),
        crate::discovery::Resolved::Answered(_) => Route::Passthrough,
        crate::discovery::Resolved::Unavailable(reason) => {
            ctx.metrics.accept_error(Direction::Outbound, reason);
            tracing::info!(dst = %key, reason, "cannot resolve the TCP upstream; closing");
            return;
        }
    };
    let Route::Balanced(dst) = route else {
        ctx.metrics
            .accept_error(Direction::Outbound, "unknown_service");
        tracing::info!(dst = %key, "unknown service for the TCP upstream; closing");
        return;
    };
    // The accepted side: the service as addressed, with its `dst_*` labels.
    let mut labels = ctx.metrics.target(
        Direction::Outbound,
        &key.to_string(),
        Tls::plaintext(Direction::Outbound),
    );
    labels.dst = dst.labels.dst.clone();
    let conn = ctx.metrics.tcp_open(TcpLabels {
        target: labels,
        peer: Peer::Src,
    });
    let mut io = MeteredIo::new(stream, conn.clone());
    tokio::select! {
        _ = forward(&ctx.clients, &ctx.metrics, &mut io, &dst) => {}
        _ = io::idle(&conn, ctx.config.idle_timeout) => {
            ctx.metrics.accept_error(Direction::Outbound, "idle_timeout");
        }
    }
}
