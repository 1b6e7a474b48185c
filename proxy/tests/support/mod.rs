//! Test support: the real `pimesh-proxy` binary on port 0, real peers
//! (nginx, curl, h2load, Python grpcio/websockets), TCP and HTTP test
//! servers, and network namespaces that clean up after themselves.
#![allow(dead_code)]

pub mod outbound;

pub use pimesh_test_support::{eventually, free_port, run, TempDir};
use pimesh_test_support::{launch, proxy_env, Launched, PROXY_LISTENING};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A command, run inside network namespace `netns` when given.
pub fn cmd(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// A running `pimesh-proxy`, killed on drop.
pub struct Proxy {
    process: Launched,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub netns: Option<String>,
}

pub fn proxy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pimesh-proxy")
}

impl Proxy {
    /// Starts the proxy on 127.0.0.1 port 0 listeners, with `env` on top.
    pub fn start(env: &[(&str, &str)]) -> Proxy {
        Proxy::start_in(None, &[], env)
    }

    /// Starts the proxy inside `netns` (when given), prefixed by `wrapper`
    /// (e.g. `setpriv --reuid ...`), with `env`.
    pub fn start_in(netns: Option<&str>, wrapper: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut c = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = cmd(netns, w);
                c.args(rest).arg(proxy_bin());
                c
            }
            None => cmd(netns, proxy_bin()),
        };
        proxy_env(&mut c, "127.0.0.1:0", "warn,pimesh=debug");
        for (k, v) in env {
            c.env(k, v);
        }
        let process = launch(&mut c, PROXY_LISTENING, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{c:?} exited with {}:\n{}", e.status, e.log));
        Proxy {
            inbound: process.addr(" inbound="),
            outbound: process.addr("outbound="),
            admin: process.addr("admin="),
            process,
            netns: netns.map(str::to_string),
        }
    }

    /// The proxy's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// `GET /metrics` text.
    pub fn metrics(&self) -> String {
        let out = run(
            cmd(self.netns.as_deref(), "curl")
                .args(["-sS", "--max-time", "5"])
                .arg(format!("http://{}/metrics", self.admin)),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "metrics: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sum of the samples of series `name` whose labels include all of
    /// `labels` (`name` matches exactly, before `{`).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum_metric(&self.metrics(), name, labels)
    }

    /// Panics if the proxy exited or logged a panic.
    pub fn assert_healthy(&mut self) {
        if let Some(status) = self.process.try_exit() {
            panic!("proxy exited with {status}:\n{}", self.log());
        }
        assert!(
            !self.log().contains("panicked"),
            "proxy panicked:\n{}",
            self.log()
        );
    }

    /// Waits up to `timeout` for the process to exit, returning its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_exit(timeout)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Sum of matching samples in a Prometheus text exposition.
pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let series = l.split(['{', ' ']).next().unwrap_or("");
            series == name
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// nginx serving `/` (`hello from nginx`), `/big.bin` (1 MiB) and
/// `/status/503`, over HTTP/1.1 on `port` and HTTP/2 prior knowledge
/// (h2c) on `h2_port`.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub h2_port: u16,
    pub dir: TempDir,
}

impl Nginx {
    /// Starts nginx on `listen_ip` (inside `netns` when given). Ports are
    /// picked free on loopback, or fixed (8080/8081) inside a namespace.
    pub fn start(netns: Option<&str>, listen_ip: &str) -> Nginx {
        let dir = TempDir::new("nginx");
        let (port, h2_port) = match netns {
            Some(_) => (8080, 8081),
            None => (free_port(), free_port()),
        };
        let d = dir.path().display();
        std::fs::create_dir_all(dir.path().join("www/status")).unwrap();
        std::fs::write(dir.path().join("www/index.html"), "hello from nginx\n").unwrap();
        std::fs::write(dir.path().join("www/big.bin"), pattern(1 << 20)).unwrap();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  default_type text/plain;
  keepalive_requests 100000;
  server {{ listen {listen_ip}:{port}; root {d}/www;
    location = /status/503 {{ return 503 \"unavailable\\n\"; }} }}
  server {{ listen {listen_ip}:{h2_port} http2; root {d}/www;
    location = /status/503 {{ return 503 \"unavailable\\n\"; }} }}
}}
"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = cmd(netns, "nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx-light)");
        let n = Nginx {
            child,
            port,
            h2_port,
            dir,
        };
        let url = format!("http://{listen_ip}:{port}/");
        let up = eventually(Duration::from_secs(10), || {
            run(
                cmd(netns, "curl").args(["-s", "-o", "/dev/null", "--max-time", "1", &url]),
                Duration::from_secs(5),
            )
            .status
            .success()
        });
        assert!(
            up,
            "nginx did not start: {}",
            std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default()
        );
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` deterministic bytes that are not all alike.
pub fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A TCP echo server on 127.0.0.1 that reads a connection to EOF, then
/// writes everything back and closes: it only answers if the half-close
/// reached it. With `banner`, it first sends that (server-speaks-first).
pub struct TcpEcho {
    pub addr: SocketAddr,
}

impl TcpEcho {
    pub fn start(banner: Option<&'static [u8]>) -> TcpEcho {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    if let Some(b) = banner {
                        let _ = s.write_all(b);
                    }
                    let mut buf = Vec::new();
                    if s.read_to_end(&mut buf).is_ok() {
                        let _ = s.write_all(&buf);
                    }
                    let _ = s.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        TcpEcho { addr }
    }
}

/// Sends `payload`, half-closes, and returns everything read until EOF.
pub fn tcp_roundtrip(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let payload = payload.to_vec();
        std::thread::spawn(move || {
            w.write_all(&payload).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    out
}

/// A Python test peer under `tests/peers/`, started in `serve` mode; it
/// prints `PORT n` when ready. Killed on drop.
pub struct PyPeer {
    child: Child,
    pub port: u16,
}

pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

impl PyPeer {
    pub fn start(script: &str) -> PyPeer {
        PyPeer::start_in(None, script, "127.0.0.1", 0)
    }

    /// Starts `script serve --name NAME` on 127.0.0.1 (a peer that says
    /// which one answered).
    pub fn start_named(script: &str, name: &str) -> PyPeer {
        PyPeer::spawn(None, script, "127.0.0.1", 0, &["--name", name])
    }

    /// Starts `script serve` inside `netns` on `host:port`.
    pub fn start_in(netns: Option<&str>, script: &str, host: &str, port: u16) -> PyPeer {
        PyPeer::spawn(netns, script, host, port, &[])
    }

    fn spawn(netns: Option<&str>, script: &str, host: &str, port: u16, extra: &[&str]) -> PyPeer {
        let mut child = cmd(netns, "python3")
            .arg(peer_script(script))
            .args(["serve", "--host", host, "--port", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("peer printed nothing").unwrap();
        let port = line
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("unexpected peer output {line:?}"))
            .trim()
            .parse()
            .unwrap();
        PyPeer { child, port }
    }

    /// `127.0.0.1:port` (peers started on loopback).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python peer's client mode; returns its stdout, failing the test
/// with its output when it exits non-zero.
pub fn py_client(netns: Option<&str>, script: &str, args: &[&str]) -> String {
    let out = run(
        cmd(netns, "python3")
            .arg(peer_script(script))
            .arg("client")
            .args(args),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{script} client {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// curl with a 10 s limit; returns (exit status success, stdout, stderr).
pub fn curl(netns: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let out = run(
        cmd(netns, "curl")
            .args(["-sS", "--max-time", "10"])
            .args(args),
        Duration::from_secs(20),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs h2load and returns how many requests succeeded (its "succeeded" count).
pub fn h2load(netns: Option<&str>, args: &[&str]) -> u64 {
    let out = run(cmd(netns, "h2load").args(args), Duration::from_secs(120));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| {
            panic!(
                "h2load printed no summary:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // "requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, ..."
    let succeeded = line
        .split(',')
        .find(|p| p.trim().ends_with("succeeded"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    succeeded
}

/// The `pimesh` binary (the controller), built beside `pimesh-proxy`; built
/// on demand when only the proxy's tests were compiled.
/// `PIMESH_TEST_CONTROLLER_BIN` points at another build (e.g. a branch
/// not merged yet).
pub fn controller_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PIMESH_TEST_CONTROLLER_BIN") {
        return PathBuf::from(bin);
    }
    let dir = Path::new(proxy_bin()).parent().unwrap();
    let bin = dir.join("pimesh");
    if !bin.exists() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let out = run(
            Command::new(cargo)
                .args(["build", "-p", "pimesh-controller", "--bin", "pimesh"])
                .current_dir(env!("CARGO_MANIFEST_DIR")),
            Duration::from_secs(600),
        );
        assert!(
            out.status.success(),
            "building pimesh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// A running standalone controller on loopback port 0, killed on drop;
/// its data dir survives a restart.
pub struct Controller {
    process: Launched,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dir: Arc<TempDir>,
    extra: Vec<String>,
}

impl Controller {
    /// Starts `pimesh controller --standalone` with `extra` flags.
    pub fn start(extra: &[&str]) -> Controller {
        Controller::start_at("127.0.0.1:0", extra)
    }

    /// Starts it with its proxy-facing port at `proxy_addr` (fixed, so that
    /// proxies find it again after a restart).
    pub fn start_at(proxy_addr: &str, extra: &[&str]) -> Controller {
        let dir = Arc::new(TempDir::new("controller"));
        let mut args: Vec<String> = vec!["--proxy-addr".into(), proxy_addr.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Controller::start_in(dir, args)
    }

    fn start_in(dir: Arc<TempDir>, extra: Vec<String>) -> Controller {
        let mut c = Command::new(controller_bin());
        c.args(["controller", "--standalone", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(&extra);
        let process = launch(&mut c, "listening proxy=", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{c:?} exited with {}:\n{}", e.status, e.log));
        Controller {
            proxy_addr: process.addr("proxy="),
            admin_addr: process.addr("admin="),
            process,
            dir,
            extra,
        }
    }

    /// Kills the controller with SIGKILL (no chance to flush anything).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// A new controller process on the same data dir (new ports).
    pub fn restart(&mut self) -> Controller {
        self.kill();
        Controller::start_in(self.dir.clone(), self.extra.clone())
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Runs `pimesh ARGS --controller http://ADMIN` and returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = run(
            Command::new(controller_bin())
                .args(args)
                .args(["--controller", &format!("http://{}", self.admin_addr)]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "pimesh {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes the trust anchors to a file in the controller's temp dir.
    pub fn anchors_file(&self) -> PathBuf {
        let pem = self.cli(&["identity", "trust-anchors"]);
        let path = self.dir.path().join("anchors.pem");
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// Creates a join token for `identity` and writes it to a file.
    pub fn token_file(&self, identity: &str) -> PathBuf {
        let out = self.cli(&["token", "create", "--identity", identity]);
        let token = out
            .split_whitespace()
            .find(|w| w.starts_with("pmt_"))
            .unwrap_or_else(|| panic!("no token in {out:?}"))
            .to_string();
        let path = self
            .dir
            .path()
            .join(format!("{}.token", identity.replace('/', "_")));
        std::fs::write(&path, token).unwrap();
        path
    }

    /// The environment of a meshed proxy with `identity`.
    pub fn proxy_env(&self, identity: &str) -> Vec<(String, String)> {
        vec![
            (
                "PIMESH_PROXY_CONTROLLER_ADDR".into(),
                self.proxy_addr.to_string(),
            ),
            (
                "PIMESH_PROXY_TRUST_ANCHORS".into(),
                self.anchors_file().display().to_string(),
            ),
            (
                "PIMESH_PROXY_TOKEN_FILE".into(),
                self.token_file(identity).display().to_string(),
            ),
            ("PIMESH_PROXY_IDENTITY".into(), identity.into()),
        ]
    }
}

/// Starts a proxy with `base` plus `env` and waits until it is ready.
pub fn meshed_proxy(base: &[(String, String)], env: &[(&str, &str)]) -> Proxy {
    let mut all: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(env);
    let proxy = Proxy::start(&all);
    let ready = eventually(Duration::from_secs(20), || {
        curl(
            None,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{}/ready", proxy.admin),
            ],
        )
        .1 == "200"
    });
    assert!(ready, "proxy never got a certificate:\n{}", proxy.log());
    proxy
}

/// A TCP relay that records every byte passing through it (both ways), to
/// see what crosses the wire between two proxies.
pub struct Tap {
    pub addr: SocketAddr,
    /// Client-to-server bytes, then server-to-client bytes.
    pub bytes: [Arc<Mutex<Vec<u8>>>; 2],
}

impl Tap {
    pub fn start(to: SocketAddr) -> Tap {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let bytes = [
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        ];
        let rec = bytes.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let Ok(u) = TcpStream::connect(to) else {
                    continue;
                };
                let pairs = [(c.try_clone().unwrap(), u.try_clone().unwrap()), (u, c)];
                for (i, (mut from, mut to)) in pairs.into_iter().enumerate() {
                    let rec = rec[i].clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(n) => {
                                    rec.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            }
        });
        Tap { addr, bytes }
    }

    /// (client-to-server, server-to-client) bytes so far.
    pub fn recorded(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.bytes[0].lock().unwrap().clone(),
            self.bytes[1].lock().unwrap().clone(),
        )
    }
}
