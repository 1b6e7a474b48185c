//! Inbound: a connection redirected to one of the pod's ports, after
//! detection. TLS whose SNI is this proxy's identity is mesh mTLS: it is
//! terminated (the client must present a mesh certificate; its identity
//! becomes `client_id`), and the ALPN tells what it carries — `h2`
//! (multiplexed HTTP), `http/1.1` (upgrades) or nothing (opaque TCP).
//! Other TLS is the app's own and passes through. Ports in
//! `PIMESH_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY` take mesh mTLS only.
//! Then the port's policy decides (`authz`: the `Server` the controller's
//! policy stream gives the port, else the default policy; the client's
//! identity, if any, and source address): an opaque connection it refuses
//! is closed before the app sees a byte; HTTP requests are answered 403
//! per request. Plaintext HTTP to a port whose Server says
//! `proxyProtocol: opaque` is forwarded as opaque bytes. Then the
//! connection is forwarded to the local app.

use crate::authz::Authz;
use crate::ctx::Ctx;
use crate::detect::Protocol;
use crate::forward::{dispatch, resume, ParkedTcp};
use crate::io::PrefixedIo;
use crate::metrics::{Direction, Tls};
use crate::target::Target;
use crate::tls::{sni, ALPN_HTTP1};
use bytes::BytesMut;
use pimesh_api::identity::ALPN_H2;
use pimesh_api::policy::inbound::Protocol as ServerProtocol;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest ClientHello record read to find its SNI: one TLS record.
const MAX_CLIENT_HELLO: usize = 5 + 16 * 1024;

const DIRECTION: Direction = Direction::Inbound;

/// Serves an inbound connection whose first bytes (`prefix`) were read by
/// detection as `protocol`; `label_addr` is the port as addressed. A
/// plaintext HTTP/1 connection that parks between requests is returned
/// (see [`dispatch`]).
pub async fn serve(
    ctx: Arc<Ctx>,
    mut stream: TcpStream,
    mut prefix: BytesMut,
    protocol: Protocol,
    target: Target,
    label_addr: SocketAddr,
) -> Option<ParkedTcp> {
    let cfg = &ctx.config;
    // Unknown (the socket is gone): outside every network.
    let source = stream
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let requires_identity = cfg.requires_identity(label_addr.port());
    if protocol == Protocol::Tls {
        if let Some(id) = &cfg.identity {
            let name = id.identity.dns_name(&id.trust_domain);
            // Boxed, as detection: its timer is not kept for the connection's life.
            match Box::pin(read_sni(&mut stream, &mut prefix, cfg.detect_timeout)).await {
                Some(sni) if sni == name => {
                    let io = PrefixedIo::new(prefix.freeze(), stream);
                    // Boxed: idle connections waiting in detection then
                    // cost only the detection state, not the largest one.
                    Box::pin(terminate(ctx, io, target, label_addr, source)).await;
                    return None;
                }
                _ if requires_identity => {
                    ctx.metrics.accept_error(DIRECTION, "identity_required");
                    return None;
                }
                _ => {} // the app's own TLS: passed through
            }
        }
    } else if requires_identity {
        tracing::debug!(
            port = label_addr.port(),
            "plaintext on a port that requires identity; closing"
        );
        ctx.metrics.accept_error(DIRECTION, "identity_required");
        return None;
    }
    let labels = ctx.metrics.target(
        DIRECTION,
        &label_addr.to_string(),
        Tls::plaintext(DIRECTION),
    );
    let mut protocol = protocol;
    let authz = authorize(
        &ctx,
        &labels,
        &mut protocol,
        label_addr.port(),
        None,
        source,
    )?;
    let io = PrefixedIo::new(prefix.freeze(), stream);
    Box::pin(dispatch(
        ctx, DIRECTION, io, protocol, target, labels, authz,
    ))
    .await
}

/// The verdict of `port`'s policy on a client with the mesh `identity`
/// (its DNS-style name, when it presented one) from `source`. A plaintext
/// HTTP `protocol` becomes opaque when the port's Server says so. An
/// opaque connection is counted here and refused (`None`: close it); HTTP
/// gets the verdict to apply per request (`Some(Some(authz))`).
fn authorize(
    ctx: &Ctx,
    labels: &crate::metrics::TargetLabels,
    protocol: &mut Protocol,
    port: u16,
    identity: Option<&str>,
    source: IpAddr,
) -> Option<Option<Authz>> {
    let policies = &ctx.inbound_policies;
    let authz = Authz::decide(
        policies,
        port,
        &ctx.config.cluster_networks,
        identity,
        source,
    );
    if authz.server.spec.protocol == ServerProtocol::Opaque && identity.is_none() {
        *protocol = Protocol::Opaque;
    }
    if matches!(*protocol, Protocol::Http1 | Protocol::Http2) {
        return Some(Some(authz));
    }
    ctx.metrics.authz().record(labels, &authz, false);
    if authz.allowed {
        Some(Some(authz))
    } else {
        tracing::debug!(%source, policy = %authz.describe(), "TCP connection refused by the policy");
        None
    }
}

/// Reads until the buffered ClientHello is complete and returns its SNI;
/// `None` for a ClientHello without SNI, a malformed one, or a client that
/// stops sending within `timeout` (the detection timeout).
async fn read_sni(stream: &mut TcpStream, buf: &mut BytesMut, timeout: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match sni::parse(buf) {
            sni::Parsed::ServerName(name) => return name,
            sni::Parsed::Invalid => return None,
            sni::Parsed::Incomplete if buf.len() >= MAX_CLIENT_HELLO => return None,
            sni::Parsed::Incomplete => {
                buf.reserve(1024);
                match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return None,
                }
            }
        }
    }
}

/// Terminates mesh TLS on an inbound connection and serves what it carries.
async fn terminate(
    ctx: Arc<Ctx>,
    io: PrefixedIo<TcpStream>,
    target: Target,
    label_addr: SocketAddr,
    source: IpAddr,
) {
    let Some(creds) = ctx.creds.get() else {
        tracing::debug!("mesh TLS before this proxy has a certificate; closing");
        ctx.metrics.accept_error(DIRECTION, "no_identity");
        return;
    };
    let accept = tokio_rustls::TlsAcceptor::from(creds.server.clone()).accept(io);
    let tls = match tokio::time::timeout(ctx.config.detect_timeout, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%e, "mesh TLS handshake refused");
            ctx.metrics.accept_error(DIRECTION, "tls_handshake");
            return;
        }
        Err(_) => {
            ctx.metrics.accept_error(DIRECTION, "tls_handshake_timeout");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    let peer = session
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::tls::peer_identity(c, &creds.trust_domain));
    let Some(peer) = peer else {
        // Verified by the anchors, but no SPIFFE ID of our trust domain.
        ctx.metrics.accept_error(DIRECTION, "peer_identity");
        return;
    };
    let protocol = match session.alpn_protocol() {
        Some(ALPN_H2) => Protocol::Http2,
        Some(ALPN_HTTP1) => Protocol::Http1,
        _ => Protocol::Opaque,
    };
    let peer_name = peer.dns_name(&creds.trust_domain);
    let tls_label = ctx.metrics.tls_established(DIRECTION, &peer_name);
    let labels = ctx
        .metrics
        .target(DIRECTION, &label_addr.to_string(), tls_label);
    let mut protocol = protocol;
    let Some(authz) = authorize(
        &ctx,
        &labels,
        &mut protocol,
        label_addr.port(),
        Some(&peer_name),
        source,
    ) else {
        return;
    };
    // TLS never parks (`Park::can_park`); kept served all the same.
    if let Some(parked) = dispatch(ctx, DIRECTION, tls, protocol, target, labels, authz).await {
        resume(parked).await;
    }
}
