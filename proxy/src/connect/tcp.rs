//! Plain TCP connections, within the connect timeout and counted in the
//! `peer="dst"` TCP series.

use crate::http::error::Error;
use crate::io::MeteredIo;
use crate::metrics::{Metrics, Peer, TargetLabels, TcpLabels};
use crate::tls::CredentialStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// What opening a connection uses.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// `PIMESH_PROXY_CONNECT_TIMEOUT`: TCP connect, and the mTLS handshake.
    pub timeout: Duration,
    /// Where each connection is counted.
    pub metrics: Arc<Metrics>,
    /// The proxy's certificate, presented to peer proxies.
    pub creds: Arc<CredentialStore>,
}

impl Dialer {
    /// Opens a TCP connection to `addr` within the connect timeout, counted
    /// in the `peer="dst"` TCP series under `labels`.
    ///
    /// # Errors
    ///
    /// `TimedOut` after the connect timeout, else the OS error of the
    /// connect.
    pub async fn tcp(
        &self,
        addr: SocketAddr,
        labels: &TargetLabels,
    ) -> std::io::Result<MeteredIo<TcpStream>> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = stream.set_nodelay(true);
        let conn = self.metrics.tcp_open(TcpLabels {
            target: labels.clone(),
            peer: Peer::Dst,
        });
        Ok(MeteredIo::new(stream, conn))
    }

    /// [`Dialer::tcp`] for HTTP: a failure is the request's error.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectTimeout`] after the connect timeout, else
    /// [`Error::Connect`] with the OS error.
    pub async fn tcp_http(
        &self,
        addr: SocketAddr,
        labels: &TargetLabels,
    ) -> Result<MeteredIo<TcpStream>, Error> {
        self.tcp(addr, labels).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                Error::ConnectTimeout(addr)
            } else {
                Error::Connect(addr, e)
            }
        })
    }
}
