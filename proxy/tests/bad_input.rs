//! Bad input never panics the proxy, never blocks other connections, and
//! is counted: garbage bytes, clients that stop mid-headers, oversized
//! headers (431 on HTTP/1, stream reset on HTTP/2), an unreachable app
//! (502), peers that reset, the connection limit, bad configuration (exit
//! 64), and a drain on `POST /shutdown`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use support::*;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until EOF or error; returns what was read.
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn slow_idle_and_garbage_clients_do_not_block_others() {
    let nginx = Nginx::start(None, "127.0.0.1");
    let target = format!("127.0.0.1:{}", nginx.port);
    let mut proxy = Proxy::start(&[
        ("PIMESH_PROXY_INBOUND_TARGET", &target),
        ("PIMESH_PROXY_HEADER_READ_TIMEOUT", "1s"),
        ("PIMESH_PROXY_DETECT_TIMEOUT", "1s"),
    ]);
    // A client that stops mid-headers, and one that sends nothing at all.
    let mut slow = connect(proxy.inbound);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nX-Partial: ")
        .unwrap();
    let silent = connect(proxy.inbound);
    // Garbage: forwarded as opaque TCP; nginx answers 400 and closes.
    let mut garbage = connect(proxy.inbound);
    garbage.write_all(&pattern(4096)).unwrap();
    let answer = read_all(&mut garbage);
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{answer:?}");
    drop(garbage);

    // While both stalled connections are still open, others are served.
    // (The silent one is still in protocol detection, so it is not in the
    // per-target series yet: those carry labels that detection decides.)
    assert!(eventually(Duration::from_secs(5), || {
        proxy.metric("tcp_open_connections", &[("peer", "src")]) == 1.0
    }));
    let url = format!("http://{}/", proxy.inbound);
    let (ok, out, err) = curl(None, &[&url]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n");

    // The stalled head times out and is counted; the silent client falls
    // back to TCP after the detection timeout and is counted too.
    let answer = read_all(&mut slow);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(eventually(Duration::from_secs(5), || {
        proxy.metric("inbound_http_errors_total", &[("error", "header_timeout")]) == 1.0
    }));
    assert!(eventually(Duration::from_secs(5), || {
        proxy.metric(
            "inbound_tcp_accept_errors_total",
            &[("error", "detect_timeout")],
        ) == 1.0
    }));
    drop(silent.shutdown(std::net::Shutdown::Both));
    // Nothing leaks: every client connection is closed in the end.
    assert!(
        eventually(Duration::from_secs(5), || proxy
            .metric("tcp_open_connections", &[("peer", "src")])
            == 0.0),
        "{}",
        proxy.metrics()
    );
    proxy.assert_healthy();
}

#[test]
fn oversized_headers_get_431_on_http1_and_a_reset_on_http2() {
    let nginx = Nginx::start(None, "127.0.0.1");
    let big = format!("x-big: {}", "a".repeat(20_000));
    let target = format!("127.0.0.1:{}", nginx.port);
    let proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let url = format!("http://{}/", proxy.inbound);
    let (ok, out, err) = curl(
        None,
        &["-H", &big, "-w", "%{http_code}", "-o", "/dev/null", &url],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "431");
    assert_eq!(
        proxy.metric(
            "inbound_http_errors_total",
            &[("error", "header_too_large")]
        ),
        1.0
    );
    drop(proxy);

    let target = format!("127.0.0.1:{}", nginx.h2_port);
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let url = format!("http://{}/", proxy.inbound);
    let (ok, _, err) = curl(None, &["--http2-prior-knowledge", "-H", &big, &url]);
    assert!(!ok, "oversized HTTP/2 headers must reset the stream");
    assert!(err.contains("stream") || err.contains("HTTP/2"), "{err}");
    assert_eq!(
        proxy.metric(
            "inbound_http_errors_total",
            &[("error", "header_too_large")]
        ),
        1.0
    );
    // Far over the limit: h2 itself refuses; the proxy still serves.
    let huge = format!("x-big: {}", "a".repeat(100_000));
    let (ok, out, _) = curl(
        None,
        &[
            "--http2-prior-knowledge",
            "-H",
            &huge,
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &url,
        ],
    );
    assert!(!ok || out == "431", "{out}");
    let (ok, out, err) = curl(None, &["--http2-prior-knowledge", &url]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n");
    proxy.assert_healthy();
}

#[test]
fn unreachable_app_is_a_counted_502() {
    let dead = format!("127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &dead)]);
    let url = format!("http://{}/", proxy.inbound);
    let (ok, out, _) = curl(None, &["-w", "%{http_code}", "-o", "/dev/null", &url]);
    assert!(ok);
    assert_eq!(out, "502");
    let (_, _, _) = curl(None, &["-D", "-", "-o", "/dev/null", &url]);
    let failure = [
        ("direction", "inbound"),
        ("classification", "failure"),
        ("status_code", "502"),
        ("error", "connect"),
    ];
    assert_eq!(proxy.metric("response_total", &failure), 2.0);
    proxy.assert_healthy();
}

/// Reads an HTTP/1 request head (up to the empty line).
fn read_head(s: &TcpStream) {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while r.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
}

/// An HTTP/1.1 server that answers every request with a chunked body that
/// never ends, one chunk per 10 ms, until the peer goes away.
fn endless_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                read_head(&s);
                let mut s = s;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                for _ in 0..3000 {
                    if s.write_all(b"5\r\nchunk\r\n").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
    });
    addr
}

/// A server that reads the request head, then resets the connection.
fn resetting_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = (&s).read(&mut buf);
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    addr
}

#[test]
fn peers_that_reset_are_counted_and_contained() {
    // The app resets: the client gets a 502, counted as a failure.
    let target = resetting_server().to_string();
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let url = format!("http://{}/", proxy.inbound);
    let (ok, out, _) = curl(None, &["-w", "%{http_code}", "-o", "/dev/null", &url]);
    assert!(ok);
    assert_eq!(out, "502");
    assert_eq!(
        proxy.metric(
            "response_total",
            &[("classification", "failure"), ("error", "upstream")]
        ),
        1.0
    );
    proxy.assert_healthy();
    drop(proxy);

    // The client resets mid-response: the exchange counts as cancelled,
    // the connection to the app is closed, nothing stays open.
    let target = endless_server().to_string();
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let mut c = connect(proxy.inbound);
    c.write_all(b"GET /stream HTTP/1.1\r\nHost: app\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    let cancelled = [("classification", "failure"), ("error", "cancel")];
    assert!(
        eventually(Duration::from_secs(5), || proxy
            .metric("response_total", &cancelled)
            == 1.0),
        "{}",
        proxy.metrics()
    );
    assert!(eventually(Duration::from_secs(5), || proxy
        .metric("tcp_open_connections", &[])
        == 0.0));
    assert_eq!(
        proxy.metric(
            "tcp_close_total",
            &[("peer", "src"), ("errno", "ECONNRESET")]
        ),
        1.0
    );
    proxy.assert_healthy();
}

#[test]
fn connection_limit_refuses_and_counts() {
    let echo = TcpEcho::start(None);
    let target = echo.addr.to_string();
    let mut proxy = Proxy::start(&[
        ("PIMESH_PROXY_INBOUND_TARGET", &target),
        ("PIMESH_PROXY_MAX_CONNECTIONS", "2"),
    ]);
    // Two opaque connections (a first byte that is not HTTP or TLS).
    let mut a = connect(proxy.inbound);
    let mut b = connect(proxy.inbound);
    a.write_all(b"\x00").unwrap();
    b.write_all(b"\x00").unwrap();
    assert!(eventually(Duration::from_secs(5), || proxy
        .metric("tcp_open_connections", &[("peer", "src")])
        == 2.0));
    let mut third = connect(proxy.inbound);
    assert!(
        read_all(&mut third).is_empty(),
        "over the limit: closed at once"
    );
    assert_eq!(
        proxy.metric(
            "inbound_tcp_accept_errors_total",
            &[("error", "connection_limit")]
        ),
        1.0
    );
    drop((a, b));
    assert!(eventually(Duration::from_secs(5), || proxy
        .metric("tcp_open_connections", &[("peer", "src")])
        == 0.0));
    assert_eq!(tcp_roundtrip(proxy.inbound, b"\x00after"), b"\x00after");
    proxy.assert_healthy();
}

#[test]
fn non_http_in_explicit_mode_is_closed_and_counted() {
    let mut proxy = Proxy::start(&[]);
    let mut c = connect(proxy.outbound);
    c.write_all(&[0u8, 1, 2, 3, 4, 5]).unwrap();
    assert!(read_all(&mut c).is_empty());
    assert_eq!(
        proxy.metric(
            "outbound_tcp_accept_errors_total",
            &[("error", "no_target")]
        ),
        1.0
    );
    proxy.assert_healthy();
}

#[test]
fn bad_configuration_exits_64_naming_the_variable() {
    for (name, value) in [
        ("PIMESH_PROXY_THREADS", "many"),
        ("PIMESH_PROXY_OPAQUE_PORTS", "25,70000"),
        ("PIMESH_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0"),
        ("PIMESH_PROXY_DETECT_TIMEOUT", "soon"),
        ("PIMESH_PROXY_LOG", "pimesh=chatty"),
    ] {
        let out = run(
            std::process::Command::new(proxy_bin()).env(name, value),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(64), "{name}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name) && err.contains(value), "{err}");
    }
    let out = run(
        std::process::Command::new(proxy_bin()).arg("--bogus"),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64));
    let out = run(
        std::process::Command::new(proxy_bin()).arg("--version"),
        Duration::from_secs(10),
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pimesh-proxy "));
}

/// A server that answers after `delay`.
fn slow_server(delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                read_head(&s);
                std::thread::sleep(delay);
                let mut s = s;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nslow\n");
            });
        }
    });
    addr
}

#[test]
fn admin_endpoints_and_shutdown_drains_in_flight_requests() {
    let target = slow_server(Duration::from_millis(700)).to_string();
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let admin = format!("http://{}", proxy.admin);
    assert_eq!(curl(None, &[&format!("{admin}/live")]).1, "live\n");
    assert_eq!(curl(None, &[&format!("{admin}/ready")]).1, "ready\n");
    let (_, code, _) = curl(
        None,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{admin}/nope"),
        ],
    );
    assert_eq!(code, "404");
    // Log level: read, change, read back; a bad filter is refused.
    let level = curl(None, &[&format!("{admin}/proxy-log-level")]).1;
    assert!(
        level.contains("pimesh=debug") && level.contains("warn"),
        "{level}"
    );
    let (ok, out, _) = curl(
        None,
        &[
            "-X",
            "PUT",
            "--data",
            "info",
            &format!("{admin}/proxy-log-level"),
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        curl(None, &[&format!("{admin}/proxy-log-level")]).1,
        "info\n"
    );
    let (_, code, _) = curl(
        None,
        &[
            "-X",
            "PUT",
            "--data",
            "x=loud",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{admin}/proxy-log-level"),
        ],
    );
    assert_eq!(code, "400");
    // GET /shutdown is not allowed; POST from loopback drains and exits.
    let (_, code, _) = curl(
        None,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{admin}/shutdown"),
        ],
    );
    assert_eq!(code, "405");

    let inbound = proxy.inbound;
    let in_flight = std::thread::spawn(move || curl(None, &[&format!("http://{inbound}/")]));
    assert!(eventually(Duration::from_secs(5), || proxy
        .metric("request_total", &[])
        == 1.0));
    let (ok, out, _) = curl(None, &["-X", "POST", &format!("{admin}/shutdown")]);
    assert!(ok);
    assert_eq!(out, "shutdown\n");
    let (ok, out, err) = in_flight.join().unwrap();
    assert!(
        ok,
        "in-flight request must complete during the drain: {err}"
    );
    assert_eq!(out, "slow\n");
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("proxy exits after draining");
    assert!(status.success(), "{status}");
    assert!(!proxy.log().contains("panicked"));
}

#[test]
fn a_client_that_gives_up_before_the_response_is_counted_as_cancelled() {
    let target = slow_server(Duration::from_millis(1500)).to_string();
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let url = format!("http://{}/", proxy.inbound);
    let (ok, _, _) = curl(None, &["--max-time", "0.3", &url]);
    assert!(!ok, "curl must time out");
    let cancelled = [
        ("direction", "inbound"),
        ("classification", "failure"),
        ("error", "cancel"),
    ];
    assert!(
        eventually(Duration::from_secs(5), || proxy
            .metric("response_total", &cancelled)
            == 1.0),
        "{}",
        proxy.metrics()
    );
    assert_eq!(proxy.metric("request_total", &[]), 1.0);
    proxy.assert_healthy();
}
