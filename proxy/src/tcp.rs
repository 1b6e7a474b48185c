//! Opaque TCP forwarding: bytes both ways, untouched, with half-close
//! carried through (a FIN from one side becomes a write shutdown towards
//! the other, and the other direction keeps flowing until it closes too).

use crate::io::MeteredIo;
use crate::metrics::TargetLabels;
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
    let mut upstream = match server::connect(ctx, target, &labels).await {
        Ok(u) => u,
        Err(e) => {
            tracing::info!(%target, %e, "cannot connect to target; closing connection");
            client.conn().set_error(&e);
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => tracing::debug!(%target, sent, received, "TCP connection closed"),
        Err(e) => tracing::debug!(%target, %e, "TCP connection failed"),
    }
}
