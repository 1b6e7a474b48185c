//! Opaque TCP forwarding: bytes both ways, untouched, with half-close
//! carried through (a FIN from one side becomes a write shutdown towards
//! the other, and the other direction keeps flowing until it closes too).
//! Outbound, services known to discovery are balanced
//! (`outbound/tcp.rs`) and mesh destinations get mTLS to their proxy.

use crate::connect::mtls::{self, Carries};
use crate::ctx::Ctx;
use crate::io::{splice, MeteredIo};
use crate::metrics::{Direction, TargetLabels};
use crate::outbound::route::{self, Route};
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
        if let Route::Balanced(dst) = route::route_addr(&ctx.config, d, target).await {
            return crate::outbound::tcp::forward(&ctx.clients, &ctx.metrics, &mut client, &dst)
                .await;
        }
    }
    // Mesh destinations get mTLS to their proxy (outbound only: inbound
    // targets are the local app).
    let dest = match labels.direction {
        Direction::Outbound => ctx.config.mesh_destination(target),
        Direction::Inbound => None,
    };
    let dialer = &ctx.clients.dialer;
    if let Some(dest) = dest {
        match mtls::connect(dialer, dest, Carries::Opaque, &labels).await {
            Ok(mut upstream) => splice(&mut client, &mut upstream, target).await,
            Err(e) => {
                tracing::info!(%target, error = %crate::error_chain(&e), "cannot reach the mesh destination; closing connection");
                client.conn().set_error(&std::io::Error::other(e));
            }
        }
        return;
    }
    let mut upstream = match dialer.tcp(target, &labels).await {
        Ok(u) => u,
        Err(e) => {
            tracing::info!(%target, %e, "cannot connect to target; closing connection");
            client.conn().set_error(&e);
            return;
        }
    };
    splice(&mut client, &mut upstream, target).await
}
