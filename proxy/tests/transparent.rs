//! Transparent mode: two network namespaces joined by a veth pair, a
//! "client" host and a "pod" whose TCP is redirected into the proxy by the
//! iptables rules `pimesh-proxy init` programs (inbound → 4143, outbound →
//! 4140, the proxy's own uid excluded). The apps (nginx,
//! curl, h2load, Python gRPC) carry no proxy settings. Needs root.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

const CLIENT_IP: &str = "10.231.0.1";
const POD_IP: &str = "10.231.0.2";
/// The proxy's uid inside the pod (nobody), excluded from redirection.
const PROXY_UID: &str = "65534";

/// Two namespaces and their veth link; deleted (with every process still
/// in them) on drop, also when the test fails.
struct Lab {
    client: String,
    pod: String,
}

fn sh(args: &[&str]) {
    let out = run(
        Command::new(args[0]).args(&args[1..]),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new(tag: &str) -> Option<Lab> {
        if !is_root() {
            assert!(
                std::env::var_os("PIMESH_SKIP_NETNS_TESTS").is_some(),
                "transparent-mode tests need root (ip netns, iptables); set PIMESH_SKIP_NETNS_TESTS=1 to skip them knowingly"
            );
            eprintln!("skipping: not root and PIMESH_SKIP_NETNS_TESTS is set");
            return None;
        }
        let id = std::process::id();
        let lab = Lab {
            client: format!("pmc-{tag}-{id}"),
            pod: format!("pmp-{tag}-{id}"),
        };
        sh(&["ip", "netns", "add", &lab.client]);
        sh(&["ip", "netns", "add", &lab.pod]);
        sh(&[
            "ip",
            "link",
            "add",
            "eth0",
            "netns",
            &lab.client,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.pod,
        ]);
        for (ns, ip) in [(&lab.client, CLIENT_IP), (&lab.pod, POD_IP)] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        // The redirection `pimesh-proxy init` programs: inbound TCP but the
        // admin port → 4143, outbound TCP but the proxy's own uid and
        // loopback → 4140.
        let out = run(
            cmd(Some(&lab.pod), proxy_bin()).args(["init", "--proxy-uid", PROXY_UID]),
            Duration::from_secs(20),
        );
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(lab)
    }

    fn proxy(&self) -> Proxy {
        let uid = format!("--reuid={PROXY_UID}");
        let gid = format!("--regid={PROXY_UID}");
        Proxy::start_in(
            Some(&self.pod),
            &["setpriv", &uid, &gid, "--clear-groups"],
            &[
                ("PIMESH_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:4143"),
                ("PIMESH_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140"),
                ("PIMESH_PROXY_ADMIN_LISTEN_ADDR", "0.0.0.0:4191"),
            ],
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.client, &self.pod] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

#[test]
fn inbound_redirected_http1_http2_and_h2load() {
    let Some(lab) = Lab::new("in") else { return };
    let _app = Nginx::start(Some(&lab.pod), "0.0.0.0");
    let mut proxy = lab.proxy();
    let client = Some(lab.client.as_str());

    let url = format!("http://{POD_IP}:8080/");
    let (ok, out, err) = curl(client, &[&url, &url, &url]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n".repeat(3));
    let h2_url = format!("http://{POD_IP}:8081/");
    let (ok, out, err) = curl(client, &["--http2-prior-knowledge", &h2_url]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n");
    assert_eq!(
        h2load(client, &["-n", "300", "-c", "3", "-m", "10", &h2_url]),
        300
    );
    assert_eq!(h2load(client, &["--h1", "-n", "300", "-c", "3", &url]), 300);

    // Labelled with the original destination, counted exactly.
    let m = proxy.metrics();
    let h1 = format!("{POD_IP}:8080");
    let h2 = format!("{POD_IP}:8081");
    let ok = [("direction", "inbound"), ("classification", "success")];
    assert_eq!(
        sum_metric(
            &m,
            "response_total",
            &[ok.as_slice(), &[("target_addr", &h1)]].concat()
        ),
        303.0,
        "{m}"
    );
    assert_eq!(
        sum_metric(
            &m,
            "response_total",
            &[ok.as_slice(), &[("target_addr", &h2)]].concat()
        ),
        301.0,
        "{m}"
    );
    assert_eq!(
        sum_metric(&m, "request_total", &[("direction", "outbound")]),
        0.0
    );
    proxy.assert_healthy();
}

#[test]
fn outbound_redirected_without_loops() {
    let Some(lab) = Lab::new("out") else { return };
    let _remote = Nginx::start(Some(&lab.client), "0.0.0.0");
    let mut proxy = lab.proxy();
    let pod = Some(lab.pod.as_str());

    // The pod's app (curl as root) talks to the other host as if there were
    // no proxy; the proxy (uid 65534) reaches it without being redirected
    // to itself.
    let url = format!("http://{CLIENT_IP}:8080/");
    let big = format!("{url}big.bin");
    let (ok, out, err) = curl(pod, &[&url, "-o", "/dev/stdout", &big, "-o", "/dev/null"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n");
    let h2_url = format!("http://{CLIENT_IP}:8081/");
    assert_eq!(
        h2load(pod, &["-n", "200", "-c", "2", "-m", "10", &h2_url]),
        200
    );

    let m = proxy.metrics();
    let h1 = format!("{CLIENT_IP}:8080");
    let h2 = format!("{CLIENT_IP}:8081");
    assert_eq!(
        sum_metric(
            &m,
            "request_total",
            &[("direction", "outbound"), ("target_addr", &h1)]
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        sum_metric(
            &m,
            "request_total",
            &[("direction", "outbound"), ("target_addr", &h2)]
        ),
        200.0,
        "{m}"
    );
    // A redirect loop would show up as inbound or extra outbound traffic.
    assert_eq!(sum_metric(&m, "request_total", &[]), 202.0, "{m}");
    // One HTTP/1 connection (curl's two requests), and one HTTP/2
    // connection that h2load's two client connections share.
    assert_eq!(
        sum_metric(
            &m,
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "dst")]
        ),
        2.0,
        "{m}"
    );
    proxy.assert_healthy();
}

#[test]
fn grpc_and_websocket_across_pods_with_unchanged_apps() {
    let Some(lab) = Lab::new("rpc") else { return };
    // gRPC server on the other host, WebSocket server in the pod.
    let grpc = PyPeer::start_in(Some(&lab.client), "grpc_echo.py", "0.0.0.0", 9090);
    let ws = PyPeer::start_in(Some(&lab.pod), "ws_echo.py", "0.0.0.0", 9091);
    let mut proxy = lab.proxy();

    // Outbound: the pod's gRPC client dials the other host directly.
    let target = format!("{CLIENT_IP}:{}", grpc.port);
    let out = py_client(
        Some(&lab.pod),
        "grpc_echo.py",
        &["--target", &target, "--messages", "30"],
    );
    assert!(
        out.contains("\"bidi_ok\": 30") && out.contains("\"error_code\": 5"),
        "{out}"
    );
    // Inbound: a WebSocket client on the other host dials the pod.
    let url = format!("ws://{POD_IP}:{}/echo", ws.port);
    let out = py_client(
        Some(&lab.client),
        "ws_echo.py",
        &["--url", &url, "--messages", "20"],
    );
    assert!(out.contains("\"echoed\": 20"), "{out}");

    let m = proxy.metrics();
    let grpc_ok = [
        ("direction", "outbound"),
        ("target_addr", target.as_str()),
        ("grpc_status", "0"),
    ];
    assert_eq!(sum_metric(&m, "response_total", &grpc_ok), 11.0, "{m}");
    let ws_addr = format!("{POD_IP}:{}", ws.port);
    let ws_ok = [
        ("direction", "inbound"),
        ("target_addr", ws_addr.as_str()),
        ("status_code", "101"),
    ];
    assert_eq!(sum_metric(&m, "response_total", &ws_ok), 1.0, "{m}");
    proxy.assert_healthy();
}
