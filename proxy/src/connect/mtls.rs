//! mTLS to peer proxies: connections to mesh destinations originate
//! TLS 1.3 and verify that the peer presents the destination's identity;
//! the ALPN announces what the connection carries — `h2` (multiplexed
//! HTTP), `http/1.1` (upgrades) or nothing (opaque TCP).

use super::tcp::Dialer;
use crate::config::{Config, MeshDestination};
use crate::http::error::Error;
use crate::io::MeteredIo;
use crate::metrics::{Direction, Metrics, TargetLabels, Tls};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

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
/// # Errors
///
/// [`Error::NoIdentity`] before this proxy has a certificate (503), the
/// TCP connect's errors, [`Error::Tls`] when the handshake is refused (or
/// the peer is not `dest.identity`), [`Error::ConnectTimeout`] when it
/// takes longer than the connect timeout.
pub async fn connect(
    dialer: &Dialer,
    dest: &MeshDestination,
    carries: Carries,
    labels: &TargetLabels,
) -> Result<TlsStream<MeteredIo<TcpStream>>, Error> {
    let creds = dialer.creds.get().ok_or(Error::NoIdentity)?;
    let tcp = dialer.tcp_http(dest.proxy_addr, labels).await?;
    let config = match carries {
        Carries::Http2 => creds.client_h2.clone(),
        Carries::Http1 => creds.client_h1.clone(),
        Carries::Opaque => creds.client_opaque.clone(),
    };
    let connect =
        tokio_rustls::TlsConnector::from(config).connect(creds.server_name(&dest.identity), tcp);
    match tokio::time::timeout(dialer.timeout, connect).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(Error::Tls(dest.proxy_addr, e)),
        Err(_) => Err(Error::ConnectTimeout(dest.proxy_addr)),
    }
}

/// The `tls` labels of outbound traffic to `dest`.
pub fn tls_labels(metrics: &Metrics, config: &Config, dest: &MeshDestination) -> Tls {
    let td = config
        .identity
        .as_ref()
        .map_or(pimesh_api::DEFAULT_TRUST_DOMAIN, |i| {
            i.trust_domain.as_str()
        });
    metrics.tls_established(Direction::Outbound, &dest.identity.dns_name(td))
}
