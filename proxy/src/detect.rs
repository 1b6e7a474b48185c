//! Protocol detection on a connection's first bytes, with a timeout, as
//! linkerd2-proxy does: HTTP/1.x request line, HTTP/2 prior-knowledge
//! preface (RFC 9113 §3.4), TLS ClientHello record (RFC 8446 §5.1), and
//! otherwise opaque TCP.

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The HTTP/2 client connection preface (RFC 9113 §3.4), 24 bytes.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest HTTP method token we wait for (the registered ones are ≤ 17).
const MAX_METHOD_LEN: usize = 24;

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.0 or HTTP/1.1 request line.
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// A TLS handshake record: passed through untouched.
    Tls,
    /// Anything else, or nothing before the timeout: forwarded as TCP.
    Opaque,
}

/// Classifies the bytes seen so far. `None` means more bytes are needed to
/// decide; once `buf.len()` reaches the detection buffer size the caller
/// treats the connection as [`Protocol::Opaque`].
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    // HTTP/2 preface, or a prefix of it: "PRI * HTTP/2.0" also looks like a
    // request line, so it is checked first.
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Some(Protocol::Http2)
        } else {
            None
        };
    }
    // TLS: a handshake record (22) with a 3.x record version.
    if buf[0] == 0x16 {
        return match buf.get(1..3) {
            None if buf.len() == 1 || buf[1] == 0x03 => None,
            Some([0x03, minor]) if *minor <= 0x04 => Some(Protocol::Tls),
            _ => Some(Protocol::Opaque),
        };
    }
    classify_http1(buf)
}

/// `METHOD SP request-target SP HTTP/1.x CRLF` (RFC 9112 §3), deciding as
/// early as a byte rules HTTP/1 out.
fn classify_http1(buf: &[u8]) -> Option<Protocol> {
    // Only the first MAX_METHOD_LEN + 1 bytes can hold the method's end.
    let head = &buf[..buf.len().min(MAX_METHOD_LEN + 1)];
    let method_len = head.iter().position(|&b| b == b' ');
    let method = &head[..method_len.unwrap_or(head.len())];
    if method.len() > MAX_METHOD_LEN || !method.iter().all(|&b| is_tchar(b)) {
        return Some(Protocol::Opaque);
    }
    let method_len = method_len?;
    if method_len == 0 {
        return Some(Protocol::Opaque);
    }
    let rest = &buf[method_len + 1..];
    let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
        // The target may hold any visible byte; control bytes rule it out.
        if rest.iter().any(|&b| b < 0x20 && b != b'\r' && b != b'\t') {
            return Some(Protocol::Opaque);
        }
        return None;
    };
    let line = rest[..eol].strip_suffix(b"\r").unwrap_or(&rest[..eol]);
    match line.iter().rposition(|&b| b == b' ') {
        Some(sp) if sp > 0 && matches!(&line[sp + 1..], b"HTTP/1.1" | b"HTTP/1.0") => {
            Some(Protocol::Http1)
        }
        _ => Some(Protocol::Opaque),
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The outcome of [`detect`]: the protocol and the bytes read to find it,
/// which must be replayed to whoever handles the connection next.
#[derive(Debug)]
pub struct Detected {
    /// What the peer speaks.
    pub protocol: Protocol,
    /// Bytes consumed from the socket during detection.
    pub buffered: BytesMut,
    /// Why detection ended without a positive match, for metrics:
    /// `Some("detect_timeout")`, `Some("detect_buffer_full")`, or `None`.
    pub fallback: Option<&'static str>,
}

/// Reads from `io` until [`classify`] decides, the peer closes, `capacity`
/// bytes are buffered, or `timeout` passes; the last three yield
/// [`Protocol::Opaque`]. No buffer is allocated until the socket is
/// readable, so idle connections cost no detection memory.
///
/// # Errors
///
/// The socket's read errors (e.g. a reset), as they are.
pub async fn detect(
    io: &mut TcpStream,
    capacity: usize,
    timeout: Duration,
) -> std::io::Result<Detected> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = BytesMut::new();
    loop {
        let read = async {
            if buf.capacity() == 0 {
                io.readable().await?;
                buf.reserve(capacity);
            }
            io.read_buf(&mut buf).await
        };
        let fallback = match tokio::time::timeout_at(deadline, read).await {
            Err(_) => "detect_timeout",
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => "detect_eof",
            Ok(Ok(_)) => {
                if let Some(protocol) = classify(&buf) {
                    return Ok(Detected {
                        protocol,
                        buffered: buf,
                        fallback: None,
                    });
                }
                if buf.len() < capacity {
                    continue;
                }
                "detect_buffer_full"
            }
        };
        return Ok(Detected {
            protocol: Protocol::Opaque,
            buffered: buf,
            fallback: Some(fallback),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_request_lines() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(
            classify(b"POST http://a/b?c HTTP/1.0\r\nHost: a\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(
            classify(b"CONNECT example.org:443 HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(classify(b"GET / HTTP/1.1\n"), Some(Protocol::Http1));
        // Incomplete: wait for more.
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET /index.html HTT"), None);
    }

    #[test]
    fn http2_preface() {
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Some(Protocol::Opaque)
        );
    }

    #[test]
    fn tls_client_hello() {
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            Some(Protocol::Tls)
        );
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(&[0x16, 0x03]), None);
        assert_eq!(classify(&[0x16, 0x09, 0x01]), Some(Protocol::Opaque));
    }

    #[test]
    fn opaque_is_decided_early() {
        assert_eq!(classify(b"\x00\x01\x02"), Some(Protocol::Opaque));
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET / SMTP/1.0\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET /\x01"), Some(Protocol::Opaque));
        assert_eq!(classify(b" GET / HTTP/1.1\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Protocol::Opaque));
    }
}
