//! Issue 16's routes, against the real standalone controller and proxy:
//! an `HTTPRoute` applied with `pimesh apply -f` on a parent Service
//! splits 90/10 between two backend Services (1,000 requests, 90 % ± 5 %
//! to the first); a rule's `timeouts.request` answers 504; a request no
//! rule matches gets 404 (as Linkerd); the `retry.pimesh.io/*`
//! annotations retry a backend's 503 into a 200. Backends are HTTP
//! servers on 127.0.0.1 answering their own name; a `GRPCRoute` is
//! tested with real gRPC too (Python grpcio client and servers).

mod support;

use std::time::Duration;
use support::outbound::{client_proxy, load, service_add, Backend, ProxyClient};
use support::{eventually, peer_script, py_client, run, Controller, PyPeer, TempDir};

/// Applies `yaml` with `pimesh apply -f`.
fn apply(ctl: &Controller, dir: &TempDir, yaml: &str) {
    let file = dir.path().join("route.yaml");
    std::fs::write(&file, yaml).unwrap();
    ctl.cli(&["apply", "-f", &file.display().to_string()]);
}

/// The status and body of `GET http://web{path}` through the proxy.
fn get(c: &mut ProxyClient, path: &str) -> (u16, String) {
    match c.request("GET", "web", path, b"") {
        Ok(a) => (a.status, String::from_utf8_lossy(&a.body).into_owned()),
        Err(e) => (0, e),
    }
}

const SPLIT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-split
spec:
  parentRefs:
    - {group: "", kind: Service, name: web, port: 80}
  rules:
    - backendRefs:
        - {name: web-v1, port: 80, weight: 90}
        - {name: web-v2, port: 80, weight: 10}
"#;

#[test]
fn an_httproute_splits_90_10_between_two_services() {
    let ctl = Controller::start(&[]);
    let dir = TempDir::new("routes-split");
    let (parent, v1, v2) = (
        Backend::start("web"),
        Backend::start("web-v1"),
        Backend::start("web-v2"),
    );
    service_add(&ctl, "web", 80, &[parent.addr], &[]);
    service_add(&ctl, "web-v1", 80, &[v1.addr], &[]);
    apply(&ctl, &dir, SPLIT);
    // web-v2 is not registered yet: the route is listed as not applied.
    let ls = ctl.cli(&["policy", "ls"]);
    assert!(
        ls.contains("web-split")
            && ls.contains("backend Service default/web-v2 port 80 not registered"),
        "{ls}"
    );
    service_add(&ctl, "web-v2", 80, &[v2.addr], &[]);
    let ls = ctl.cli(&["policy", "ls"]);
    assert!(!ls.contains("not registered"), "{ls}");

    let client = client_proxy(&ctl, &[]);
    let mut c = ProxyClient::new(client.outbound);
    assert!(
        eventually(Duration::from_secs(10), || get(&mut c, "/")
            .1
            .starts_with("web-v")),
        "the route reaches the proxy"
    );
    let t = load(client.outbound, "web", 4, 1000, Duration::ZERO);
    assert_eq!(t.ok(), 1000, "{t:?}");
    let (a, b) = (t.share("web-v1"), t.share("web-v2"));
    eprintln!("split: web-v1 {a:.3} web-v2 {b:.3}");
    assert!((0.85..=0.95).contains(&a), "90 % ± 5 % to web-v1: {t:?}");
    assert!(
        (a + b - 1.0).abs() < 1e-9,
        "nothing to the parent's own endpoint: {t:?}"
    );

    // Deleted: requests go to the parent Service again.
    let file = dir.path().join("route.yaml");
    ctl.cli(&["delete", "-f", &file.display().to_string()]);
    assert!(
        eventually(Duration::from_secs(10), || get(&mut c, "/")
            == (200, "web".into())),
        "the route's removal reaches the proxy"
    );
}

const TIMEOUT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-slow
spec:
  parentRefs:
    - {group: "", kind: Service, name: web}
  rules:
    - matches:
        - path: {type: PathPrefix, value: /slow}
      backendRefs:
        - {name: slow, port: 80}
      timeouts:
        request: 200ms
    - matches:
        - path: {type: Exact, value: /fast}
      backendRefs:
        - {name: slow, port: 80}
"#;

#[test]
fn a_route_timeout_answers_504_and_no_matching_rule_404() {
    let ctl = Controller::start(&[]);
    let dir = TempDir::new("routes-timeout");
    let (parent, slow) = (Backend::start("web"), Backend::start("slow"));
    service_add(&ctl, "web", 80, &[parent.addr], &[]);
    service_add(&ctl, "slow", 80, &[slow.addr], &[]);
    let client = client_proxy(&ctl, &[]);
    let mut c = ProxyClient::new(client.outbound);
    assert_eq!(get(&mut c, "/other"), (200, "web".into()), "no route yet");
    apply(&ctl, &dir, TIMEOUT);
    assert!(
        eventually(Duration::from_secs(10), || get(&mut c, "/other").0 == 404),
        "no rule matches /other once the route is there"
    );
    assert_eq!(get(&mut c, "/fast"), (200, "slow".into()));
    slow.set_delay(Duration::from_millis(1500));
    let (status, body) = get(&mut c, "/slow/x");
    assert_eq!(status, 504, "{body}");
    // The rule without a timeout waits for the slow answer.
    assert_eq!(get(&mut c, "/fast"), (200, "slow".into()));
}

const RETRY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-retry
  annotations:
    retry.pimesh.io/http: "503"
    retry.pimesh.io/limit: "1"
spec:
  parentRefs:
    - {group: "", kind: Service, name: web, port: 80}
  rules:
    - backendRefs:
        - {name: flaky, port: 80}
"#;

#[test]
fn the_retry_annotations_turn_a_503_into_a_200() {
    let ctl = Controller::start(&[]);
    let dir = TempDir::new("routes-retry");
    let (parent, flaky) = (Backend::start("web"), Backend::start("flaky"));
    service_add(&ctl, "web", 80, &[parent.addr], &[]);
    service_add(&ctl, "flaky", 80, &[flaky.addr], &[]);
    let client = client_proxy(&ctl, &[]);
    let mut c = ProxyClient::new(client.outbound);
    // Without the annotations a 503 reaches the client (Linkerd's
    // default: no retries).
    apply(&ctl, &dir, &RETRY.replace("retry.pimesh.io", "x.example"));
    assert!(
        eventually(Duration::from_secs(10), || get(&mut c, "/").1 == "flaky"),
        "the route reaches the proxy"
    );
    flaky.fail_next(1);
    assert_eq!(get(&mut c, "/").0, 503);
    apply(&ctl, &dir, RETRY);
    let before = client.metric(
        "outbound_http_retries_total",
        &[("reason", "status"), ("result", "retried")],
    );
    // Once the annotated route is there, every first-try 503 is retried.
    assert!(
        eventually(Duration::from_secs(10), || {
            flaky.fail_next(1);
            let hits = flaky.hits();
            let ok = get(&mut c, "/") == (200, "flaky".into());
            ok && flaky.hits() == hits + 2
        }),
        "a 503 then a 200: the client gets the 200"
    );
    let after = client.metric(
        "outbound_http_retries_total",
        &[("reason", "status"), ("result", "retried")],
    );
    assert!(after > before, "{}", client.metrics());
}

const GRPC: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: cart-checkout
spec:
  parentRefs:
    - {group: "", kind: Service, name: web, port: 80}
  rules:
    - matches:
        - method: {service: shop.Cart, method: Checkout}
      backendRefs:
        - {name: checkout, port: 80}
    - matches:
        - method: {service: shop.Cart}
      backendRefs:
        - {name: cart, port: 80}
"#;

#[test]
fn a_grpc_route_sends_by_service_and_method() {
    let ctl = Controller::start(&[]);
    let dir = TempDir::new("routes-grpc");
    let (parent, cart, checkout) = (
        Backend::start("web"),
        Backend::start("cart"),
        Backend::start("checkout"),
    );
    service_add(&ctl, "web", 80, &[parent.addr], &[]);
    service_add(&ctl, "cart", 80, &[cart.addr], &[]);
    service_add(&ctl, "checkout", 80, &[checkout.addr], &[]);
    apply(&ctl, &dir, GRPC);
    let client = client_proxy(&ctl, &[]);
    let mut c = ProxyClient::new(client.outbound);
    // The paths gRPC calls travel on (HTTP/1 here: the backends are
    // plain HTTP servers; routing looks at the path only).
    let mut call = |path: &str| match c.request("POST", "web", path, b"") {
        Ok(a) => (a.status, String::from_utf8_lossy(&a.body).into_owned()),
        Err(e) => (0, e),
    };
    assert!(
        eventually(Duration::from_secs(10), || call("/shop.Cart/Add").1
            == "cart"),
        "the route reaches the proxy"
    );
    assert_eq!(call("/shop.Cart/Checkout"), (200, "checkout".into()));
    assert_eq!(call("/shop.Cart/Checkout2"), (200, "cart".into()));
    assert_eq!(call("/shop.Other/Add").0, 404);
}

const GRPC_ECHO: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: echo-by-method
spec:
  parentRefs:
    - {group: "", kind: Service, name: echo, port: 80}
  rules:
    - matches:
        - method: {service: pimesh.test.Echo, method: Unary}
      backendRefs:
        - {name: echo-a, port: 80}
    - matches:
        - method: {service: pimesh.test.Echo}
      backendRefs:
        - {name: echo-b, port: 80}
"#;

/// One gRPC call's outcome, as `grpc_echo.py calls` prints it: the code
/// name, the details and which server answered (`x-echo-server`).
#[derive(Debug, PartialEq)]
struct Call {
    code: String,
    details: String,
    server: String,
}

/// Unary calls to `paths` through `proxy` (explicit mode, `:authority`
/// `echo:80`) on one grpcio channel, in order.
fn grpc_calls(proxy: std::net::SocketAddr, paths: &[&str]) -> Vec<Call> {
    let out = run(
        std::process::Command::new("python3")
            .arg(peer_script("grpc_echo.py"))
            .args(["calls", "--target", &proxy.to_string()])
            .args(["--authority", "echo:80"])
            .args(paths),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpc_echo.py calls: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |line: &str, key: &str| {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v[key].as_str().unwrap_or("").to_string()
    };
    stdout
        .lines()
        .map(|l| Call {
            code: field(l, "code"),
            details: field(l, "details"),
            server: field(l, "server"),
        })
        .collect()
}

#[test]
fn a_grpc_route_splits_real_grpc_calls_by_method() {
    let ctl = Controller::start(&[]);
    let dir = TempDir::new("routes-grpc-real");
    // The parent answers too (its own name), so a call that reached it
    // instead of a rule's backend would show.
    let (parent, a, b) = (
        PyPeer::start_named("grpc_echo.py", "echo"),
        PyPeer::start_named("grpc_echo.py", "echo-a"),
        PyPeer::start_named("grpc_echo.py", "echo-b"),
    );
    for (name, peer) in [("echo", &parent), ("echo-a", &a), ("echo-b", &b)] {
        service_add(&ctl, name, 80, &[peer.addr()], &[]);
    }
    let client = client_proxy(&ctl, &[]);
    let (unary, whoami) = ("/pimesh.test.Echo/Unary", "/pimesh.test.Echo/Whoami");
    let other = "/pimesh.test.Other/Unary";
    // No route yet: every call reaches the parent, whatever its method.
    let calls = grpc_calls(client.outbound, &[unary, whoami]);
    assert!(calls.iter().all(|c| c.server == "echo"), "{calls:?}");

    apply(&ctl, &dir, GRPC_ECHO);
    assert!(
        eventually(Duration::from_secs(10), || grpc_calls(
            client.outbound,
            &[unary]
        )[0]
        .server
            == "echo-a"),
        "the route reaches the proxy"
    );
    let calls = grpc_calls(client.outbound, &[unary, whoami, unary, other, whoami]);
    let servers: Vec<&str> = calls.iter().map(|c| c.server.as_str()).collect();
    assert_eq!(
        servers,
        ["echo-a", "echo-b", "echo-a", "", "echo-b"],
        "Unary to echo-a, the service's other methods to echo-b: {calls:?}"
    );
    // A service no rule names: the proxy answers UNIMPLEMENTED itself
    // (HTTP 404's gRPC status), and the calls after it on the same
    // channel still go through.
    assert_eq!(calls[3].code, "UNIMPLEMENTED", "{calls:?}");
    assert!(
        calls[3].details.contains("no route of service"),
        "the proxy's answer, not a server's: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .enumerate()
            .all(|(i, c)| i == 3 || c.code == "OK"),
        "{calls:?}"
    );
    // Streaming through the route too: the echo client's unary calls
    // (Unary, to echo-a) and its bidirectional stream (to echo-b).
    let out = py_client(
        None,
        "grpc_echo.py",
        &[
            "--target",
            &client.outbound.to_string(),
            "--authority",
            "echo:80",
            "--unary",
            "5",
            "--messages",
            "20",
        ],
    );
    assert!(out.contains("\"unary_ok\": 5"), "{out}");
    assert!(out.contains("\"bidi_trailer\": \"bidi-20\""), "{out}");
    let no_route = client.metric(
        "response_total",
        &[("grpc_status", "12"), ("error", "no_route")],
    );
    assert_eq!(no_route, 1.0, "{}", client.metrics());
}
