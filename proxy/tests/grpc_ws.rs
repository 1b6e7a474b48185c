//! gRPC (Python grpcio: unary, bidirectional streaming, status codes and
//! trailers) and WebSocket (Python websockets) through the real proxy.

mod support;

use support::*;

#[test]
fn grpc_unary_and_bidi_streaming_keep_trailers_and_status() {
    let server = PyPeer::start("grpc_echo.py");
    let target = format!("127.0.0.1:{}", server.port);
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let out = py_client(
        None,
        "grpc_echo.py",
        &[
            "--target",
            &proxy.inbound.to_string(),
            "--unary",
            "10",
            "--messages",
            "50",
        ],
    );
    // The client checked every echo, trailer, status and message itself.
    assert!(out.contains("\"unary_ok\": 10"), "{out}");
    assert!(out.contains("\"error_code\": 5"), "{out}");
    assert!(out.contains("\"error_trailer\": \"failed\""), "{out}");
    assert!(out.contains("\"bidi_ok\": 50"), "{out}");
    assert!(out.contains("\"bidi_trailer\": \"bidi-50\""), "{out}");

    let m = proxy.metrics();
    let labels = [("direction", "inbound"), ("target_addr", target.as_str())];
    assert_eq!(sum_metric(&m, "request_total", &labels), 12.0, "{m}");
    let ok = [
        labels.as_slice(),
        &[("grpc_status", "0"), ("classification", "success")],
    ]
    .concat();
    assert_eq!(sum_metric(&m, "response_total", &ok), 11.0, "{m}");
    let failed = [
        labels.as_slice(),
        &[("grpc_status", "5"), ("classification", "failure")],
    ]
    .concat();
    assert_eq!(sum_metric(&m, "response_total", &failed), 1.0, "{m}");
    proxy.assert_healthy();
}

#[test]
fn grpc_to_an_unreachable_app_gets_grpc_unavailable() {
    let dead = format!("127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &dead)]);
    let out = run(
        std::process::Command::new("python3")
            .arg(peer_script("grpc_echo.py"))
            .args([
                "client",
                "--target",
                &proxy.inbound.to_string(),
                "--unary",
                "1",
            ]),
        std::time::Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UNAVAILABLE"), "{err}");
    assert!(
        err.contains("cannot connect"),
        "grpc-message carries the proxy's reason: {err}"
    );
    let failed = [
        ("grpc_status", "14"),
        ("classification", "failure"),
        ("error", "connect"),
    ];
    assert_eq!(proxy.metric("response_total", &failed), 1.0);
    proxy.assert_healthy();
}

#[test]
fn websocket_echo_is_byte_exact() {
    let server = PyPeer::start("ws_echo.py");
    let target = format!("127.0.0.1:{}", server.port);
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let url = format!("ws://{}/echo", proxy.inbound);
    let out = py_client(None, "ws_echo.py", &["--url", &url, "--messages", "40"]);
    assert!(out.contains("\"echoed\": 40"), "{out}");
    assert!(out.contains("\"close_code\": 1000"), "{out}");
    let switched = [
        ("direction", "inbound"),
        ("status_code", "101"),
        ("classification", "success"),
    ];
    assert_eq!(proxy.metric("response_total", &switched), 1.0);
    // The upgraded connection is closed on both sides afterwards.
    assert!(eventually(std::time::Duration::from_secs(5), || proxy
        .metric("tcp_open_connections", &[])
        == 0.0));
    proxy.assert_healthy();
}
