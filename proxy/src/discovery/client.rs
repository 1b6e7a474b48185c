//! The proxy's connection to the controller's discovery API: one HTTP/2
//! connection over mTLS (the proxy presents its certificate, and the
//! controller must present its identity, as `identity.rs` checks it),
//! shared by every watch and the registration, re-established on demand.

use crate::config::IdentityConfig;
use crate::tls::{self, CredentialStore};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Time to connect and finish the TLS and HTTP/2 handshakes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PINGs on an idle connection, so that a vanished controller is
/// noticed even without a watch open.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Why a controller request failed; the variant is a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The proxy has no certificate yet (discovery needs mTLS).
    #[error("no certificate yet")]
    NoIdentity,
    /// The controller could not be reached, or the TLS/HTTP/2 handshake failed.
    #[error("controller unreachable")]
    Unreachable(#[source] std::io::Error),
    /// The controller did not answer in time.
    #[error("controller timed out")]
    Timeout,
    /// The HTTP/2 exchange failed.
    #[error("request to the controller failed")]
    Http(#[source] hyper::Error),
    /// The controller answered with an error status.
    #[error("controller refused: {0} {1}")]
    Status(u16, String),
    /// The answer could not be understood.
    #[error("invalid answer from the controller: {0}")]
    Invalid(String),
}

impl Error {
    /// A short metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Error::NoIdentity => "no_identity",
            Error::Unreachable(_) => "unreachable",
            Error::Timeout => "timeout",
            Error::Http(_) => "http",
            Error::Status(..) => "status",
            Error::Invalid(_) => "invalid",
        }
    }
}

/// The shared controller connection.
pub struct Client {
    cfg: IdentityConfig,
    creds: Arc<CredentialStore>,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

struct Conn {
    sender: http2::SendRequest<Full<Bytes>>,
    /// The local address of the connection: the pod's IP as the
    /// controller sees it, advertised when none is configured.
    local_ip: IpAddr,
}

impl Client {
    /// A client of the controller `cfg` names; connects on first use.
    pub fn new(cfg: IdentityConfig, creds: Arc<CredentialStore>) -> Client {
        Client {
            cfg,
            creds,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The identity settings (namespace, trust domain, token file).
    pub fn config(&self) -> &IdentityConfig {
        &self.cfg
    }

    /// A ready sender and the local IP, connecting when there is none.
    async fn sender(&self) -> Result<(http2::SendRequest<Full<Bytes>>, IpAddr), Error> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            if !c.sender.is_closed() {
                return Ok((c.sender.clone(), c.local_ip));
            }
        }
        let creds = self.creds.get().ok_or(Error::NoIdentity)?;
        let connect = async {
            let unreachable = Error::Unreachable;
            let tcp = tokio::net::TcpStream::connect(&self.cfg.controller_addr)
                .await
                .map_err(unreachable)?;
            let _ = tcp.set_nodelay(true);
            let local_ip = tcp.local_addr().map_err(unreachable)?.ip();
            let name = tls::server_name(&self.cfg.controller_identity, &self.cfg.trust_domain);
            let tls = tokio_rustls::TlsConnector::from(creds.client_h2.clone())
                .connect(name, tcp)
                .await
                .map_err(unreachable)?;
            let (sender, driver) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(KEEPALIVE)
                .keep_alive_timeout(KEEPALIVE)
                .keep_alive_while_idle(true)
                .handshake(TokioIo::new(tls))
                .await
                .map_err(Error::Http)?;
            tokio::spawn(async move {
                if let Err(e) = driver.await {
                    tracing::debug!(%e, "controller connection ended");
                }
            });
            Ok::<_, Error>(Conn { sender, local_ip })
        };
        let c = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| Error::Timeout)??;
        let out = (c.sender.clone(), c.local_ip);
        *conn = Some(c);
        Ok(out)
    }

    /// The local IP of the connection to the controller (connecting if needed).
    ///
    /// # Errors
    ///
    /// Those of connecting to the controller: no certificate yet,
    /// unreachable, timed out, TLS or HTTP/2 handshake failed.
    pub async fn local_ip(&self) -> Result<IpAddr, Error> {
        Ok(self.sender().await?.1)
    }

    /// Sends one request (`path_and_query` on the controller) and returns
    /// the response head and streaming body. Non-2xx answers are errors
    /// carrying the controller's `ApiError` text.
    ///
    /// # Errors
    ///
    /// Those of connecting (see [`Client::local_ip`]), [`Error::Http`]
    /// when the request fails, [`Error::Status`] for a non-2xx answer.
    pub async fn send(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, Error> {
        let (mut sender, _) = self.sender().await?;
        let req = Request::builder()
            .method(method)
            .uri(format!(
                "https://{}{path_and_query}",
                self.cfg.controller_addr
            ))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let rsp = sender.send_request(req).await.map_err(Error::Http)?;
        if rsp.status().is_success() {
            return Ok(rsp);
        }
        let status = rsp.status().as_u16();
        let body = read_limited(rsp.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let msg = serde_json::from_slice::<pimesh_api::ApiError>(&body)
            .map(|e| format!("{}: {}", e.error, e.message))
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(Error::Status(status, msg))
    }
}

/// Reads a whole body of at most `limit` bytes.
///
/// # Errors
///
/// [`Error::Invalid`] when the body fails or is longer than `limit`.
pub async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, Error> {
    use http_body_util::{BodyExt, Limited};
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Error::Invalid(e.to_string()))
}
