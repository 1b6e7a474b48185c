//! Outbound: the app's connections, transparent (the original
//! destination) or explicit HTTP proxy, after detection. Mesh
//! destinations are labelled with their identity's `tls`; then the
//! connection is forwarded (`forward`): each HTTP request, or the TCP
//! connection, is routed, balanced and connected by the parts below.
//!
//! Layout, in the order a request meets them: `route` (where it goes,
//! with discovery), `loop_guard` (explicit mode never targets the proxy
//! itself), `http_route` (a service's HTTPRoutes: the matching rule, a
//! backend by weight, the rule's timeouts and retries; its `table` is the
//! routes as a `Dst` holds them), `balanced` (an HTTP request to a service, a try per
//! endpoint), `retry` (the retry budget), `tcp` (balanced opaque TCP and the
//! `PIMESH_PROXY_TCP_UPSTREAMS` listeners); beside them `dst` (a watched
//! destination's balancer and labels) and `policy` (its resilience
//! settings).

pub mod balanced;
pub mod dst;
pub mod http_route;
pub mod loop_guard;
pub mod policy;
pub mod retry;
pub mod route;
pub mod tcp;

use crate::connect::mtls;
use crate::ctx::Ctx;
use crate::detect::Protocol;
use crate::forward::{dispatch, ParkedTcp};
use crate::io::PrefixedIo;
use crate::metrics::{Direction, Tls};
use crate::target::Target;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Serves an outbound connection whose protocol is known; `label_addr`
/// is the destination as addressed (the listener's own in explicit mode).
pub async fn serve(
    ctx: Arc<Ctx>,
    io: PrefixedIo<TcpStream>,
    protocol: Protocol,
    target: Target,
    label_addr: SocketAddr,
) -> Option<ParkedTcp> {
    let direction = Direction::Outbound;
    let tls = match target {
        Target::Fixed(addr) => match ctx.config.mesh_destination(addr) {
            Some(dest) => mtls::tls_labels(&ctx.metrics, &ctx.config, dest),
            None => Tls::plaintext(direction),
        },
        Target::Explicit(_) => Tls::plaintext(direction),
    };
    let labels = ctx.metrics.target(direction, &label_addr.to_string(), tls);
    dispatch(ctx, direction, io, protocol, target, labels, None).await
}
