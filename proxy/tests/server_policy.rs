//! Per-port authorization policy streamed by a real standalone controller
//! to real proxies: a `Server` on the app's port, a
//! `MeshTLSAuthentication` admitting only `shop/web` and an
//! `AuthorizationPolicy` joining them, applied with `pimesh apply -f`.
//! shop/web gets 200 and shop/db 403, both counted with Linkerd's
//! `srv_*`/`authz_*` labels; the policy changed under steady traffic
//! admits shop/db without losing a request of shop/web; a Server with
//! `proxyProtocol: opaque`, naming its port (`PIMESH_PROXY_POD_PORTS`),
//! refuses TCP before the app sees a byte. A proxy
//! that never reached the controller applies its default policy; one that
//! lost it keeps the last policy.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const WEB: &str = "web.shop.serviceaccount.identity.pimesh.cluster.local";
const DB: &str = "db.shop.serviceaccount.identity.pimesh.cluster.local";

/// An app that counts the bytes it receives and answers nothing.
struct CountingApp {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl CountingApp {
    fn start() -> CountingApp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (r, a) = (received.clone(), accepted.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        r.fetch_add(n, Ordering::SeqCst);
                    }
                });
            }
        });
        CountingApp {
            addr,
            received,
            accepted,
        }
    }
}

fn policy_yaml(app_port: u16, identities: &[&str]) -> String {
    let ids: String = identities.iter().map(|i| format!("    - {i}\n")).collect();
    format!(
        "apiVersion: policy.pimesh.io/v1alpha1
kind: Server
metadata:
  namespace: shop
  name: api-http
spec:
  podSelector:
    matchLabels:
      app: api
  port: {app_port}
---
apiVersion: policy.pimesh.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  namespace: shop
  name: web-only
spec:
  identities:
{ids}---
apiVersion: policy.pimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  namespace: shop
  name: api-web-only
spec:
  targetRef:
    group: policy.pimesh.io
    kind: Server
    name: api-http
  requiredAuthenticationRefs:
    - group: policy.pimesh.io
      kind: MeshTLSAuthentication
      name: web-only
---
apiVersion: policy.pimesh.io/v1alpha1
kind: Server
metadata:
  namespace: shop
  name: tcp-opaque
spec:
  podSelector:
    matchLabels:
      app: tcp
  port: raw
  proxyProtocol: opaque
"
    )
}

/// The HTTP status of `GET http://dest/` through the client proxy whose
/// outbound listener is `via`.
fn get_via(via: SocketAddr, dest: SocketAddr) -> String {
    let proxy = format!("http://{via}");
    let url = format!("http://{dest}/");
    curl(
        None,
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &proxy,
            &url,
        ],
    )
    .1
}

/// The HTTP status of a plaintext `GET` straight to a proxy's inbound port.
fn get_plain(to: SocketAddr) -> String {
    let url = format!("http://{to}/");
    curl(None, &["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).1
}

/// Sends `payload` plaintext, half-closes, reads to EOF or reset.
fn send_plain(to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(payload);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Requests in a loop on a thread until stopped: (when, status).
struct Steady {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Steady {
    fn start(mut f: impl FnMut() -> String + Send + 'static) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let code = f();
                l.lock().unwrap().push((Instant::now(), code));
            }
        });
        Steady {
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(Instant, String)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

#[test]
fn servers_and_authorization_policies_are_streamed_and_enforced() {
    let mut ctl = Controller::start(&[]);
    let dir = TempDir::new("server-policy");
    let nginx = Nginx::start(None, "127.0.0.1");
    let tcp_app = CountingApp::start();

    // The server proxies, started before any policy exists: the default
    // policy (all-unauthenticated) admits everyone until the stream says
    // otherwise.
    let api = meshed_proxy(
        &ctl.proxy_env("shop/api"),
        &[
            (
                "PIMESH_PROXY_INBOUND_TARGET",
                &format!("127.0.0.1:{}", nginx.port),
            ),
            ("PIMESH_PROXY_POD_LABELS", "app=api,tier=back"),
        ],
    );
    let tcp = meshed_proxy(
        &ctl.proxy_env("shop/tcp"),
        &[
            ("PIMESH_PROXY_INBOUND_TARGET", &tcp_app.addr.to_string()),
            ("PIMESH_PROXY_POD_LABELS", "app=tcp"),
            // The Server names the port (`port: raw`), as Linkerd's may.
            (
                "PIMESH_PROXY_POD_PORTS",
                &format!("raw={}", tcp_app.addr.port()),
            ),
        ],
    );
    // A key for meshed clients: their proxies send it over mTLS to api.
    let dest: SocketAddr = "127.0.1.1:80".parse().unwrap();
    let dests = format!("{dest}=shop/api@{}", api.inbound);
    let web = meshed_proxy(
        &ctl.proxy_env("shop/web"),
        &[("PIMESH_PROXY_MESH_DESTINATIONS", &dests)],
    );
    let db = meshed_proxy(
        &ctl.proxy_env("shop/db"),
        &[("PIMESH_PROXY_MESH_DESTINATIONS", &dests)],
    );
    assert_eq!(
        get_via(db.outbound, dest),
        "200",
        "the default policy first"
    );

    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy_yaml(nginx.port, &[WEB])).unwrap();
    ctl.cli(&["apply", "-f", &file.display().to_string()]);

    // Pushed to the running proxy: shop/db is refused, shop/web admitted.
    let refused = eventually(Duration::from_secs(10), || {
        get_via(db.outbound, dest) == "403"
    });
    assert!(refused, "shop/db still admitted:\n{}", api.log());
    assert_eq!(get_via(web.outbound, dest), "200", "{}", api.log());
    // Plaintext: no identity, no authorization, the Server denies.
    assert_eq!(get_plain(api.inbound), "403");

    let text = api.metrics();
    let server = [
        ("srv_group", "policy.pimesh.io"),
        ("srv_kind", "server"),
        ("srv_name", "api-http"),
    ];
    let allowed = [
        server[0],
        server[1],
        server[2],
        ("authz_group", "policy.pimesh.io"),
        ("authz_kind", "authorizationpolicy"),
        ("authz_name", "api-web-only"),
        ("client_id", WEB),
    ];
    assert_eq!(
        sum_metric(&text, "inbound_http_authz_allow_total", &allowed),
        1.0,
        "{text}"
    );
    let denied_db = [server[0], server[1], server[2], ("client_id", DB)];
    assert!(
        sum_metric(&text, "inbound_http_authz_deny_total", &denied_db) >= 1.0,
        "{text}"
    );
    assert_eq!(
        sum_metric(
            &text,
            "inbound_http_authz_allow_total",
            &[("client_id", DB), server[1]]
        ),
        0.0,
        "{text}"
    );

    // Opaque: refused before the app sees a byte, even a request that
    // looks like HTTP (the Server says opaque: no HTTP 403 either).
    for payload in [&b"hello\n"[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"] {
        assert_eq!(send_plain(tcp.inbound, payload), b"", "{payload:?}");
    }
    assert_eq!(tcp_app.accepted.load(Ordering::SeqCst), 0);
    assert_eq!(tcp_app.received.load(Ordering::SeqCst), 0);
    let denied_tcp = [
        ("srv_group", "policy.pimesh.io"),
        ("srv_kind", "server"),
        ("srv_name", "tcp-opaque"),
    ];
    assert_eq!(tcp.metric("inbound_tcp_authz_deny_total", &denied_tcp), 2.0);

    // Under steady traffic, admit shop/db too.
    let (w, d) = (web.outbound, db.outbound);
    let web_traffic = Steady::start(move || get_via(w, dest));
    let db_traffic = Steady::start(move || get_via(d, dest));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&file, policy_yaml(nginx.port, &[WEB, DB])).unwrap();
    let changed = Instant::now();
    ctl.cli(&["apply", "-f", &file.display().to_string()]);
    let admitted = eventually(Duration::from_secs(10), || {
        db_traffic
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|(t, code)| *t > changed && code == "200")
    });
    std::thread::sleep(Duration::from_millis(300));
    let web_log = web_traffic.finish();
    let db_log = db_traffic.finish();
    assert!(admitted, "shop/db never admitted:\n{}", api.log());
    let first_200 = db_log
        .iter()
        .find(|(t, code)| *t > changed && code == "200")
        .map(|(t, _)| t.duration_since(changed))
        .unwrap();
    let lost: Vec<&String> = web_log
        .iter()
        .map(|(_, c)| c)
        .filter(|c| *c != "200")
        .collect();
    assert!(web_log.len() > 5, "too little traffic: {}", web_log.len());
    assert!(lost.is_empty(), "shop/web requests lost: {lost:?}");
    // Once admitted, shop/db stays admitted.
    let after: Vec<&String> = db_log
        .iter()
        .filter(|(t, _)| *t > changed + first_200)
        .map(|(_, c)| c)
        .filter(|c| *c != "200")
        .collect();
    assert!(after.is_empty(), "shop/db refused again: {after:?}");
    println!(
        "policy change: shop/db admitted {first_200:?} after `pimesh apply` started; \
         shop/web {} requests, all 200; shop/db {} requests",
        web_log.len(),
        db_log.len()
    );
    let text = api.metrics();
    assert!(
        sum_metric(
            &text,
            "inbound_http_authz_allow_total",
            &[("client_id", DB), ("authz_name", "api-web-only")]
        ) >= 1.0,
        "{text}"
    );

    // A proxy that lost the controller keeps the last policy.
    ctl.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get_via(db.outbound, dest), "200");
    assert_eq!(get_via(web.outbound, dest), "200");
    assert_eq!(get_plain(api.inbound), "403", "not the default policy");
}

#[test]
fn a_proxy_that_never_reached_the_controller_applies_its_default_policy() {
    let ctl = Controller::start(&[]);
    let nginx = Nginx::start(None, "127.0.0.1");
    let dir = TempDir::new("server-policy-default");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy_yaml(nginx.port, &[WEB])).unwrap();
    ctl.cli(&["apply", "-f", &file.display().to_string()]);
    // Nothing listens at this controller address.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let mut env = ctl.proxy_env("shop/api");
    for (k, v) in &mut env {
        if k == "PIMESH_PROXY_CONTROLLER_ADDR" {
            *v = dead_addr.clone();
        }
    }
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let target = format!("127.0.0.1:{}", nginx.port);
    all.extend([
        ("PIMESH_PROXY_INBOUND_TARGET", target.as_str()),
        ("PIMESH_PROXY_POD_LABELS", "app=api"),
        ("PIMESH_PROXY_INBOUND_DEFAULT_POLICY", "all-unauthenticated"),
    ]);
    let mut orphan = Proxy::start(&all);
    // The Server would deny plaintext; the default policy admits it.
    let served = eventually(Duration::from_secs(10), || {
        get_plain(orphan.inbound) == "200"
    });
    assert!(served, "{}", orphan.log());
    let default = [
        ("srv_kind", "default"),
        ("srv_name", "all-unauthenticated"),
        ("authz_kind", "default"),
    ];
    assert!(orphan.metric("inbound_http_authz_allow_total", &default) >= 1.0);
    orphan.assert_healthy();

    // The same proxy reaching the controller gets the Server: 403.
    let api = meshed_proxy(
        &ctl.proxy_env("shop/api"),
        &[
            ("PIMESH_PROXY_INBOUND_TARGET", target.as_str()),
            ("PIMESH_PROXY_POD_LABELS", "app=api"),
            ("PIMESH_PROXY_INBOUND_DEFAULT_POLICY", "all-unauthenticated"),
        ],
    );
    let refused = eventually(Duration::from_secs(10), || get_plain(api.inbound) == "403");
    assert!(refused, "{}", api.log());
}
