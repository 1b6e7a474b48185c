//! mTLS between proxies. Inbound: TLS whose SNI is this proxy's identity
//! is terminated (the client must present a mesh certificate; its identity
//! becomes `client_id`), and the ALPN tells what it carries — `h2`
//! (multiplexed HTTP), `http/1.1` (upgrades) or nothing (opaque TCP).
//! Outbound: connections to mesh destinations originate TLS 1.3 and verify
//! that the peer presents the destination's identity; HTTP rides one
//! multiplexed HTTP/2 connection per peer, HTTP/1 requests marked with
//! `pimesh-orig-proto` (as linkerd2-proxy's `l5d-orig-proto`) so that the
//! peer hands them to its app as HTTP/1 again.

use crate::config::{Config, MeshDestination};
use crate::detect::Protocol;
use crate::http::Error;
use crate::io::{MeteredIo, PrefixedIo};
use crate::metrics::{Direction, TargetLabels, Tls};
use crate::server::{self, Ctx, Target};
use crate::tls::{sni, ALPN_HTTP1};
use bytes::BytesMut;
use pimesh_api::identity::ALPN_H2;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The header carrying an HTTP/1 request's version across the HTTP/2 hop.
pub const ORIG_PROTO: &str = "pimesh-orig-proto";

/// Largest ClientHello record read to find its SNI: one TLS record.
const MAX_CLIENT_HELLO: usize = 5 + 16 * 1024;

/// Reads until the buffered ClientHello is complete and returns its SNI;
/// `None` for a ClientHello without SNI, a malformed one, or a client that
/// stops sending before the detection timeout.
pub async fn read_sni(stream: &mut TcpStream, buf: &mut BytesMut, cfg: &Config) -> Option<String> {
    let deadline = tokio::time::Instant::now() + cfg.detect_timeout;
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
pub async fn serve_inbound(
    ctx: Arc<Ctx>,
    io: PrefixedIo<TcpStream>,
    target: Target,
    label_addr: SocketAddr,
) {
    let direction = Direction::Inbound;
    let Some(creds) = ctx.creds.get() else {
        tracing::debug!("mesh TLS before this proxy has a certificate; closing");
        ctx.metrics.accept_error(direction, "no_identity");
        return;
    };
    let accept = tokio_rustls::TlsAcceptor::from(creds.server.clone()).accept(io);
    let tls = match tokio::time::timeout(ctx.config.detect_timeout, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%e, "mesh TLS handshake refused");
            ctx.metrics.accept_error(direction, "tls_handshake");
            return;
        }
        Err(_) => {
            ctx.metrics.accept_error(direction, "tls_handshake_timeout");
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
        ctx.metrics.accept_error(direction, "peer_identity");
        return;
    };
    let protocol = match session.alpn_protocol() {
        Some(ALPN_H2) => Protocol::Http2,
        Some(ALPN_HTTP1) => Protocol::Http1,
        _ => Protocol::Opaque,
    };
    let tls_label = ctx
        .metrics
        .tls_established(direction, &peer.dns_name(&creds.trust_domain));
    let labels = ctx
        .metrics
        .target(direction, &label_addr.to_string(), tls_label);
    server::dispatch(ctx, direction, tls, protocol, target, labels).await
}

/// The `tls` labels of outbound traffic to `dest`.
pub fn outbound_tls(ctx: &Ctx, dest: &MeshDestination) -> Tls {
    let td = ctx
        .config
        .identity
        .as_ref()
        .map_or(pimesh_api::DEFAULT_TRUST_DOMAIN, |i| {
            i.trust_domain.as_str()
        });
    ctx.metrics
        .tls_established(Direction::Outbound, &dest.identity.dns_name(td))
}

/// What an outbound mesh connection carries, announced by ALPN.
#[derive(Debug, Clone, Copy)]
pub enum Carries {
    /// Multiplexed HTTP (`h2`).
    Http2,
    /// One HTTP/1 exchange that upgrades (`http/1.1`).
    Http1,
    /// Opaque TCP (no ALPN).
    Opaque,
}

/// Connects to `dest`'s proxy over mTLS, verifying its identity.
///
/// Errors: no certificate yet (503), connect failures, TLS refusals.
pub async fn connect(
    ctx: &Ctx,
    dest: &MeshDestination,
    carries: Carries,
    labels: &TargetLabels,
) -> Result<TlsStream<MeteredIo<TcpStream>>, Error> {
    let creds = ctx.creds.get().ok_or(Error::NoIdentity)?;
    let tcp = crate::http::connect(ctx, dest.proxy_addr, labels).await?;
    let config = match carries {
        Carries::Http2 => creds.client_h2.clone(),
        Carries::Http1 => creds.client_h1.clone(),
        Carries::Opaque => creds.client_opaque.clone(),
    };
    let connect =
        tokio_rustls::TlsConnector::from(config).connect(creds.server_name(&dest.identity), tcp);
    match tokio::time::timeout(ctx.config.connect_timeout, connect).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(Error::Tls(dest.proxy_addr, e)),
        Err(_) => Err(Error::ConnectTimeout(dest.proxy_addr)),
    }
}

/// One multiplexed HTTP/2 connection per peer proxy, shared by every
/// client connection.
pub type Pool = crate::http::SharedH2Pool;
