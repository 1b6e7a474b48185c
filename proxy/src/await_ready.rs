//! `pimesh-proxy await`: blocks until the proxy of this pod is ready (its
//! admin `/ready` answers 200), as `linkerd-await` does. The injector
//! runs it as the proxy container's `postStart` hook when the proxy is a
//! regular container (API servers before 1.29, or
//! `config.pimesh.io/proxy-enable-native-sidecar: "false"`): the kubelet
//! starts the next container only once the hook returned, so the app
//! starts with the proxy holding its certificate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// `pimesh-proxy await` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AwaitConfig {
    /// The proxy's admin address
    #[arg(long, default_value = "127.0.0.1:4191", value_name = "ADDR")]
    pub admin: SocketAddr,
    /// Give up after this long (e.g. 30s, 2m)
    #[arg(long, default_value = "2m", value_parser = crate::config::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// The proxy did not become ready.
#[derive(Debug, thiserror::Error)]
#[error("the proxy at {admin} was not ready within {timeout:?} (last: {last})")]
pub struct NotReady {
    /// The admin address asked.
    pub admin: SocketAddr,
    /// How long it waited.
    pub timeout: Duration,
    /// The last answer or error.
    pub last: String,
}

/// One `GET /ready` (HTTP/1.0): the status code, or why there is none.
fn ready_status(admin: SocketAddr) -> Result<u16, String> {
    let mut s =
        TcpStream::connect_timeout(&admin, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 32];
    let n = s.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

/// Polls `/ready` every 100 ms until it answers 200.
///
/// # Errors
///
/// [`NotReady`] after `timeout`.
pub fn run(cfg: &AwaitConfig) -> Result<(), NotReady> {
    let end = Instant::now() + cfg.timeout;
    loop {
        let last = match ready_status(cfg.admin) {
            Ok(200) => return Ok(()),
            Ok(code) => format!("HTTP {code}"),
            Err(e) => e,
        };
        if Instant::now() >= end {
            return Err(NotReady {
                admin: cfg.admin,
                timeout: cfg.timeout,
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn waits_for_200_and_gives_up_after_the_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = l.local_addr().unwrap();
        // 503 twice, then 200 to every later ask (a slow machine may make
        // the client give up on an answer and ask again).
        std::thread::spawn(move || {
            for (i, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let code = if i < 2 { 503 } else { 200 };
                let _ = write!(s, "HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
            }
        });
        let cfg = AwaitConfig {
            admin,
            timeout: Duration::from_secs(30),
        };
        run(&cfg).unwrap();
        // Nobody listening: refused until the timeout.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = run(&AwaitConfig {
            admin: closed,
            timeout: Duration::from_millis(300),
        })
        .unwrap_err();
        assert!(e.to_string().contains("was not ready within"), "{e}");
    }
}
