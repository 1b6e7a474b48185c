//! Test support for telemetry: real `pimesh-proxy` processes (built beside
//! `pimesh` on demand), an HTTP app with a fixed delay and every Nth
//! response a 500, fake proxies serving changing `/metrics` text, and bad
//! scrape targets (slow, huge, garbage).
#![allow(dead_code)]

use pimesh_test_support::{launch, proxy_env, Launched, PROXY_LISTENING};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// `pimesh-proxy`, built (once per test process) into the target directory
/// that holds this test's `pimesh`, so that it is never stale.
pub fn proxy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let pimesh = PathBuf::from(env!("CARGO_BIN_EXE_pimesh"));
        let profile_dir = pimesh.parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let mut c = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        c.args(["build", "-q", "-p", "pimesh-proxy", "--bin", "pimesh-proxy"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        let out = c.output().expect("cargo build pimesh-proxy");
        assert!(
            out.status.success(),
            "building pimesh-proxy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("pimesh-proxy")
    })
    .clone()
}

/// A running `pimesh-proxy`, killed on drop.
pub struct Proxy {
    process: Launched,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
}

impl Proxy {
    /// Starts a proxy with its admin listener on `admin` and `env` on top;
    /// waits for its listening line and, with a controller, for `/ready`.
    pub fn start(admin: SocketAddr, env: &[(String, String)]) -> Proxy {
        let mut c = Command::new(proxy_bin());
        proxy_env(&mut c, &admin.to_string(), "warn,pimesh=info");
        for (k, v) in env {
            c.env(k, v);
        }
        let process = launch(&mut c, PROXY_LISTENING, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("proxy did not start ({}):\n{}", e.status, e.log));
        let p = Proxy {
            inbound: process.addr(" inbound="),
            outbound: process.addr("outbound="),
            admin: process.addr("admin="),
            process,
        };
        let ready = crate::support::eventually(Duration::from_secs(20), || {
            crate::support::http1(p.admin, "GET", "/ready", "").0 == 200
        });
        assert!(ready, "proxy never ready:\n{}", p.log());
        p
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Serves every connection of `listener` with `handle` on its own thread
/// until the returned flag is set (then the listener is dropped).
fn serve(
    listener: TcpListener,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let handle = Arc::new(handle);
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let h = handle.clone();
                    std::thread::spawn(move || h(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    stop
}

/// Reads one HTTP/1.1 request head; `None` at EOF.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

/// An HTTP/1.1 keep-alive app: every answer after `delay`; every
/// `fail_every`-th request (1-based, counted over all connections) a 500.
pub struct App {
    pub addr: SocketAddr,
    pub served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl App {
    pub fn start(delay: Duration, fail_every: Option<u64>) -> App {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let n = served.clone();
        let stop = serve(l, move |s| {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            while read_head(&mut r).is_some() {
                let i = n.fetch_add(1, Ordering::SeqCst) + 1;
                std::thread::sleep(delay);
                let fail = fail_every.is_some_and(|k| i.is_multiple_of(k));
                let (status, body) = if fail {
                    ("500 Internal Server Error", "injected failure\n")
                } else {
                    ("200 OK", "hello\n")
                };
                let rsp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if w.write_all(rsp.as_bytes()).is_err() {
                    return;
                }
            }
        });
        App { addr, served, stop }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A scrape target answering `GET /metrics` with what `body` returns
/// (called per scrape with the scrape's number, from 1), or, when
/// `raw` is set, writing those bytes as they are after `delay`.
pub struct FakeProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakeProxy {
    pub fn start(body: impl Fn(u64) -> String + Send + Sync + 'static) -> FakeProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let n = AtomicU64::new(0);
        let stop = serve(l, move |s| {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            if read_head(&mut r).is_none() {
                return;
            }
            let text = body(n.fetch_add(1, Ordering::SeqCst) + 1);
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        });
        FakeProxy { addr, stop }
    }

    /// Answers every request with `bytes` after `delay`, then closes.
    pub fn raw(bytes: Vec<u8>, delay: Duration) -> FakeProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = serve(l, move |mut s| {
            let mut buf = [0u8; 2048];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            std::thread::sleep(delay);
            let _ = s.write_all(&bytes);
        });
        FakeProxy { addr, stop }
    }
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Linkerd-style `/metrics` text of a proxy of workload `ns/deploy` that
/// served `requests` inbound requests (a tenth failed) from `client_id`
/// (meshed when given), each 20–30 ms, with 3 open connections.
pub fn metrics_text(ns: &str, deploy: &str, requests: u64, client_id: Option<&str>) -> String {
    metrics_text_started(ns, deploy, requests, client_id, 1795228674.5)
}

/// [`metrics_text`] of a proxy whose process started at `start`
/// (`process_start_time_seconds`, Unix seconds).
pub fn metrics_text_started(
    ns: &str,
    deploy: &str,
    requests: u64,
    client_id: Option<&str>,
    start: f64,
) -> String {
    let base = format!("namespace=\"{ns}\",deployment=\"{deploy}\",pod=\"{deploy}-1\"");
    let peer = match client_id {
        Some(id) => format!("tls=\"true\",client_id=\"{id}\""),
        None => "tls=\"no_identity\",no_tls_reason=\"no_tls_from_remote\"".into(),
    };
    let l = format!("{base},direction=\"inbound\",target_addr=\"127.0.0.1:8080\",{peer}");
    let failed = requests / 10;
    let mut t = String::new();
    t.push_str("# TYPE process_start_time_seconds gauge\n");
    t.push_str(&format!("process_start_time_seconds{{{base}}} {start}\n"));
    t.push_str("# TYPE request counter\n");
    t.push_str(&format!(
        "request_total{{{l},authority=\"x\"}} {requests}\n"
    ));
    t.push_str("# TYPE response counter\n");
    t.push_str(&format!(
        "response_total{{{l},authority=\"x\",status_code=\"200\",classification=\"success\"}} {}\n",
        requests - failed
    ));
    t.push_str(&format!(
        "response_total{{{l},authority=\"x\",status_code=\"500\",classification=\"failure\"}} {failed}\n"
    ));
    t.push_str("# TYPE response_latency_ms histogram\n");
    for le in ["1.0", "10.0", "20.0"] {
        t.push_str(&format!(
            "response_latency_ms_bucket{{{base},le=\"{le}\",direction=\"inbound\",{peer}}} 0\n"
        ));
    }
    for le in ["30.0", "100.0", "+Inf"] {
        t.push_str(&format!(
            "response_latency_ms_bucket{{{base},le=\"{le}\",direction=\"inbound\",{peer}}} {requests}\n"
        ));
    }
    t.push_str(&format!(
        "response_latency_ms_count{{{base},direction=\"inbound\",{peer}}} {requests}\n"
    ));
    t.push_str("# TYPE tcp_open_connections gauge\n");
    t.push_str(&format!("tcp_open_connections{{{l},peer=\"src\"}} 3\n"));
    t.push_str("# EOF\n");
    t
}

/// A load generator: `rate` requests per second (absolute schedule, so a
/// late request is followed by quicker ones) for `duration`, each a
/// request to `url_path` sent on one keep-alive connection to `via` (an
/// absolute-form request when `absolute` names the origin: explicit proxy
/// mode). Returns the requests answered, how long it took, their latencies
/// and failed statuses.
pub struct Load {
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    pub done: u64,
    pub latencies_ms: Vec<f64>,
    pub errors: u64,
    pub failed_status: u64,
}

pub fn load(via: SocketAddr, absolute: Option<SocketAddr>, rate: f64, duration: Duration) -> Load {
    let mut s = TcpStream::connect(via).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let (target, host) = match absolute {
        Some(a) => (format!("http://{a}/"), a.to_string()),
        None => ("/".to_string(), via.to_string()),
    };
    let mut out = Load {
        seconds: 0.0,
        done: 0,
        latencies_ms: Vec::new(),
        errors: 0,
        failed_status: 0,
    };
    let start = Instant::now();
    let n = (rate * duration.as_secs_f64()).round() as u64;
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t0 = Instant::now();
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            out.errors += 1;
            break;
        }
        let Some(head) = read_head(&mut r) else {
            out.errors += 1;
            break;
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            out.errors += 1;
            break;
        }
        out.latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        out.done += 1;
        if !head.starts_with("HTTP/1.1 2") {
            out.failed_status += 1;
        }
    }
    out.seconds = start.elapsed().as_secs_f64();
    out
}

/// The `q` quantile of `v` (nearest rank).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}
