//! One scrape: `GET /metrics` on a proxy's admin listener over plain
//! HTTP/1.1 on a new connection, bounded in time (the whole exchange) and in
//! size (the body is read up to a cap, then abandoned).

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a scrape failed; [`Error::result`] is the `result` label of
/// `pimesh_controller_scrapes_total`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No TCP connection (refused, unreachable).
    #[error("cannot connect")]
    Unreachable(#[source] std::io::Error),
    /// No complete answer within the scrape timeout.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The body is larger than the size cap, bytes.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// Not a 200 answer.
    #[error("HTTP status {0}")]
    Status(StatusCode),
    /// The HTTP exchange broke (not HTTP, reset).
    #[error("the HTTP exchange failed")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body is not the Prometheus text format (see `parse`).
    #[error("malformed metrics: {0}")]
    Malformed(String),
}

/// `result` label values of `pimesh_controller_scrapes_total`, created at
/// zero so that every series exists from the start.
pub const RESULTS: [&str; 7] = [
    "success",
    "unreachable",
    "timeout",
    "too_large",
    "http_status",
    "http_error",
    "malformed",
];

impl Error {
    /// The metric label (one of [`RESULTS`]).
    pub fn result(&self) -> &'static str {
        match self {
            Error::Unreachable(_) => "unreachable",
            Error::Timeout(_) => "timeout",
            Error::TooLarge(_) => "too_large",
            Error::Status(_) => "http_status",
            Error::Http(_) => "http_error",
            Error::Malformed(_) => "malformed",
        }
    }
}

/// `GET http://ADDR/metrics`: the body as text, within `timeout` and at
/// most `max_bytes`.
///
/// # Errors
///
/// [`Error::Unreachable`] (connect), [`Error::Http`] (the exchange),
/// [`Error::Status`] for a non-200 answer, [`Error::TooLarge`] past
/// `max_bytes`, [`Error::Malformed`] for a body that is not UTF-8,
/// [`Error::Timeout`] past `timeout`.
pub async fn fetch(addr: SocketAddr, timeout: Duration, max_bytes: usize) -> Result<String, Error> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(Error::Unreachable)?;
        let http = |e: hyper::Error| Error::Http(Box::new(e));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(http)?;
        // The connection task ends with the exchange (dropped with it on timeout).
        let conn = tokio::spawn(conn);
        let req = Request::get("/metrics")
            .header(header::HOST, addr.to_string())
            .header(header::ACCEPT, "text/plain")
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::Http(Box::new(e)))?;
        let rsp = sender.send_request(req).await.map_err(http)?;
        if rsp.status() != StatusCode::OK {
            conn.abort();
            return Err(Error::Status(rsp.status()));
        }
        let declared = rsp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes as u64) {
            conn.abort();
            return Err(Error::TooLarge(max_bytes));
        }
        let body = Limited::new(rsp.into_body(), max_bytes).collect().await;
        conn.abort();
        let bytes = match body {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(Error::TooLarge(max_bytes))
            }
            Err(e) => return Err(Error::Http(e)),
        };
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::Malformed("not UTF-8".into()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot server answering every connection with `answer` after `delay`.
    async fn server(answer: Vec<u8>, delay: Duration) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = s.write_all(&answer).await;
                });
            }
        });
        addr
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn fetches_and_bounds() {
        let t = Duration::from_secs(2);
        let a = server(ok("request_total 1\n"), Duration::ZERO).await;
        assert_eq!(fetch(a, t, 1024).await.unwrap(), "request_total 1\n");
        let e = fetch(a, t, 4).await.unwrap_err();
        assert_eq!(e.result(), "too_large");
        // A chunked body without a length is cut at the cap too.
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..64 {
            chunked.extend_from_slice(b"400\r\n");
            chunked.extend_from_slice(&[b'#'; 0x400]);
            chunked.extend_from_slice(b"\r\n");
        }
        let a = server(chunked, Duration::ZERO).await;
        assert_eq!(fetch(a, t, 4096).await.unwrap_err().result(), "too_large");
        let a = server(ok("x"), Duration::from_secs(5)).await;
        let e = fetch(a, Duration::from_millis(200), 1024)
            .await
            .unwrap_err();
        assert_eq!(e.result(), "timeout");
        let a = server(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            Duration::ZERO,
        )
        .await;
        assert_eq!(fetch(a, t, 1024).await.unwrap_err().result(), "http_status");
        let a = server(b"SSH-2.0-OpenSSH\r\n".to_vec(), Duration::ZERO).await;
        assert_eq!(fetch(a, t, 1024).await.unwrap_err().result(), "http_error");
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(
            fetch(closed, t, 1024).await.unwrap_err().result(),
            "unreachable"
        );
    }
}
