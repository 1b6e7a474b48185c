//! Automatic mTLS between proxies with identities from a real standalone
//! controller (`pimesh controller`): what crosses the wire is TLS 1.3 with
//! the server's identity as SNI and no plaintext; both sides' metrics carry
//! `tls="true"` and the peer identity; wrong identities, foreign CAs and
//! plaintext to identity-required ports are refused and counted;
//! certificates rotate under load with zero failed requests, through a
//! controller restart and a trust-anchor rotation.

mod support;

use std::time::{Duration, Instant};
use support::*;

const SERVER_ID: &str = "server.shop.serviceaccount.identity.pimesh.cluster.local";
const CLIENT_ID: &str = "client.shop.serviceaccount.identity.pimesh.cluster.local";

/// Two meshed proxies: `server` in front of nginx (identity shop/server,
/// identity required on nginx's port), `client` whose app reaches nginx's
/// address through the mesh; the mesh hop goes through `tap`.
struct Mesh {
    nginx: Nginx,
    server: Proxy,
    client: Proxy,
    tap: Tap,
}

fn mesh(ctl: &Controller, extra: &[(&str, &str)]) -> Mesh {
    let nginx = Nginx::start(None, "127.0.0.1");
    let app = format!("127.0.0.1:{}", nginx.port);
    let port = nginx.port.to_string();
    let mut env = vec![
        ("PIMESH_PROXY_INBOUND_TARGET", app.as_str()),
        ("PIMESH_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY", port.as_str()),
    ];
    env.extend_from_slice(extra);
    let server = meshed_proxy(&ctl.proxy_env("shop/server"), &env);
    let tap = Tap::start(server.inbound);
    let dest = format!("{app}=shop/server@{}", tap.addr);
    let mut env = vec![("PIMESH_PROXY_MESH_DESTINATIONS", dest.as_str())];
    env.extend_from_slice(extra);
    let client = meshed_proxy(&ctl.proxy_env("shop/client"), &env);
    Mesh {
        nginx,
        server,
        client,
        tap,
    }
}

impl Mesh {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.nginx.port)
    }

    fn proxy(&self) -> String {
        format!("http://{}", self.client.outbound)
    }
}

#[test]
fn http_between_proxies_is_mutual_tls_13_with_identities() {
    let ctl = Controller::start(&[]);
    let mut m = mesh(&ctl, &[]);
    let (url, big) = (m.url("/"), m.url("/big.bin"));
    let dir = TempDir::new("mtls");
    let out = dir.path().join("big.bin");
    let (ok, body, err) = curl(
        None,
        &[
            "-x",
            &m.proxy(),
            &url,
            &url,
            &big,
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}\n{}", m.client.log());
    assert!(body.is_empty());
    assert!(
        std::fs::read(&out).unwrap() == pattern(1 << 20),
        "1 MiB body differs"
    );
    let (ok, body, err) = curl(None, &["-x", &m.proxy(), &url]);
    assert!(ok, "{err}");
    assert_eq!(body, "hello from nginx\n");

    // The wire: a TLS 1.3 handshake naming the server's identity, then
    // only encrypted records.
    let (up, down) = m.tap.recorded();
    assert_eq!(&up[..3], &[0x16, 0x03, 0x01], "a TLS handshake record");
    let hello_len = 5 + u16::from_be_bytes([up[3], up[4]]) as usize;
    let sni = SERVER_ID.as_bytes();
    assert!(
        up[..hello_len].windows(sni.len()).any(|w| w == sni),
        "SNI is the server's identity"
    );
    // ServerHello's supported_versions extension (43) selects TLS 1.3 (0x0304).
    assert_eq!(down[0], 0x16);
    let server_hello = &down[..5 + u16::from_be_bytes([down[3], down[4]]) as usize];
    assert!(
        server_hello
            .windows(6)
            .any(|w| w == [0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]),
        "TLS 1.3"
    );
    for plain in [&b"HTTP/1.1"[..], b"GET /", b"hello from nginx", b"nginx"] {
        assert!(
            !up.windows(plain.len()).any(|w| w == plain),
            "plaintext {plain:?} client→server"
        );
        assert!(
            !down.windows(plain.len()).any(|w| w == plain),
            "plaintext {plain:?} server→client"
        );
    }
    // One multiplexed connection carried all four requests.
    assert_eq!(
        m.client
            .metric("tcp_open_total", &[("peer", "dst"), ("tls", "true")]),
        1.0,
        "{}",
        m.client.metrics()
    );

    // Both sides know who the other is.
    let out_labels = [
        ("direction", "outbound"),
        ("tls", "true"),
        ("server_id", SERVER_ID),
        ("classification", "success"),
    ];
    assert_eq!(
        m.client.metric("response_total", &out_labels),
        4.0,
        "{}",
        m.client.metrics()
    );
    let in_labels = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", CLIENT_ID),
        ("classification", "success"),
    ];
    assert_eq!(
        m.server.metric("response_total", &in_labels),
        4.0,
        "{}",
        m.server.metrics()
    );
    let expiry = m
        .server
        .metric("identity_cert_expiration_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now + 23.0 * 3600.0 && expiry < now + 25.0 * 3600.0,
        "24 h certificates: {expiry}"
    );

    // Plaintext to the identity-required port is refused and counted.
    let (ok, _, _) = curl(None, &[&format!("http://{}/", m.server.inbound)]);
    assert!(!ok, "plaintext must be refused");
    assert_eq!(
        m.server.metric(
            "inbound_tcp_accept_errors_total",
            &[("error", "identity_required")]
        ),
        1.0
    );
    m.client.assert_healthy();
    m.server.assert_healthy();
}

#[test]
fn a_peer_with_the_wrong_identity_or_a_foreign_ca_is_refused() {
    let ctl = Controller::start(&[]);
    let nginx = Nginx::start(None, "127.0.0.1");
    let app = format!("127.0.0.1:{}", nginx.port);
    let mut server = meshed_proxy(
        &ctl.proxy_env("shop/server"),
        &[("PIMESH_PROXY_INBOUND_TARGET", &app)],
    );

    // The client expects shop/db at that address: the server's certificate
    // names shop/server, so the client refuses it.
    let dest = format!("{app}=shop/db@{}", server.inbound);
    let mut client = meshed_proxy(
        &ctl.proxy_env("shop/client"),
        &[("PIMESH_PROXY_MESH_DESTINATIONS", &dest)],
    );
    let (ok, code, _) = curl(
        None,
        &[
            "-x",
            &format!("http://{}", client.outbound),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{app}/"),
        ],
    );
    assert!(ok);
    assert_eq!(code, "502");
    assert_eq!(
        client.metric(
            "response_total",
            &[("error", "tls"), ("classification", "failure")]
        ),
        1.0
    );

    // A proxy whose certificate comes from another controller's CA: the
    // server refuses its client certificate.
    let other = Controller::start(&[]);
    let dest = format!("{app}=shop/server@{}", server.inbound);
    let mut env = other.proxy_env("shop/client");
    // It trusts both CAs, so only the server's check can refuse it.
    let both = other.dir.path().join("both.pem");
    let pem = std::fs::read_to_string(ctl.anchors_file()).unwrap()
        + &std::fs::read_to_string(other.anchors_file()).unwrap();
    std::fs::write(&both, pem).unwrap();
    env.retain(|(k, _)| k != "PIMESH_PROXY_TRUST_ANCHORS");
    env.push((
        "PIMESH_PROXY_TRUST_ANCHORS".into(),
        both.display().to_string(),
    ));
    let mut foreign = meshed_proxy(&env, &[("PIMESH_PROXY_MESH_DESTINATIONS", &dest)]);
    let (ok, code, _) = curl(
        None,
        &[
            "-x",
            &format!("http://{}", foreign.outbound),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{app}/"),
        ],
    );
    assert!(ok);
    assert_eq!(code, "502");
    // (The first client's TLS named another identity in its SNI, so the
    // server took it for the app's own TLS and passed it through; the
    // foreign client named the server and failed its check.)
    assert!(
        eventually(Duration::from_secs(5), || {
            server.metric(
                "inbound_tcp_accept_errors_total",
                &[("error", "tls_handshake")],
            ) == 1.0
        }),
        "{}\n{}",
        server.metrics(),
        foreign.log()
    );
    assert_eq!(
        server.metric("request_total", &[]),
        0.0,
        "nothing reached the app"
    );
    for p in [&mut client, &mut foreign, &mut server] {
        p.assert_healthy();
    }
}

/// Sends requests through the mesh for `secs`, at ~20 per second on one
/// keep-alive connection per batch; returns (sent, failed).
fn steady_load(m: &Mesh, secs: u64) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut sent, mut failed) = (0, 0);
    let (url, proxy) = (m.url("/"), m.proxy());
    let mut args = vec!["-x", proxy.as_str(), "-w", "%{http_code}\n"];
    for _ in 0..5 {
        args.extend([url.as_str(), "-o", "/dev/null"]);
    }
    while Instant::now() < deadline {
        let (_, codes, _) = curl(None, &args);
        sent += 5;
        failed += 5 - codes.lines().filter(|c| *c == "200").count();
        std::thread::sleep(Duration::from_millis(200));
    }
    (sent, failed)
}

#[test]
fn short_lived_certificates_renew_under_load_without_failures() {
    let ctl = Controller::start(&["--cert-lifetime", "4s"]);
    let m = mesh(&ctl, &[]);
    let (sent, failed) = steady_load(&m, 12);
    assert!(sent >= 100, "{sent}");
    assert_eq!(failed, 0, "{}", m.client.log());
    for p in [&m.client, &m.server] {
        let renewals = p.metric("identity_cert_renewals_total", &[("result", "success")]);
        assert!(
            renewals >= 3.0,
            "renewed {renewals} times in 12 s with 4 s certificates"
        );
        assert_eq!(
            p.metric("identity_cert_renewals_total", &[("result", "failure")]),
            0.0
        );
    }
}

#[test]
fn controller_killed_and_restarted_proxies_keep_serving_then_renew() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut ctl = Controller::start_at(&addr, &["--cert-lifetime", "6s"]);
    let anchors = ctl.cli(&["identity", "trust-anchors"]);
    let m = mesh(&ctl, &[]);
    ctl.kill();
    // Certificates stay valid for a while: traffic keeps flowing.
    let (_, failed) = steady_load(&m, 3);
    assert_eq!(failed, 0);
    let failures_before = m
        .client
        .metric("identity_cert_renewals_total", &[("result", "failure")]);
    let ctl = ctl.restart();
    assert_eq!(
        ctl.cli(&["identity", "trust-anchors"]),
        anchors,
        "same CA after SIGKILL"
    );
    let renewed = m
        .client
        .metric("identity_cert_renewals_total", &[("result", "success")]);
    let (_, failed) = steady_load(&m, 8);
    assert_eq!(failed, 0, "{}", m.client.log());
    assert!(
        m.client
            .metric("identity_cert_renewals_total", &[("result", "success")])
            > renewed
    );
    assert!(failures_before >= 0.0);
}

#[test]
fn trust_anchor_rotation_under_load_without_failures() {
    let ctl = Controller::start(&["--cert-lifetime", "4s"]);
    let refresh = [("PIMESH_PROXY_TRUST_ANCHORS_REFRESH", "500ms")];
    let m = mesh(&ctl, &refresh);
    let before = ctl.cli(&["identity", "trust-anchors"]);
    let load = std::thread::scope(|s| {
        let load = s.spawn(|| steady_load(&m, 16));
        std::thread::sleep(Duration::from_secs(1));
        ctl.cli(&["identity", "rotate", "--activate-after", "2s"]);
        // Wait for leaves of the old issuer to expire, then drop the old anchor.
        std::thread::sleep(Duration::from_secs(8));
        ctl.cli(&["identity", "rotate", "--finish"]);
        load.join().unwrap()
    });
    let after = ctl.cli(&["identity", "trust-anchors"]);
    assert_ne!(before, after, "the anchor changed");
    let (sent, failed) = load;
    assert!(sent >= 100);
    assert_eq!(failed, 0, "{}\n{}", m.client.log(), m.server.log());
}

#[test]
fn testssl_sees_tls_13_only_and_no_weak_ciphers_on_the_inbound_port() {
    let ctl = Controller::start(&[]);
    let server = meshed_proxy(
        &ctl.proxy_env("shop/server"),
        &[("PIMESH_PROXY_INBOUND_TARGET", "127.0.0.1:9")],
    );
    let dir = TempDir::new("testssl");
    let json = dir.path().join("out.json");
    // SNI must be the proxy's identity, or the TLS would be the app's.
    let target = format!("{SERVER_ID}:{}", server.inbound.port());
    let out = run(
        std::process::Command::new("testssl")
            .args([
                "--quiet",
                "--color",
                "0",
                "--warnings",
                "off",
                "--ip",
                "127.0.0.1",
                "-p",
                "-s",
                "--jsonfile",
            ])
            .arg(&json)
            .arg(&target),
        Duration::from_secs(300),
    );
    let text =
        std::fs::read_to_string(&json).unwrap_or_else(|_| panic!("testssl wrote nothing: {out:?}"));
    let finding = |id: &str| -> String {
        let key = format!("\"id\"           : \"{id}\"");
        let at = text
            .find(&key)
            .unwrap_or_else(|| panic!("no {id} in {text}"));
        let rest = &text[at..];
        let f = rest.find("\"finding\"").unwrap();
        rest[f..].split('"').nth(3).unwrap().to_string()
    };
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2"] {
        assert_eq!(finding(id), "not offered", "{id}");
    }
    assert!(
        finding("TLS1_3").starts_with("offered"),
        "{}",
        finding("TLS1_3")
    );
    for id in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ] {
        assert_eq!(finding(id), "not offered", "{id}");
    }
}

#[test]
fn not_ready_until_a_certificate_and_retries_while_the_controller_is_away() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // A controller to make the token and anchors, then gone.
    let mut ctl = Controller::start_at(&addr, &[]);
    let env = ctl.proxy_env("shop/web");
    ctl.kill();
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut proxy = Proxy::start(&all);
    let ready = || {
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
        .1
    };
    assert_eq!(ready(), "503");
    assert!(eventually(Duration::from_secs(10), || {
        proxy.metric(
            "identity_cert_renewals_total",
            &[("result", "failure"), ("error", "unreachable")],
        ) >= 2.0
    }));
    assert_eq!(ready(), "503");
    // The controller comes back (same data, same port): the proxy gets its
    // certificate without a restart.
    let _ctl = ctl.restart();
    assert!(
        eventually(Duration::from_secs(40), || ready() == "200"),
        "{}",
        proxy.log()
    );
    assert_eq!(
        proxy.metric("identity_cert_renewals_total", &[("result", "success")]),
        1.0
    );
    proxy.assert_healthy();
}

/// A trust anchor and an issuer signed by it, as PEM files in `dir`
/// (anchor, issuer, issuer key): a CA the operator brings.
fn own_ca(dir: &std::path::Path) -> [String; 3] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p
    };
    let anchor_key = KeyPair::generate().unwrap();
    let anchor_params = ca("test anchor");
    let anchor = anchor_params.self_signed(&anchor_key).unwrap();
    let issuer_key = KeyPair::generate().unwrap();
    let issuer = ca("test issuer")
        .signed_by(&issuer_key, &rcgen::Issuer::new(anchor_params, anchor_key))
        .unwrap();
    let files = [
        ("anchor.pem", anchor.pem()),
        ("issuer.pem", issuer.pem()),
        ("issuer-key.pem", issuer_key.serialize_pem()),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    })
}

#[test]
fn an_expired_client_certificate_is_refused() {
    let dir = TempDir::new("own-ca");
    let [anchor, issuer, key] = own_ca(dir.path());
    let ca = [
        "--trust-anchor-pem",
        &anchor,
        "--issuer-pem",
        &issuer,
        "--issuer-key-pem",
        &key,
    ];
    // Two controllers sharing one CA: long-lived certificates for the
    // server, 2-second ones for the client, whose controller then goes away.
    let long = Controller::start(&ca);
    let short = Controller::start(&[ca.as_slice(), &["--cert-lifetime", "2s"]].concat());
    let nginx = Nginx::start(None, "127.0.0.1");
    let app = format!("127.0.0.1:{}", nginx.port);
    let mut server = meshed_proxy(
        &long.proxy_env("shop/server"),
        &[("PIMESH_PROXY_INBOUND_TARGET", &app)],
    );
    let dest = format!("{app}=shop/server@{}", server.inbound);
    let mut client = meshed_proxy(
        &short.proxy_env("shop/client"),
        &[("PIMESH_PROXY_MESH_DESTINATIONS", &dest)],
    );
    drop(short);
    std::thread::sleep(Duration::from_secs(3));
    let (ok, code, _) = curl(
        None,
        &[
            "-x",
            &format!("http://{}", client.outbound),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{app}/"),
        ],
    );
    assert!(ok);
    assert_eq!(
        code, "502",
        "an expired client certificate must not get through"
    );
    assert!(eventually(Duration::from_secs(5), || {
        server.metric(
            "inbound_tcp_accept_errors_total",
            &[("error", "tls_handshake")],
        ) == 1.0
    }));
    assert_eq!(server.metric("request_total", &[]), 0.0);
    client.assert_healthy();
    server.assert_healthy();
}
