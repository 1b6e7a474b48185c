//! Test support for outbound balancing: small HTTP/1.1 backends whose
//! delay, status and liveness a test changes while they run, and a
//! keep-alive load client that goes through a proxy's outbound listener
//! (explicit proxy mode) and tallies statuses and which backend answered.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a backend does with each request.
#[derive(Default)]
struct Behaviour {
    delay_ms: AtomicU64,
    status: AtomicU16,
    /// Accept and never answer.
    hang: AtomicBool,
    /// Killed: no more accepts, open connections closed.
    dead: AtomicBool,
    hits: AtomicU64,
    /// The next this many requests answer 503, whatever `status` says.
    fail_next: AtomicU64,
}

/// An HTTP/1.1 server on 127.0.0.1 answering `name` (body and
/// `x-backend` header), keep-alive, one thread per connection.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    b: Arc<Behaviour>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let b = Arc::new(Behaviour::default());
        b.status.store(200, Ordering::SeqCst);
        let (b2, n) = (b.clone(), name.to_string());
        std::thread::spawn(move || loop {
            if b2.dead.load(Ordering::SeqCst) {
                return; // the listener closes: connections are refused
            }
            match l.accept() {
                Ok((s, _)) => {
                    let (b3, n3) = (b2.clone(), n.clone());
                    std::thread::spawn(move || serve(s, &b3, &n3));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        });
        Backend {
            addr,
            name: name.to_string(),
            b,
        }
    }

    pub fn set_delay(&self, d: Duration) {
        self.b
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_status(&self, status: u16) {
        self.b.status.store(status, Ordering::SeqCst);
    }

    /// The next `n` requests answer 503, then `status` again.
    pub fn fail_next(&self, n: u64) {
        self.b.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn set_hang(&self, hang: bool) {
        self.b.hang.store(hang, Ordering::SeqCst);
    }

    /// Stops accepting and closes every open connection.
    pub fn kill(&self) {
        self.b.dead.store(true, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.b.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(s: TcpStream, b: &Behaviour, name: &str) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        // The request head, polling for death between reads.
        let mut head = String::new();
        loop {
            if b.dead.load(Ordering::SeqCst) {
                let _ = w.shutdown(std::net::Shutdown::Both);
                return;
            }
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    head.push_str(&line);
                    if head == "\r\n" {
                        head.clear(); // a stray empty line between requests
                    } else if head.ends_with("\r\n\r\n") {
                        break;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    head.push_str(&line);
                    continue;
                }
                Err(_) => return,
            }
        }
        let len = header(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        let _ = w.set_read_timeout(Some(Duration::from_secs(10)));
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let _ = w.set_read_timeout(Some(Duration::from_millis(50)));
        b.hits.fetch_add(1, Ordering::SeqCst);
        if b.hang.load(Ordering::SeqCst) {
            // Accepts, never answers, until killed or 60 s.
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until && !b.dead.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = w.shutdown(std::net::Shutdown::Both);
            return;
        }
        let delay = b.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let failing = b
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let status = if failing {
            503
        } else {
            b.status.load(Ordering::SeqCst)
        };
        let rsp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: text/plain\r\nx-backend: {name}\r\nx-body-len: {len}\r\n\r\n{name}",
            name.len()
        );
        if w.write_all(rsp.as_bytes()).is_err() {
            return;
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Outcomes of a load run.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Responses by status (0: transport error).
    pub statuses: BTreeMap<u16, u64>,
    /// Successful responses by the backend that answered.
    pub backends: BTreeMap<String, u64>,
    /// The first few failures, for messages.
    pub failures: Vec<String>,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn ok(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    pub fn failed(&self) -> u64 {
        self.total() - self.ok()
    }

    pub fn share(&self, backend: &str) -> f64 {
        self.backends.get(backend).copied().unwrap_or(0) as f64 / self.ok().max(1) as f64
    }

    fn add(&mut self, other: &Tally) {
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &other.backends {
            *self.backends.entry(k.clone()).or_default() += v;
        }
        for f in &other.failures {
            if self.failures.len() < 10 {
                self.failures.push(f.clone());
            }
        }
    }
}

/// One response as the client saw it.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 client of a proxy's outbound listener
/// (absolute-form requests, as an app with `http_proxy` set sends them).
pub struct ProxyClient {
    proxy: SocketAddr,
    conn: Option<(BufReader<TcpStream>, TcpStream)>,
}

impl ProxyClient {
    pub fn new(proxy: SocketAddr) -> ProxyClient {
        ProxyClient { proxy, conn: None }
    }

    /// `method http://{authority}{path}` with `body`; errors are transport errors.
    pub fn request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Answer, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.proxy).map_err(|e| e.to_string())?;
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            self.conn = Some((BufReader::new(s.try_clone().unwrap()), s));
        }
        let result = self.exchange(method, authority, path, body);
        let close = match &result {
            Ok(a) => header(&a.head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
            Err(_) => true,
        };
        if close {
            self.conn = None;
        }
        result
    }

    fn exchange(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Answer, String> {
        let (r, w) = self.conn.as_mut().unwrap();
        let req = format!(
            "{method} http://{authority}{path} HTTP/1.1\r\nhost: {authority}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        w.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        w.write_all(body).map_err(|e| e.to_string())?;
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) => return Err(format!("connection closed after {head:?}")),
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
                Err(e) => return Err(e.to_string()),
            }
        }
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut body = Vec::new();
        if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            r.read_exact(&mut body).map_err(|e| e.to_string())?;
        } else if header(&head, "transfer-encoding").is_some() {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).map_err(|e| e.to_string())?;
                let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        Ok(Answer { status, head, body })
    }
}

/// Sends `total` GETs of `http://{authority}/` through `proxy` on
/// `clients` keep-alive connections, spaced by `pause` per client.
pub fn load(
    proxy: SocketAddr,
    authority: &str,
    clients: usize,
    total: usize,
    pause: Duration,
) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let left = Arc::new(AtomicU64::new(total as u64));
    run_load(proxy, authority, clients, pause, stop, Some(left))
}

/// Load until `stop` is set (see [`load`]).
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Tally>>,
    pub live: Arc<Mutex<Tally>>,
}

impl SteadyLoad {
    pub fn start(
        proxy: SocketAddr,
        authority: &str,
        clients: usize,
        pause: Duration,
    ) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Tally::default()));
        let (s, a, l) = (stop.clone(), authority.to_string(), live.clone());
        let handle =
            std::thread::spawn(move || run_load_live(proxy, &a, clients, pause, s, None, Some(l)));
        SteadyLoad {
            stop,
            handle: Some(handle),
            live,
        }
    }

    /// What happened so far.
    pub fn so_far(&self) -> Tally {
        self.live.lock().unwrap().clone()
    }

    pub fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for SteadyLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run_load(
    proxy: SocketAddr,
    authority: &str,
    clients: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
    left: Option<Arc<AtomicU64>>,
) -> Tally {
    run_load_live(proxy, authority, clients, pause, stop, left, None)
}

fn run_load_live(
    proxy: SocketAddr,
    authority: &str,
    clients: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
    left: Option<Arc<AtomicU64>>,
    live: Option<Arc<Mutex<Tally>>>,
) -> Tally {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, left, live) = (stop.clone(), left.clone(), live.clone());
            let authority = authority.to_string();
            std::thread::spawn(move || {
                let mut c = ProxyClient::new(proxy);
                let mut t = Tally::default();
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Some(l) = &left {
                        if l.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_err()
                        {
                            break;
                        }
                    }
                    let mut one = Tally::default();
                    match c.request("GET", &authority, "/", b"") {
                        Ok(a) => {
                            *one.statuses.entry(a.status).or_default() += 1;
                            if a.status == 200 {
                                let who = String::from_utf8_lossy(&a.body).into_owned();
                                *one.backends.entry(who).or_default() += 1;
                            } else {
                                one.failures.push(format!(
                                    "{} {}",
                                    a.status,
                                    String::from_utf8_lossy(&a.body).trim()
                                ));
                            }
                        }
                        Err(e) => {
                            *one.statuses.entry(0).or_default() += 1;
                            one.failures.push(e);
                        }
                    }
                    if let Some(live) = &live {
                        live.lock().unwrap().add(&one);
                    }
                    t.add(&one);
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for t in threads {
        all.add(&t.join().unwrap());
    }
    all
}

/// `pimesh service add NAME --port PORT --endpoint A ... EXTRA...`.
pub fn service_add(
    ctl: &super::Controller,
    name: &str,
    port: u16,
    endpoints: &[SocketAddr],
    extra: &[&str],
) {
    let port = port.to_string();
    let eps: Vec<String> = endpoints.iter().map(|a| a.to_string()).collect();
    let mut args = vec!["service", "add", name, "--port", &port];
    for e in &eps {
        args.extend(["--endpoint", e.as_str()]);
    }
    args.extend_from_slice(extra);
    ctl.cli(&args);
}

/// `pimesh service set NAME FLAGS...`.
pub fn service_set(ctl: &super::Controller, name: &str, flags: &[&str]) {
    let mut args = vec!["service", "set", name];
    args.extend_from_slice(flags);
    ctl.cli(&args);
}

/// A meshed client proxy (identity `default/client`), ready.
pub fn client_proxy(ctl: &super::Controller, env: &[(&str, &str)]) -> super::Proxy {
    super::meshed_proxy(&ctl.proxy_env("default/client"), env)
}

/// A meshed proxy in front of `app` that registers it as `service`
/// (`NAME:PORT`, `PIMESH_PROXY_SERVICE`), with identity `default/NAME`;
/// not waited for (the controller may be away).
pub fn backend_proxy(
    ctl: &super::Controller,
    service: &str,
    app: SocketAddr,
    env: &[(&str, &str)],
) -> super::Proxy {
    let name = service.split(':').next().unwrap();
    let base = ctl.proxy_env(&format!("default/{name}"));
    let mut all: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = app.to_string();
    all.push(("PIMESH_PROXY_INBOUND_TARGET", &app));
    all.push(("PIMESH_PROXY_SERVICE", service));
    all.extend_from_slice(env);
    super::Proxy::start(&all)
}

/// `pimesh service get NAME -o json`, or `None` when it fails (no such service).
pub fn service_json(ctl: &super::Controller, name: &str) -> Option<String> {
    let out = super::run(
        std::process::Command::new(super::controller_bin())
            .args(["service", "get", name, "-o", "json"])
            .args(["--controller", &format!("http://{}", ctl.admin_addr)]),
        Duration::from_secs(30),
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
