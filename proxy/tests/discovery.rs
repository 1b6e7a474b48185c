//! Discovery against the real standalone controller (`pimesh controller`
//! with its registry): names and addresses resolved and balanced,
//! unknown names refused, registration renewed and withdrawn, opaque TCP
//! upstream listeners, `dst_*` labels.

mod support;

use std::time::Duration;
use support::outbound::{
    backend_proxy, client_proxy, load, service_add, service_json, Backend, ProxyClient,
};
use support::{eventually, free_port, Controller, TcpEcho};

#[test]
fn a_service_name_is_balanced_over_its_endpoints() {
    let ctl = Controller::start(&[]);
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    service_add(&ctl, "web", 80, &[a.addr, b.addr], &[]);
    let client = client_proxy(&ctl, &[]);
    // Every name form of the same service, with the port.
    for authority in [
        "web",
        "web:80",
        "web.default:80",
        "web.default.svc.cluster.local",
    ] {
        let t = load(client.outbound, authority, 2, 40, Duration::ZERO);
        assert_eq!(t.ok(), 40, "{authority}: {t:?}");
    }
    // Both endpoints serve (how evenly is the balancer's business: p2c
    // over two endpoints prefers the cheaper one).
    assert!(a.hits() > 0 && b.hits() > 0, "{} {}", a.hits(), b.hits());
    assert_eq!(
        client.metric("discovery_watches", &[]),
        1.0,
        "one watch shared by every connection and name form"
    );
    // CONNECT web:80 tunnels to one of its endpoints.
    let proxy = format!("http://{}", client.outbound);
    let (ok, body, err) = support::curl(None, &["-p", "-x", &proxy, "http://web:80/"]);
    assert!(ok && (body == "a" || body == "b"), "{body:?} {err}");
}

#[test]
fn an_unknown_name_is_refused_with_a_clear_503_and_counted() {
    let ctl = Controller::start(&[]);
    let up = free_port();
    let upstream = format!("127.0.0.1:{up}=nope:5432");
    let mut client = client_proxy(&ctl, &[("PIMESH_PROXY_TCP_UPSTREAMS", &upstream)]);
    let mut c = ProxyClient::new(client.outbound);
    let a = c.request("GET", "nope:8080", "/", b"").unwrap();
    assert_eq!(a.status, 503);
    let body = String::from_utf8_lossy(&a.body);
    assert!(body.contains("unknown service nope.default:8080"), "{body}");
    assert!(
        a.head.to_lowercase().contains("pimesh-proxy-error"),
        "{}",
        a.head
    );
    assert_eq!(
        client.metric(
            "response_total",
            &[("direction", "outbound"), ("error", "unknown_service")]
        ),
        1.0
    );
    // Other domains keep using DNS (here: an unresolvable name → 502).
    let a = c.request("GET", "nope.example.invalid", "/", b"").unwrap();
    assert_eq!(a.status, 502, "{}", String::from_utf8_lossy(&a.body));
    // Opaque TCP to an unknown service: closed, counted.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", up)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    assert!(eventually(Duration::from_secs(5), || client.metric(
        "outbound_tcp_accept_errors_total",
        &[("error", "unknown_service")]
    ) == 1.0));
    client.assert_healthy();
}

#[test]
fn an_address_of_a_service_is_balanced_across_the_service() {
    let ctl = Controller::start(&[]);
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    service_add(&ctl, "web", 80, &[a.addr, b.addr], &[]);
    let client = client_proxy(&ctl, &[]);
    // The app names one endpoint's address (as a transparent connection's
    // original destination would): the whole service serves it.
    let t = load(client.outbound, &a.addr.to_string(), 2, 60, Duration::ZERO);
    assert_eq!(t.ok(), 60, "{t:?}");
    assert!(t.share("b") > 0.0, "balanced across the service: {t:?}");
    // An address that is no service's is forwarded as it is.
    let other = Backend::start("other");
    let t = load(
        client.outbound,
        &other.addr.to_string(),
        1,
        5,
        Duration::ZERO,
    );
    assert_eq!(t.backends.get("other"), Some(&5), "{t:?}");
}

#[test]
fn registration_is_renewed_used_over_mtls_and_withdrawn_at_shutdown() {
    let ctl = Controller::start(&["--lease-ttl", "6s"]);
    let app = Backend::start("web-1");
    let backend = backend_proxy(
        &ctl,
        "web:80",
        app.addr,
        &[(
            "PIMESH_PROXY_WORKLOAD_LABELS",
            "namespace=default,deployment=web,pod=web-1",
        )],
    );
    let get = || service_json(&ctl, "web").unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(20), || get()
            .contains(&backend.inbound.to_string())),
        "registered with its inbound listener as proxy_addr: {}\n{}",
        get(),
        backend.log()
    );
    let json = get();
    // `addr` is the pod's IP and the service port (what a transparent
    // client dials); `proxy_addr` the inbound listener (no redirection).
    assert!(json.contains("\"127.0.0.1:80\""), "addr: {json}");
    assert!(
        json.contains(&backend.admin.to_string()),
        "admin_addr: {json}"
    );
    assert!(json.contains("web-1"), "labels: {json}");
    // Renewed every ttl/3: still there after more than one lease.
    std::thread::sleep(Duration::from_secs(8));
    assert!(get().contains(&backend.inbound.to_string()), "{}", get());
    assert!(backend.metric("discovery_registrations_total", &[("result", "success")]) >= 3.0);

    // Clients reach it over mTLS, with its identity and labels.
    let client = client_proxy(&ctl, &[]);
    let t = load(client.outbound, "web", 1, 10, Duration::ZERO);
    assert_eq!(t.backends.get("web-1"), Some(&10), "{t:?}");
    let labels = [
        ("direction", "outbound"),
        ("tls", "true"),
        (
            "server_id",
            "web.default.serviceaccount.identity.pimesh.cluster.local",
        ),
        ("dst_namespace", "default"),
        ("dst_service", "web"),
        ("dst_deployment", "web"),
        ("dst_pod", "web-1"),
        ("classification", "success"),
    ];
    assert_eq!(
        client.metric("response_total", &labels),
        10.0,
        "{}",
        client.metrics()
    );

    // Graceful shutdown withdraws it long before the lease would expire.
    support::curl(
        None,
        &["-X", "POST", &format!("http://{}/shutdown", backend.admin)],
    );
    assert!(
        eventually(Duration::from_millis(1500), || !get()
            .contains(&backend.inbound.to_string())),
        "deregistered: {}",
        get()
    );
}

#[test]
fn tcp_upstream_listeners_balance_connections_over_the_service() {
    let ctl = Controller::start(&[]);
    let (a, b) = (TcpEcho::start(Some(b"A")), TcpEcho::start(Some(b"B")));
    service_add(
        &ctl,
        "db",
        5432,
        &[a.addr, b.addr],
        &["--protocol", "opaque"],
    );
    let port = free_port();
    let upstream = format!("127.0.0.1:{port}=db:5432");
    let mut client = client_proxy(&ctl, &[("PIMESH_PROXY_TCP_UPSTREAMS", &upstream)]);
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Ten connections held open: balanced by open connections, so each
    // endpoint gets about half (the banner tells which one answered).
    let held: Vec<std::net::TcpStream> = (0..10)
        .map(|_| std::net::TcpStream::connect(upstream).unwrap())
        .collect();
    let mut banners = std::collections::BTreeMap::new();
    for mut s in &held {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        std::io::Read::read_exact(&mut s, &mut b).unwrap();
        *banners.entry(b[0]).or_insert(0) += 1;
    }
    let (a_n, b_n) = (banners.get(&b'A'), banners.get(&b'B'));
    assert!(
        a_n.is_some_and(|n| *n >= 3) && b_n.is_some_and(|n| *n >= 3),
        "{banners:?}"
    );
    drop(held);
    let payload = support::pattern(100_000);
    for _ in 0..10 {
        let out = support::tcp_roundtrip(upstream, &payload);
        assert_eq!(
            &out[1..],
            &payload[..],
            "byte-exact through the upstream listener"
        );
    }
    assert_eq!(
        client.metric(
            "tcp_open_total",
            &[
                ("peer", "src"),
                ("target_addr", "db.default:5432"),
                ("dst_service", "db")
            ]
        ),
        20.0,
        "{}",
        client.metrics()
    );
    client.assert_healthy();
}

#[test]
fn external_endpoint_labels_become_dst_labels() {
    let ctl = Controller::start(&[]);
    let legacy = Backend::start("legacy");
    service_add(
        &ctl,
        "api",
        8080,
        &[legacy.addr],
        &["--label", "deployment=legacy", "--label", "pod=legacy-0"],
    );
    let client = client_proxy(&ctl, &[]);
    let t = load(client.outbound, "api.default:8080", 1, 5, Duration::ZERO);
    assert_eq!(t.ok(), 5, "{t:?}");
    let json = ctl.cli(&["service", "get", "api", "-o", "json"]);
    assert!(json.contains("legacy-0"), "{json}");
    let target = legacy.addr.to_string();
    let labels = [
        ("target_addr", target.as_str()),
        ("tls", "no_identity"),
        ("dst_namespace", "default"),
        ("dst_service", "api"),
        ("dst_deployment", "legacy"),
        ("dst_pod", "legacy-0"),
    ];
    assert_eq!(
        client.metric("request_total", &labels),
        5.0,
        "{}",
        client.metrics()
    );
}

#[test]
fn grpc_over_http2_is_balanced_and_retried_on_its_status() {
    let ctl = Controller::start(&[]);
    let (a, b) = (
        support::PyPeer::start("grpc_echo.py"),
        support::PyPeer::start("grpc_echo.py"),
    );
    let addrs: Vec<std::net::SocketAddr> = [a.port, b.port]
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect();
    service_add(&ctl, "echo", 9090, &addrs, &["--protocol", "http"]);
    // gRPC is retried on its configured statuses; NOT_FOUND here so that
    // the client's expected-failure call is retried (and still fails).
    support::outbound::service_set(
        &ctl,
        "echo",
        &[
            "--retries",
            "2",
            "--retry-grpc",
            "not-found",
            "--failure-accrual",
            "1000",
        ],
    );
    let client = client_proxy(&ctl, &[]);
    let target = client.outbound.to_string();
    // Unary calls up to 100 KiB, trailers, and an interleaved bidi stream
    // whose body is recorded for retries while it streams.
    let out = support::py_client(
        None,
        "grpc_echo.py",
        &[
            "--target",
            &target,
            "--authority",
            "echo:9090",
            "--unary",
            "20",
            "--messages",
            "20",
        ],
    );
    assert!(out.contains("\"bidi_ok\": 20"), "{out}");
    assert_eq!(
        client.metric(
            "outbound_http_retries_total",
            &[("reason", "grpc"), ("result", "retried")]
        ),
        2.0,
        "{}",
        client.metrics()
    );
    let ok = [
        ("dst_service", "echo"),
        ("grpc_status", "0"),
        ("classification", "success"),
    ];
    assert!(
        client.metric("response_total", &ok) >= 21.0,
        "{}",
        client.metrics()
    );
}

#[test]
fn idle_watches_are_closed_and_their_number_is_bounded() {
    let ctl = Controller::start(&[]);
    let a = Backend::start("a");
    service_add(&ctl, "web", 80, &[a.addr], &[]);
    service_add(&ctl, "api", 80, &[a.addr], &[]);
    let client = client_proxy(
        &ctl,
        &[
            ("PIMESH_PROXY_DISCOVERY_IDLE_TIMEOUT", "1s"),
            ("PIMESH_PROXY_DISCOVERY_MAX_WATCHES", "1"),
        ],
    );
    let mut c = ProxyClient::new(client.outbound);
    assert_eq!(c.request("GET", "web", "/", b"").unwrap().status, 200);
    assert_eq!(client.metric("discovery_watches", &[]), 1.0);
    // A second destination while the first is watched: over the bound.
    let a2 = c.request("GET", "api", "/", b"").unwrap();
    assert_eq!(a2.status, 503);
    assert!(String::from_utf8_lossy(&a2.body).contains("api.default:80"));
    assert_eq!(
        client.metric("response_total", &[("error", "discovery_unavailable")]),
        1.0
    );
    // Unused, the watch closes; then the other destination can be watched.
    assert!(eventually(Duration::from_secs(10), || client
        .metric("discovery_watches", &[])
        == 0.0));
    assert_eq!(c.request("GET", "api", "/", b"").unwrap().status, 200);
}

#[test]
fn without_the_controller_unknown_addresses_wait_once_then_pass_through() {
    let mut ctl = Controller::start(&[]);
    let client = client_proxy(&ctl, &[("PIMESH_PROXY_DISCOVERY_WAIT", "2s")]);
    ctl.kill();
    let other = Backend::start("other");
    let start = std::time::Instant::now();
    let t = load(
        client.outbound,
        &other.addr.to_string(),
        1,
        20,
        Duration::ZERO,
    );
    assert_eq!(t.backends.get("other"), Some(&20), "{t:?}");
    // Only the first request waited for an answer (2 s); the others did
    // not wait again (20 waits would be 40 s).
    let took = start.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    // A name cannot be resolved: 503 naming it, not a hang.
    let mut c = ProxyClient::new(client.outbound);
    let a = c.request("GET", "web", "/", b"").unwrap();
    assert_eq!(a.status, 503);
    assert!(String::from_utf8_lossy(&a.body).contains("discovery unavailable"));
}

#[test]
fn shutdown_is_not_held_up_by_idle_connections_to_endpoints() {
    let ctl = Controller::start(&[]);
    let app = Backend::start("web-1");
    let _backend = backend_proxy(&ctl, "web:80", app.addr, &[]);
    let plain = Backend::start("plain");
    service_add(&ctl, "api", 80, &[plain.addr], &[]);
    let mut client = client_proxy(&ctl, &[]);
    assert!(eventually(Duration::from_secs(20), || {
        ProxyClient::new(client.outbound)
            .request("GET", "web", "/", b"")
            .is_ok_and(|a| a.status == 200)
    }));
    // Idle pooled connections: HTTP/2 over mTLS to the meshed endpoint,
    // HTTP/1 to the plaintext one.
    let t = load(client.outbound, "api", 1, 3, Duration::ZERO);
    assert_eq!(t.ok(), 3);
    support::curl(
        None,
        &["-X", "POST", &format!("http://{}/shutdown", client.admin)],
    );
    let status = client.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "exits once its connections are idle, not after the 2 min grace period: {status:?}\n{}",
        client.log()
    );
}
