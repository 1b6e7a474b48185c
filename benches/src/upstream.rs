//! The upstream the requests end at: nginx (one worker, a static file of
//! the payload size) or the built-in server (`pimesh-bench upstream`, a
//! child process: hyper on one thread, HTTP/1.1 and h2c on two ports).
//! Either answers every path with 200 and `payload` bytes.

use crate::process::{self, Launch, Proc};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pimesh_test_support::{eventually, free_port};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;

/// Starting the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write nginx's files in {0}")]
    Files(String, #[source] std::io::Error),
    #[error("upstream")]
    Process(#[from] process::Error),
    #[error("nginx did not accept connections on {0} within 10 s; error.log:\n{1}")]
    NotUp(SocketAddr, String),
}

/// A running upstream, stopped on drop.
pub struct Upstream {
    /// "nginx" or "builtin".
    pub kind: &'static str,
    /// HTTP/1.1 address.
    pub h1: SocketAddr,
    /// h2c (HTTP/2 prior knowledge) address.
    pub h2: SocketAddr,
    pub proc: Proc,
}

/// Whether `nginx` is on the PATH.
pub fn nginx_present() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nginx").is_file()))
}

impl Upstream {
    /// Starts `pimesh-bench upstream` (this executable).
    ///
    /// # Errors
    ///
    /// [`Error::Process`] when `pimesh-bench upstream` cannot start, prints no
    /// listening line or that line has no address.
    pub fn builtin(payload: u64) -> Result<Upstream, Error> {
        let exe = std::env::current_exe().unwrap_or_else(|_| "pimesh-bench".into());
        let launch = Launch::new(exe)
            .arg("upstream")
            .arg("--payload")
            .arg(payload.to_string());
        let (proc, line) = Proc::start(
            "upstream",
            &launch,
            None,
            Some("listening h1="),
            Duration::from_secs(60),
        )?;
        Ok(Upstream {
            kind: "builtin",
            h1: process::line_addr(&line, "h1=")?,
            h2: process::line_addr(&line, "h2=")?,
            proc,
        })
    }

    /// Starts nginx with its files in `dir`; `max_conns` sizes its
    /// connection table (the idle-connection figure holds one per client).
    ///
    /// # Errors
    ///
    /// [`Error::Files`] when its files cannot be written; [`Error::Process`]
    /// when nginx cannot start; [`Error::NotUp`] with its log when it does not
    /// answer.
    pub fn nginx(dir: &Path, payload: u64, max_conns: usize) -> Result<Upstream, Error> {
        let files = |e| Error::Files(dir.display().to_string(), e);
        std::fs::create_dir_all(dir.join("www")).map_err(files)?;
        std::fs::write(dir.join("www/payload"), pattern(payload as usize)).map_err(files)?;
        let (h1, h2) = (free_port(), free_port());
        let d = dir.display();
        let conns = max_conns + 1024;
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
worker_rlimit_nofile {nofile};
error_log {d}/error.log warn;
events {{ worker_connections {conns}; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  default_type application/octet-stream;
  keepalive_requests 10000000; keepalive_timeout 300s;
  server {{ listen 127.0.0.1:{h1}; root {d}/www; location / {{ try_files /payload =404; }} }}
  server {{ listen 127.0.0.1:{h2} http2; root {d}/www; location / {{ try_files /payload =404; }} }}
}}
",
            nofile = conns * 2
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(files)?;
        let launch = Launch::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path);
        let (proc, _) = Proc::start("nginx", &launch, None, None, Duration::ZERO)?;
        let h1: SocketAddr = ([127, 0, 0, 1], h1).into();
        let h2: SocketAddr = ([127, 0, 0, 1], h2).into();
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(h1).is_ok() && std::net::TcpStream::connect(h2).is_ok()
        });
        if !up {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(Error::NotUp(h1, log + &proc.log()));
        }
        Ok(Upstream {
            kind: "nginx",
            h1,
            h2,
            proc,
        })
    }

    /// The address for `protocol`.
    pub fn addr(&self, protocol: crate::config::Protocol) -> SocketAddr {
        match protocol {
            crate::config::Protocol::H1 => self.h1,
            crate::config::Protocol::H2 => self.h2,
        }
    }
}

/// `n` deterministic bytes that are not all alike.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b"pimesh-bench payload\n"[i % 21]).collect()
}

/// `pimesh-bench upstream`: serves until killed; prints
/// `listening h1=ADDR h2=ADDR` on stderr once both ports accept.
///
/// # Errors
///
/// The runtime cannot be built or a listener cannot be bound on 127.0.0.1.
pub fn serve(payload: u64) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let h1 = TcpListener::bind("127.0.0.1:0").await?;
        let h2 = TcpListener::bind("127.0.0.1:0").await?;
        eprintln!("listening h1={} h2={}", h1.local_addr()?, h2.local_addr()?);
        let body = Bytes::from(pattern(payload as usize));
        let b2 = body.clone();
        tokio::spawn(accept(h2, b2, true));
        accept(h1, body, false).await;
        Ok(())
    })
}

async fn accept(listener: TcpListener, body: Bytes, h2: bool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and the like: let connections close, then go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let svc = service_fn(move |_req: Request<Incoming>| {
            let body = body.clone();
            async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
        });
        let io = TokioIo::new(stream);
        tokio::spawn(async move {
            let _ = if h2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1024)
                    .serve_connection(io, svc)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await
            };
        });
    }
}
