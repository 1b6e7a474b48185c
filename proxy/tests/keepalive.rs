//! HTTP/1 keep-alive connections parked between requests (`http::park`):
//! a request after a long idle pause, pipelined requests that straddle
//! the hand-back between the parked socket and hyper, a request with a
//! body followed by body-less ones, and shutdown of a parked connection.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::*;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response (status line, headers, a `Content-Length` body);
/// returns the status code and the body.
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {line:?}"));
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: web\r\n\r\n")
}

#[test]
fn keep_alive_requests_after_a_pause_and_pipelined_across_the_hand_back() {
    let nginx = Nginx::start(None, "127.0.0.1");
    let target = format!("127.0.0.1:{}", nginx.port);
    let mut proxy = Proxy::start(&[
        ("PIMESH_PROXY_INBOUND_TARGET", &target),
        ("PIMESH_PROXY_HEADER_READ_TIMEOUT", "1s"),
    ]);
    let client = connect(proxy.inbound);
    let mut w = client.try_clone().unwrap();
    let mut r = BufReader::new(client);

    // One request, then a pause longer than the header read timeout: the
    // parked connection is still served (it waits for the idle timeout).
    w.write_all(get("/").as_bytes()).unwrap();
    assert_eq!(read_response(&mut r), (200, "hello from nginx\n".into()));
    std::thread::sleep(Duration::from_millis(1500));
    w.write_all(get("/index.html").as_bytes()).unwrap();
    assert_eq!(read_response(&mut r), (200, "hello from nginx\n".into()));

    // Pipelined: two whole requests and the first half of a third in one
    // write; the rest after the connection went idle with those bytes
    // read ahead by hyper, then two more at once.
    let third = get("/");
    let (head, tail) = third.split_at(10);
    w.write_all(format!("{}{}{head}", get("/"), get("/nope")).as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut r), (200, "hello from nginx\n".into()));
    assert_eq!(read_response(&mut r).0, 404);
    std::thread::sleep(Duration::from_millis(300));
    w.write_all(format!("{tail}{}{}", get("/"), get("/")).as_bytes())
        .unwrap();
    for _ in 0..3 {
        assert_eq!(read_response(&mut r), (200, "hello from nginx\n".into()));
    }

    // A request with a body (nginx answers 405 to a POST of a static
    // file, after reading it), then a body-less one on the same connection.
    let body = "x".repeat(3000);
    w.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_response(&mut r).0, 405);
    std::thread::sleep(Duration::from_millis(300));
    w.write_all(get("/").as_bytes()).unwrap();
    assert_eq!(read_response(&mut r), (200, "hello from nginx\n".into()));
    std::thread::sleep(Duration::from_millis(300));
    w.write_all(get("/").as_bytes()).unwrap();
    assert_eq!(read_response(&mut r), (200, "hello from nginx\n".into()));

    // All of it on one client connection.
    let m = proxy.metrics();
    let inbound = [("direction", "inbound")];
    let src = [("direction", "inbound"), ("peer", "src")];
    assert_eq!(sum_metric(&m, "tcp_open_total", &src), 1.0, "{m}");
    assert_eq!(sum_metric(&m, "request_total", &inbound), 10.0, "{m}");
    let ok = [("direction", "inbound"), ("status_code", "200")];
    assert_eq!(sum_metric(&m, "response_total", &ok), 8.0, "{m}");

    // A parked connection does not hold up shutdown: it is closed.
    let mut admin = connect(proxy.admin);
    admin
        .write_all(b"POST /shutdown HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
}

#[test]
fn a_parked_connection_idles_out_after_being_served_again() {
    let nginx = Nginx::start(None, "127.0.0.1");
    let target = format!("127.0.0.1:{}", nginx.port);
    let proxy = Proxy::start(&[
        ("PIMESH_PROXY_INBOUND_TARGET", &target),
        ("PIMESH_PROXY_IDLE_TIMEOUT", "1s"),
    ]);
    let client = connect(proxy.inbound);
    let mut w = client.try_clone().unwrap();
    let mut r = BufReader::new(client);
    // Parked after each request (300 ms > the 20 ms linger), served again,
    // and kept past the first round's idle timer.
    for _ in 0..4 {
        w.write_all(get("/").as_bytes()).unwrap();
        assert_eq!(read_response(&mut r), (200, "hello from nginx\n".into()));
        std::thread::sleep(Duration::from_millis(300));
    }
    // Then silent: the proxy closes it (within twice the timeout).
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    println!(
        "closed after {:?} of silence",
        started.elapsed() + Duration::from_millis(300)
    );
    assert!(rest.is_empty(), "{rest:?}");
    let m = proxy.metrics();
    let idle = [("error", "idle_timeout")];
    assert_eq!(
        sum_metric(&m, "inbound_tcp_accept_errors_total", &idle),
        1.0,
        "{m}"
    );
}
