//! Forward: a connection whose target and protocol are known is served
//! as HTTP (`http`: each request forwarded) or opaque TCP (`tcp`) until it
//! ends or idles out (`PIMESH_PROXY_IDLE_TIMEOUT`).

use crate::authz::Authz;
use crate::ctx::Ctx;
use crate::detect::Protocol;
use crate::http::park::Park;
use crate::http::Parked;
use crate::io::{idle, MeteredIo, PrefixedIo};
use crate::metrics::{Direction, Peer, TargetLabels, TcpLabels};
use crate::target::Target;
use crate::{http, tcp};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A plain TCP connection parked between HTTP/1 requests.
pub type ParkedTcp = Parked<MeteredIo<PrefixedIo<tokio::net::TcpStream>>>;

/// Serves a connection whose protocol is known, until it ends or idles
/// out, or (HTTP/1 over a plain socket) until it parks between requests:
/// then it is returned, for the connection's task to keep waiting with
/// [`resume`] and nothing else. `authz` is an inbound connection's
/// verdict, applied to each HTTP request (opaque connections are decided
/// before they get here).
pub async fn dispatch<I>(
    ctx: Arc<Ctx>,
    direction: Direction,
    io: I,
    protocol: Protocol,
    target: Target,
    labels: TargetLabels,
    authz: Option<Authz>,
) -> Option<Parked<MeteredIo<I>>>
where
    I: AsyncRead + AsyncWrite + Park + Unpin + Send + 'static,
{
    let conn = ctx.metrics.tcp_open(TcpLabels {
        target: labels.clone(),
        peer: Peer::Src,
    });
    let io = MeteredIo::new(io, conn.clone());
    // Boxed: the largest state of either is freed when it ends.
    let serve = async {
        match (protocol, target) {
            (Protocol::Http1 | Protocol::Http2, _) => {
                Box::pin(http::serve(
                    &ctx, direction, io, protocol, target, labels, authz,
                ))
                .await
            }
            (_, Target::Fixed(addr)) => {
                Box::pin(tcp::forward(&ctx, io, addr, labels)).await;
                None
            }
            (_, Target::Explicit(_)) => {
                ctx.metrics.accept_error(direction, "no_target");
                tracing::debug!("non-HTTP connection in explicit proxy mode; closing");
                None
            }
        }
    };
    tokio::select! {
        parked = serve => parked,
        _ = idle(&conn, ctx.config.idle_timeout) => {
            idled_out(&ctx, direction);
            None
        }
    }
}

/// Keeps a parked HTTP/1 connection (from [`dispatch`]): waits for its
/// next bytes, serves it until it parks again, and so on until it ends or
/// idles out (`PIMESH_PROXY_IDLE_TIMEOUT`, parked or not). While parked
/// this future holds the connection, its idle timer and a few words; each
/// serving round is boxed and freed when it parks.
pub async fn resume<I>(mut parked: Parked<MeteredIo<I>>)
where
    I: AsyncRead + AsyncWrite + Park + Unpin + Send + 'static,
{
    let (ctx, direction) = (parked.ctx().clone(), parked.direction());
    let conn = parked.io().conn().clone();
    let idle = idle(&conn, ctx.config.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            ready = parked.readable() => if !ready {
                return;
            },
            _ = &mut idle => return idled_out(&ctx, direction),
        }
        tokio::select! {
            next = Box::pin(parked.serve()) => match next {
                Some(next) => parked = next,
                None => return,
            },
            _ = &mut idle => return idled_out(&ctx, direction),
        }
    }
}

/// Counts and logs a connection closed by the idle timeout.
fn idled_out(ctx: &Ctx, direction: Direction) {
    tracing::debug!(?direction, "idle timeout; closing");
    ctx.metrics.accept_error(direction, "idle_timeout");
}
