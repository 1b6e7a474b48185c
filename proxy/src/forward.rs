//! Forward: a connection whose target and protocol are known is served
//! as HTTP (`http`: each request forwarded) or opaque TCP (`tcp`) until it
//! ends or idles out (`PIMESH_PROXY_IDLE_TIMEOUT`).

use crate::authz::Authz;
use crate::ctx::Ctx;
use crate::detect::Protocol;
use crate::io::{idle, MeteredIo};
use crate::metrics::{Direction, Peer, TargetLabels, TcpLabels};
use crate::target::Target;
use crate::{http, tcp};
use std::sync::Arc;

/// Serves a connection whose protocol is known, until it ends or idles out.
/// `authz` is an inbound connection's verdict, applied to each HTTP request
/// (opaque connections are decided before they get here).
pub async fn dispatch<I>(
    ctx: Arc<Ctx>,
    direction: Direction,
    io: I,
    protocol: Protocol,
    target: Target,
    labels: TargetLabels,
    authz: Option<Authz>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + http::park::Park + Unpin + Send + 'static,
{
    let conn = ctx.metrics.tcp_open(TcpLabels {
        target: labels.clone(),
        peer: Peer::Src,
    });
    let io = MeteredIo::new(io, conn.clone());
    // Boxed: a parked HTTP/1 connection's task then holds only what it
    // needs while parked, not the size of the largest state of either.
    let serve = async {
        match (protocol, target) {
            (Protocol::Http1 | Protocol::Http2, _) => {
                Box::pin(http::serve(
                    &ctx, direction, io, protocol, target, labels, authz,
                ))
                .await
            }
            (_, Target::Fixed(addr)) => Box::pin(tcp::forward(&ctx, io, addr, labels)).await,
            (_, Target::Explicit(_)) => {
                ctx.metrics.accept_error(direction, "no_target");
                tracing::debug!("non-HTTP connection in explicit proxy mode; closing");
            }
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = idle(&conn, ctx.config.idle_timeout) => {
            tracing::debug!(?direction, "idle timeout; closing");
            ctx.metrics.accept_error(direction, "idle_timeout");
        }
    }
}
