//! HTTP/1.1 and HTTP/2 through the real proxy binary to a real nginx, with
//! curl and h2load as clients: inbound (fixed target, as on hosts without
//! iptables) and outbound as an explicit HTTP proxy (`http_proxy`,
//! absolute-form and `CONNECT`). Metrics must count exactly what was sent.

mod support;

use std::time::Duration;
use support::*;

#[test]
fn curl_http1_inbound_keepalive_and_exact_metrics() {
    let nginx = Nginx::start(None, "127.0.0.1");
    let target = format!("127.0.0.1:{}", nginx.port);
    let mut proxy = Proxy::start(&[
        ("PIMESH_PROXY_INBOUND_TARGET", &target),
        (
            "PIMESH_PROXY_WORKLOAD_LABELS",
            "namespace=shop,deployment=web,pod=web-1",
        ),
    ]);
    let url = format!("http://{}/", proxy.inbound);
    // Five requests on one keep-alive connection (curl reuses it).
    let (ok, out, err) = curl(None, &[&url, &url, &url, &url, &url]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n".repeat(5));
    // A 1 MiB body comes back byte-exact.
    let dir = TempDir::new("big");
    let file = dir.path().join("big.bin");
    let (ok, _, err) = curl(
        None,
        &["-o", file.to_str().unwrap(), &format!("{url}big.bin")],
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), pattern(1 << 20));
    // A 503 from the app is a failure.
    let (ok, out, _) = curl(
        None,
        &[
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &format!("{url}status/503"),
        ],
    );
    assert!(ok);
    assert_eq!(out, "503");

    let m = proxy.metrics();
    let labels = [
        ("direction", "inbound"),
        ("target_addr", target.as_str()),
        ("namespace", "shop"),
        ("deployment", "web"),
        ("pod", "web-1"),
        ("tls", "no_identity"),
    ];
    assert_eq!(sum_metric(&m, "request_total", &labels), 7.0, "{m}");
    let ok_labels = [
        labels.as_slice(),
        &[("status_code", "200"), ("classification", "success")],
    ]
    .concat();
    assert_eq!(sum_metric(&m, "response_total", &ok_labels), 6.0, "{m}");
    let failed = [
        labels.as_slice(),
        &[("status_code", "503"), ("classification", "failure")],
    ]
    .concat();
    assert_eq!(sum_metric(&m, "response_total", &failed), 1.0, "{m}");
    assert_eq!(
        sum_metric(&m, "response_latency_ms_count", &labels),
        7.0,
        "{m}"
    );
    // Three client connections (keep-alive reused one), three to nginx.
    let src = [labels.as_slice(), &[("peer", "src")]].concat();
    assert_eq!(sum_metric(&m, "tcp_open_total", &src), 3.0, "{m}");
    assert!(sum_metric(&m, "tcp_write_bytes_total", &src) > (1 << 20) as f64);
    assert!(m.contains("# TYPE response_latency_ms histogram"));
    proxy.assert_healthy();
}

#[test]
fn curl_http2_prior_knowledge_and_h2load_inbound() {
    let nginx = Nginx::start(None, "127.0.0.1");
    let target = format!("127.0.0.1:{}", nginx.h2_port);
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let url = format!("http://{}/", proxy.inbound);
    let (ok, out, err) = curl(
        None,
        &["--http2-prior-knowledge", "-w", " %{http_version}", &url],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n 2");
    let succeeded = h2load(None, &["-n", "400", "-c", "4", "-m", "8", &url]);
    assert_eq!(succeeded, 400);
    let labels = [("direction", "inbound"), ("target_addr", target.as_str())];
    assert_eq!(proxy.metric("request_total", &labels), 401.0);
    let ok = [
        labels.as_slice(),
        &[("classification", "success"), ("status_code", "200")],
    ]
    .concat();
    assert_eq!(proxy.metric("response_total", &ok), 401.0);
    proxy.assert_healthy();
}

#[test]
fn h2load_http1_inbound() {
    let nginx = Nginx::start(None, "127.0.0.1");
    let target = format!("127.0.0.1:{}", nginx.port);
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let url = format!("http://{}/", proxy.inbound);
    assert_eq!(h2load(None, &["--h1", "-n", "400", "-c", "4", &url]), 400);
    assert_eq!(
        proxy.metric("request_total", &[("direction", "inbound")]),
        400.0
    );
    proxy.assert_healthy();
}

#[test]
fn explicit_http_proxy_absolute_form_env_and_connect() {
    let nginx = Nginx::start(None, "127.0.0.1");
    let origin = format!("127.0.0.1:{}", nginx.port);
    let mut proxy = Proxy::start(&[]);
    let proxy_url = format!("http://{}", proxy.outbound);
    let url = format!("http://{origin}/");

    // Absolute-form through `-x`.
    let (ok, out, err) = curl(None, &["-x", &proxy_url, &url]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n");

    // The way apps use it: the http_proxy environment variable.
    let out = run(
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", &url])
            .env("http_proxy", &proxy_url),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"hello from nginx\n");

    // CONNECT tunnel (curl -p), HTTP/1.1 and HTTP/2 inside it.
    let (ok, out, err) = curl(None, &["-p", "-x", &proxy_url, &url]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n");
    let h2_url = format!("http://127.0.0.1:{}/", nginx.h2_port);
    let (ok, out, err) = curl(
        None,
        &["-p", "-x", &proxy_url, "--http2-prior-knowledge", &h2_url],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n");

    // An unreachable origin is a 502 counted as a failure.
    let dead = format!("127.0.0.1:{}", free_port());
    let (ok, out, _) = curl(
        None,
        &[
            "-x",
            &proxy_url,
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &format!("http://{dead}/"),
        ],
    );
    assert!(ok);
    assert_eq!(out, "502");

    let m = proxy.metrics();
    let to_origin = [("direction", "outbound"), ("target_addr", origin.as_str())];
    // Two absolute-form requests and one CONNECT to the HTTP/1 origin.
    assert_eq!(sum_metric(&m, "request_total", &to_origin), 3.0, "{m}");
    let failed = [
        ("direction", "outbound"),
        ("target_addr", dead.as_str()),
        ("classification", "failure"),
        ("status_code", "502"),
    ];
    assert_eq!(sum_metric(&m, "response_total", &failed), 1.0, "{m}");
    proxy.assert_healthy();
}

/// An HTTP/1.1 server (hyper) that streams each request body back as the
/// response body (chunked), in a thread of its own.
fn echo_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let chunked = req
                                .headers()
                                .get("transfer-encoding")
                                .map(|v| v.as_bytes().to_vec());
                            let mut rsp = http::Response::new(req.into_body());
                            if let Some(v) = chunked {
                                rsp.headers_mut().insert(
                                    "x-request-transfer-encoding",
                                    http::HeaderValue::from_bytes(&v).unwrap(),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(rsp)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    addr
}

#[test]
fn chunked_request_and_response_bodies_stream_through() {
    let target = echo_server().to_string();
    let mut proxy = Proxy::start(&[("PIMESH_PROXY_INBOUND_TARGET", &target)]);
    let dir = TempDir::new("chunked");
    let (input, output) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
    std::fs::write(&input, pattern(5 << 20)).unwrap();
    let url = format!("http://{}/echo", proxy.inbound);
    let (ok, headers, err) = curl(
        None,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", input.display()),
            "-D",
            "-",
            "-o",
            output.to_str().unwrap(),
            &url,
        ],
    );
    assert!(ok, "{err}");
    let headers = headers.to_ascii_lowercase();
    assert!(
        headers.contains("x-request-transfer-encoding: chunked"),
        "{headers}"
    );
    assert!(headers.contains("transfer-encoding: chunked"), "{headers}");
    assert!(
        std::fs::read(&output).unwrap() == pattern(5 << 20),
        "body differs"
    );
    assert_eq!(
        proxy.metric("response_total", &[("classification", "success")]),
        1.0
    );
    proxy.assert_healthy();
}
