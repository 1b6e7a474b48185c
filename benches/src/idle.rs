//! The idle-connection figure: N HTTP/1.1 connections to a proxy's inbound
//! listener, each sending one request and reading its response, then kept
//! open and silent (a keep-alive connection between requests, the common
//! idle state of a meshed app's pool); plus the file-descriptor limit that
//! needs.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections opened at once while building up.
const PARALLEL: usize = 128;

/// The open connections (closed on drop) and how the build-up went.
pub struct IdleConns {
    pub streams: Vec<TcpStream>,
    /// Connections that failed to open or to get their response.
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Opens `n` connections to `addr`, each doing one `GET` with `Host:
/// host` and reading a `payload`-byte response.
pub async fn open(addr: SocketAddr, host: &str, payload: u64, n: usize) -> IdleConns {
    let request = format!("GET /payload HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut out = IdleConns {
        streams: Vec::with_capacity(n),
        failed: 0,
        first_error: None,
    };
    let mut left = n;
    while left > 0 {
        let batch = left.min(PARALLEL);
        left -= batch;
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let request = request.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(10), one(addr, request, payload))
                        .await
                        .unwrap_or_else(|_| Err("no response within 10 s".into()))
                })
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok(Ok(s)) => out.streams.push(s),
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

async fn one(addr: SocketAddr, request: String, payload: u64) -> Result<TcpStream, String> {
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
