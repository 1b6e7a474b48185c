//! Opaque TCP forwarding: bytes both ways, untouched, with half-close
//! carried through (a FIN from one side becomes a write shutdown towards
//! the other, and the other direction keeps flowing until it closes too).

use crate::io::MeteredIo;
use crate::mesh;
use crate::metrics::{Direction, TargetLabels};
use crate::server::{self, Ctx};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// Forwards `client` to `target` until both directions have closed or one
/// fails. A target that cannot be reached closes the client connection
/// (its `tcp_close_total` carries the error's `errno`).
pub async fn forward<I>(
    ctx: &Ctx,
    mut client: MeteredIo<I>,
    target: SocketAddr,
    labels: TargetLabels,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    // Services known to discovery are balanced (static mesh destinations win).
    if let (Direction::Outbound, Some(d)) = (labels.direction, &ctx.discovery) {
        if let crate::outbound::Route::Balanced(dst) =
            crate::outbound::route_addr(ctx, d, target).await
        {
            return crate::outbound::tcp::forward(ctx, &mut client, &dst).await;
        }
    }
    // Mesh destinations get mTLS to their proxy (outbound only: inbound
    // targets are the local app).
    let dest = match labels.direction {
        Direction::Outbound => ctx.config.mesh_destination(target),
        Direction::Inbound => None,
    };
    if let Some(dest) = dest {
        match mesh::connect(ctx, dest, mesh::Carries::Opaque, &labels).await {
            Ok(mut upstream) => splice(&mut client, &mut upstream, target).await,
            Err(e) => {
                tracing::info!(%target, error = %crate::error_chain(&e), "cannot reach the mesh destination; closing connection");
                client.conn().set_error(&std::io::Error::other(e));
            }
        }
        return;
    }
    let mut upstream = match server::connect(ctx, target, &labels).await {
        Ok(u) => u,
        Err(e) => {
            tracing::info!(%target, %e, "cannot connect to target; closing connection");
            client.conn().set_error(&e);
            return;
        }
    };
    splice(&mut client, &mut upstream, target).await
}

/// Copies both ways until both directions closed or one failed.
pub(crate) async fn splice<A, B>(client: &mut A, upstream: &mut B, target: SocketAddr)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(client, upstream).await {
        Ok((sent, received)) => tracing::debug!(%target, sent, received, "TCP connection closed"),
        Err(e) => tracing::debug!(%target, %e, "TCP connection failed"),
    }
}
