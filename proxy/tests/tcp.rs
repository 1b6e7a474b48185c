//! Opaque TCP and TLS through the real proxy: byte-exact with half-close,
//! opaque ports skip detection, a server-speaks-first protocol works after
//! the detection timeout, and TLS is passed through untouched.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn raw_tcp_echo_is_byte_exact_with_half_close() {
    let echo = TcpEcho::start(None);
    let target = echo.addr.to_string();
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    // Binary that is not HTTP: detected as opaque at once.
    let payload = pattern(3 << 20);
    let back = tcp_roundtrip(proxy.inbound, &payload);
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echo differs");
    // The echo server answers only after it saw our FIN: the half-close
    // crossed the proxy, and the other direction kept flowing after it.
    let labels = [("direction", "inbound"), ("peer", "src")];
    assert!(eventually(Duration::from_secs(5), || proxy
        .metric("tcp_close_total", &labels)
        == 1.0));
    let m = proxy.metrics();
    assert_eq!(
        sum_metric(&m, "tcp_read_bytes_total", &labels),
        payload.len() as f64
    );
    assert_eq!(
        sum_metric(&m, "tcp_write_bytes_total", &labels),
        payload.len() as f64
    );
    assert_eq!(sum_metric(&m, "tcp_open_connections", &labels), 0.0);
    assert_eq!(
        sum_metric(&m, "request_total", &[]),
        0.0,
        "opaque traffic is not HTTP"
    );
    proxy.assert_healthy();
}

#[test]
fn server_speaks_first_after_detect_timeout_or_at_once_on_opaque_ports() {
    let echo = TcpEcho::start(Some(b"220 banner\r\n"));
    let target = echo.addr.to_string();
    let port = echo.addr.port().to_string();
    // Not an opaque port: the proxy waits for the client's first bytes,
    // then (timeout) forwards as TCP; the banner arrives after it.
    let mut proxy = Proxy::start(&[
        ("PIMESH_PROXY_INBOUND_TARGET", &target),
        ("PIMESH_PROXY_DETECT_TIMEOUT", "300ms"),
    ]);
    let start = Instant::now();
    let banner = read_banner(proxy.inbound);
    assert_eq!(banner, b"220 banner\r\n");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        proxy.metric(
            "inbound_tcp_accept_errors_total",
            &[("error", "detect_timeout")]
        ),
        1.0
    );
    proxy.assert_healthy();
    drop(proxy);

    // An opaque port: no detection, the banner comes at once.
    let mut proxy = Proxy::start(&[
        ("PIMESH_PROXY_INBOUND_TARGET", &target),
        ("PIMESH_PROXY_DETECT_TIMEOUT", "5s"),
        ("PIMESH_PROXY_OPAQUE_PORTS", &port),
    ]);
    let start = Instant::now();
    assert_eq!(read_banner(proxy.inbound), b"220 banner\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(proxy.metric("inbound_tcp_accept_errors_total", &[]), 0.0);
    proxy.assert_healthy();
}

fn read_banner(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    s.write_all(b"QUIT\r\n").unwrap();
    buf.to_vec()
}

#[test]
fn tls_is_passed_through_untouched() {
    let dir = TempDir::new("tls");
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let out = run(
        std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=app.test",
                "-addext",
                "subjectAltName=DNS:app.test",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    // openssl's own TLS server, answering an HTTP GET with a fixed page.
    let port = free_port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let target = format!("127.0.0.1:{port}");
    assert!(eventually(Duration::from_secs(10), || TcpStream::connect(
        &target
    )
    .is_ok()));
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    // The client verifies the app's own certificate: the bytes were not touched.
    let url = format!("https://app.test:{}/", proxy.inbound.port());
    let resolve = format!("app.test:{}:127.0.0.1", proxy.inbound.port());
    let (ok, out, err) = curl(
        None,
        &[
            "--cacert",
            cert.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "{err}");
    assert!(out.contains("s_server"), "{out}");
    let m = proxy.metrics();
    assert_eq!(sum_metric(&m, "request_total", &[]), 0.0);
    assert_eq!(
        sum_metric(
            &m,
            "tcp_open_total",
            &[("peer", "dst"), ("target_addr", &target)]
        ),
        1.0
    );
    proxy.assert_healthy();
}
