//! A minimal HTTP/1.1 client for the controller's operator API, used by
//! the `pimesh` CLI: `--controller http://HOST[:PORT]`, JSON bodies, and
//! `ApiError` answers turned into [`Error::Api`].

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use pimesh_api::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// The operator API when nothing else is said (DESIGN.md "Interfaces").
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:8085";
/// Time for one whole exchange.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read, bytes (the certificate list can be long).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A request to the controller that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--controller` is not an `http://` URL.
    #[error("invalid --controller {0:?}: expected http://HOST[:PORT]")]
    BadUrl(String),
    /// No connection.
    #[error("cannot reach the controller at {url} (is `pimesh controller` running? set --controller or PIMESH_CONTROLLER)")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("the controller at {url} did not answer within {}s", TIMEOUT.as_secs())]
    Timeout {
        /// The URL.
        url: String,
    },
    /// The HTTP exchange broke.
    #[error("the HTTP exchange with the controller at {url} failed")]
    Http {
        /// The URL.
        url: String,
        /// hyper's reason.
        #[source]
        source: hyper::Error,
    },
    /// The controller refused, with an `ApiError`.
    #[error("the controller refused: {message} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// `ApiError.error`.
        code: String,
        /// `ApiError.message`.
        message: String,
    },
    /// A non-2xx answer without an `ApiError`, or an undecodable one.
    #[error("unexpected answer from the controller: HTTP {status}: {body}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// The body, lossily.
        body: String,
    },
}

/// A client for one controller.
#[derive(Debug, Clone)]
pub struct Client {
    /// The URL as given, for messages.
    url: String,
    /// `HOST:PORT` to connect to and to send as `Host`.
    authority: String,
}

impl Client {
    /// A client for `url` (`http://HOST[:PORT]`, port 80 when omitted).
    ///
    /// # Errors
    ///
    /// [`Error::BadUrl`] when `url` is not `http://HOST[:PORT]`.
    pub fn new(url: &str) -> Result<Client, Error> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| Error::BadUrl(url.into()))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(Error::BadUrl(url.into()));
        }
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Client {
            url: url.to_string(),
            authority,
        })
    }

    /// The controller's URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `method path` with `body` as JSON; the answer decoded as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Timeout`], [`Error::Http`] when the
    /// exchange fails; [`Error::Api`] for a non-2xx answer (its `ApiError`);
    /// [`Error::Unexpected`] when the answer is not the JSON of a `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let body = match body {
            Some(b) => serde_json::to_vec(b).unwrap_or_default(),
            None => Vec::new(),
        };
        let (status, bytes) = self.exchange(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|_| Error::Unexpected {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// `GET path` as text.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; [`Error::Unexpected`] when the answer is not UTF-8.
    pub async fn text(&self, path: &str) -> Result<String, Error> {
        let (status, bytes) = self.exchange(Method::GET, path, Vec::new()).await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| Error::Unexpected {
            status: status.as_u16(),
            body: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// One exchange on a new connection; non-2xx answers become errors.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|source| Error::Unreachable {
                    url: self.url.clone(),
                    source,
                })?;
            let http = |source| Error::Http {
                url: self.url.clone(),
                source,
            };
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(http)?;
            tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, &self.authority);
            if !body.is_empty() {
                req = req.header(header::CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(body)))
                .map_err(|_| Error::BadUrl(self.url.clone()))?;
            let rsp = sender.send_request(req).await.map_err(http)?;
            let status = rsp.status();
            let bytes = Limited::new(rsp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| Error::Unexpected {
                    status: status.as_u16(),
                    body: e.to_string(),
                })?
                .to_bytes();
            Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Timeout {
                url: self.url.clone(),
            })??;
        if status.is_success() {
            return Ok((status, bytes));
        }
        Err(refusal(status, &bytes))
    }

    /// `GET path` answered with a stream of lines (NDJSON): `on_line` gets
    /// each line, without its newline, until it returns `false` or the
    /// stream ends. Only connecting and the answer's head are timed.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; a line longer than 1 MiB ends the stream as
    /// [`Error::Unexpected`].
    pub async fn lines(
        &self,
        path: &str,
        mut on_line: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), Error> {
        const MAX_LINE: usize = 1024 * 1024;
        let http = |source| Error::Http {
            url: self.url.clone(),
            source,
        };
        let head = async {
            let tcp = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|source| Error::Unreachable {
                    url: self.url.clone(),
                    source,
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(http)?;
            tokio::spawn(conn);
            let req = Request::get(path)
                .header(header::HOST, &self.authority)
                .body(Full::new(Bytes::new()))
                .map_err(|_| Error::BadUrl(self.url.clone()))?;
            sender.send_request(req).await.map_err(http)
        };
        let rsp = tokio::time::timeout(TIMEOUT, head)
            .await
            .map_err(|_| Error::Timeout {
                url: self.url.clone(),
            })??;
        let status = rsp.status();
        let mut body = rsp.into_body();
        if !status.is_success() {
            let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(refusal(status, &bytes));
        }
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(http)?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
                if !on_line(&buf[start..start + nl]) {
                    return Ok(());
                }
                start += nl + 1;
            }
            buf.drain(..start);
            if buf.len() > MAX_LINE {
                return Err(Error::Unexpected {
                    status: status.as_u16(),
                    body: format!("a line longer than {MAX_LINE} bytes"),
                });
            }
        }
        Ok(())
    }
}

/// The error a non-2xx answer stands for: its `ApiError`, else the body.
fn refusal(status: StatusCode, bytes: &[u8]) -> Error {
    match serde_json::from_slice::<ApiError>(bytes) {
        Ok(e) => Error::Api {
            status: status.as_u16(),
            code: e.error,
            message: e.message,
        },
        Err(_) => Error::Unexpected {
            status: status.as_u16(),
            body: String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = |u: &str| Client::new(u).map(|c| c.authority);
        assert_eq!(a("http://127.0.0.1:8085").unwrap(), "127.0.0.1:8085");
        assert_eq!(a("http://127.0.0.1:8085/").unwrap(), "127.0.0.1:8085");
        assert_eq!(a("http://pimesh").unwrap(), "pimesh:80");
        assert_eq!(a("http://[::1]:8085").unwrap(), "[::1]:8085");
        assert_eq!(a("http://[::1]").unwrap(), "[::1]:80");
        for bad in [
            "127.0.0.1:8085",
            "https://x:1",
            "http://",
            "http://a/b",
            "http://u@h:1",
        ] {
            assert!(matches!(a(bad), Err(Error::BadUrl(_))), "{bad}");
        }
    }

    #[tokio::test]
    async fn unreachable_controller_is_a_clear_error() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = c.text("/v1/identity/trust-anchors").await.unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
        assert!(
            e.to_string().contains("is `pimesh controller` running?"),
            "{e}"
        );
    }
}
