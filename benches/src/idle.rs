//! The idle-connection figures: N connections to a proxy's inbound
//! listener, each sending one request and reading its response, then kept
//! open and silent. HTTP/1.1: a keep-alive connection between requests,
//! the common idle state of a meshed app's pool. HTTP/2 (h2c): a
//! connection with no open stream, as a gRPC channel holds between calls.
//! Plus the file-descriptor limit that needs.

use crate::config::Protocol;
use crate::load::{self, Target};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections opened at once while building up.
const PARALLEL: usize = 128;

/// One idle connection, closed when dropped.
pub enum Idle {
    /// The HTTP/1.1 connection's socket.
    H1(TcpStream),
    /// The HTTP/2 connection's request handle; its driver task closes the
    /// connection once this is dropped.
    H2(load::Sender),
}

/// The open connections (closed on drop) and how the build-up went.
pub struct IdleConns {
    pub conns: Vec<Idle>,
    /// Connections that failed to open or to get their response.
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Opens `n` connections to `target.connect` in `target.protocol`, each
/// doing one `GET` of `target.uri` and reading its `target.payload`-byte
/// response, [`PARALLEL`] at a time; each has 10 s.
pub async fn open(target: &Target, n: usize) -> IdleConns {
    let mut out = IdleConns {
        conns: Vec::with_capacity(n),
        failed: 0,
        first_error: None,
    };
    let mut left = n;
    while left > 0 {
        let batch = left.min(PARALLEL);
        left -= batch;
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let target = target.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(10), one(target))
                        .await
                        .unwrap_or_else(|_| Err("no response within 10 s".into()))
                })
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok(Ok(c)) => out.conns.push(c),
                Ok(Err(e)) => {
                    out.failed += 1;
                    out.first_error.get_or_insert(e);
                }
                Err(e) => {
                    out.failed += 1;
                    out.first_error.get_or_insert(e.to_string());
                }
            }
        }
    }
    out
}

/// One connection of [`open`].
async fn one(target: Target) -> Result<Idle, String> {
    match target.protocol {
        Protocol::H1 => {
            let host = target.host.to_str().unwrap_or("");
            let request = format!("GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n", target.uri);
            one_h1(target.connect, request, target.payload)
                .await
                .map(Idle::H1)
        }
        Protocol::H2 => {
            let mut sender = load::connect(&target).await.map_err(|e| e.to_string())?;
            load::request(&mut sender, &target)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Idle::H2(sender))
        }
    }
}

async fn one_h1(addr: SocketAddr, request: String, payload: u64) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the response ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(done) = response_complete(&buf, payload)? {
            if done {
                return Ok(s);
            }
        }
    }
}

/// `Some(true)` when `buf` holds a whole 200 response with a body of
/// `payload` bytes (`Content-Length`), `Some(false)`/`None` while more is
/// needed; an error for another status.
fn response_complete(buf: &[u8], payload: u64) -> Result<Option<bool>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("status {status}"));
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<u64>().ok())?
        })
        .unwrap_or(payload);
    Ok(Some((buf.len() - end - 4) as u64 >= len))
}

/// The soft RLIMIT_NOFILE of this process (children inherit it).
pub fn nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer.
    match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
        0 => lim.rlim_cur,
        _ => 1024,
    }
}

/// Raises RLIMIT_NOFILE (soft, and hard when allowed) to at least `want`
/// for this process and the children it starts; returns the soft limit
/// in effect.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        // Not allowed above the hard limit: go as far as it.
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_boundaries() {
        assert_eq!(response_complete(b"HTTP/1.1 200 OK\r\n", 3), Ok(None));
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(response_complete(full, 3), Ok(Some(true)));
        assert_eq!(
            response_complete(&full[..full.len() - 1], 3),
            Ok(Some(false))
        );
        assert!(response_complete(b"HTTP/1.1 502 Bad\r\n\r\n", 3).is_err());
    }

    #[test]
    fn nofile_is_at_least_what_it_was() {
        let before = raise_nofile(0);
        assert!(raise_nofile(256) >= before.min(256));
    }
}
