//! Kubernetes mode against a real API server (`pimesh_lab::kube::Cluster`:
//! etcd, kube-apiserver and kube-controller-manager built from source).
//! The controller runs with exactly the RBAC of `k3s/controller-rbac.yaml`
//! and its own ServiceAccount token in its kubeconfig, never as admin:
//!
//! - identity: a TokenRequest token for `shop/web` (audience
//!   `identity.pimesh.io`) is certified as `shop/web`; the same token asking
//!   for `shop/db`, an expired token (signed with the cluster's own key), a
//!   token for another audience and garbage are refused, counted, and
//!   nothing is issued; the trust anchors are published as a ConfigMap;
//! - least privilege: without `create tokenreviews` it refuses to start,
//!   naming the permission;
//! - discovery: a Deployment's pods (bound and made ready as a kubelet
//!   would) reach a proxy's watch with their identity and Linkerd's labels;
//!   deleting a pod and adding one reach the watch within 2 s.
//!
//! No root needed.

mod support;

use pimesh_api::discovery::{EventType, Resolution, WatchEvent};
use pimesh_lab::kube::Cluster;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::discovery::Watch;
use support::kube::cluster_with_rbac;
use support::{Controller, TempDir};

const AUDIENCE: &str = "identity.pimesh.io";

fn start(kc: &Path, data: &TempDir) -> Controller {
    Controller::spawn_kube(kc, data.path(), Vec::new())
        .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"))
}

/// base64url without padding (RFC 7515 §2).
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A ServiceAccount token for `ns/sa` signed (ES256) with the cluster's
/// own signing key, as the API server signs them, valid until `exp` (Unix
/// seconds): with `exp` in the past, an expired but otherwise genuine token.
fn signed_token(cluster: &Cluster, ns: &str, sa: &str, exp: u64) -> String {
    let uid = cluster
        .kubectl(&[
            "get",
            "serviceaccount",
            sa,
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap();
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(&cluster.pki.sa_key).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key.secret_pkcs8_der(),
        &rng,
    )
    .unwrap();
    let iat = exp.saturating_sub(3600);
    let header = b64url(br#"{"alg":"ES256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "aud": [AUDIENCE],
        "exp": exp,
        "iat": iat,
        "nbf": iat,
        "iss": pimesh_lab::kube::SERVICE_ACCOUNT_ISSUER,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": uid}},
    });
    let input = format!("{header}.{}", b64url(claims.to_string().as_bytes()));
    let sig = pair.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(sig.as_ref()))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn serviceaccount_tokens_are_checked_with_tokenreview() {
    let (cluster, kc) = cluster_with_rbac(|y| y);
    cluster.kubectl(&["create", "namespace", "shop"]).unwrap();
    for sa in ["web", "db"] {
        cluster
            .kubectl(&["create", "serviceaccount", sa, "-n", "shop"])
            .unwrap();
    }
    let data = TempDir::new("kube-identity");
    let ctl = start(&kc, &data);
    let anchors = ctl.anchors_pem();

    // The trust anchors, published for injected pods.
    let published = cluster
        .kubectl(&[
            "get",
            "configmap",
            "pimesh-identity-trust-roots",
            "-n",
            "pimesh",
            "-o",
            "jsonpath={.data.ca-bundle\\.crt}",
        ])
        .unwrap();
    assert_eq!(published.trim(), anchors.trim());

    let web = cluster
        .create_token("shop", "web", Some(AUDIENCE), Duration::from_secs(3600))
        .unwrap();
    let rsp = ctl
        .certify(&anchors, "shop/web", &web)
        .expect("shop/web certified");
    support::verify_chain(&rsp.chain_pem, &rsp.trust_anchors_pem, "shop/web").unwrap();
    let issued = ctl.serials().len();

    // Our own signature is right: a fresh token signed like the API server's passes...
    let fresh = signed_token(&cluster, "shop", "web", now_unix() + 600);
    ctl.certify(&anchors, "shop/web", &fresh)
        .expect("a genuine self-signed token is accepted");
    // ...so the expired one is refused for being expired.
    let issued = issued + 1;
    let expired = signed_token(&cluster, "shop", "web", now_unix() - 60);
    let other_audience = cluster
        .create_token("shop", "web", None, Duration::from_secs(3600))
        .unwrap();
    let refusals = [
        ("shop/db", web.as_str(), "identity_not_allowed"),
        ("shop/web", expired.as_str(), "invalid_token"),
        ("shop/web", other_audience.as_str(), "invalid_token"),
        ("shop/web", "garbage", "invalid_token"),
        ("shop/web", "", "invalid_token"),
    ];
    for (identity, token, code) in refusals {
        let (status, err) = ctl
            .certify(&anchors, identity, token)
            .expect_err("must be refused");
        assert_eq!(
            err.error, code,
            "{identity} with {token:.20}: {status} {err:?}"
        );
        assert!((400..500).contains(&status), "{status}");
    }
    assert_eq!(
        ctl.serials().len(),
        issued,
        "nothing issued for a refused token"
    );
    assert_eq!(
        ctl.metric("pimesh_controller_certify_refused_total{reason=\"identity_not_allowed\"}"),
        1.0
    );
    assert_eq!(
        ctl.metric("pimesh_controller_certify_refused_total{reason=\"invalid_token\"}"),
        4.0
    );
    // Join tokens are a standalone thing.
    let out = ctl.cli(&["token", "create", "--identity", "shop/web"]);
    assert!(!out.status.success());
}

#[test]
fn missing_tokenreviews_permission_stops_start_up() {
    // The ClusterRole without its tokenreviews rule.
    let (_cluster, kc) = cluster_with_rbac(|yaml| {
        let docs: Vec<&str> = yaml.split("\n---\n").collect();
        docs.iter()
            .map(|d| {
                if !d.contains("kind: ClusterRole\n") {
                    return d.to_string();
                }
                // Drop the rule (lines from a "  - apiGroups" item to the
                // next) that names tokenreviews.
                let mut blocks: Vec<String> = Vec::new();
                for line in d.lines() {
                    if line.starts_with("  - ") || blocks.is_empty() {
                        blocks.push(String::new());
                    }
                    let b = blocks.last_mut().unwrap();
                    b.push_str(line);
                    b.push('\n');
                }
                let out: String = blocks
                    .into_iter()
                    .filter(|b| !b.contains("tokenreviews"))
                    .collect();
                assert!(!out.contains("tokenreviews"), "{out}");
                out
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    });
    let data = TempDir::new("kube-rbac");
    let (status, log) = match Controller::spawn_kube(&kc, data.path(), Vec::new()) {
        Ok(c) => panic!("started without tokenreviews create:\n{}", c.log()),
        Err(e) => e,
    };
    assert!(!status.success());
    assert!(
        log.contains("tokenreviews") && log.contains("create"),
        "the refusal names the permission:\n{log}"
    );
}

fn addrs(r: &Resolution) -> Vec<String> {
    let mut v: Vec<String> = r.endpoints.iter().map(|e| e.addr.to_string()).collect();
    v.sort();
    v
}

/// The next event of `w` whose endpoint addresses are `want`, within `t`.
fn wait_addrs(w: &Watch, want: &[&str], t: Duration) -> Option<(WatchEvent, Duration)> {
    let start = Instant::now();
    while let Some(ev) = w.next_within(t.saturating_sub(start.elapsed())) {
        if let Some(r) = &ev.object {
            if addrs(r) == want {
                return Some((ev, start.elapsed()));
            }
        }
    }
    None
}

/// The endpoint addresses of Service `shop/web`'s EndpointSlices, as the
/// API server has them; `None` if kubectl fails.
fn slice_addresses(cluster: &Cluster) -> Option<Vec<String>> {
    let out = cluster
        .kubectl(&[
            "get",
            "endpointslices",
            "-n",
            "shop",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[0]}",
        ])
        .ok()?;
    Some(out.split_whitespace().map(str::to_string).collect())
}

/// A cluster with the controller's RBAC, namespace `shop`, a Node, the
/// ServiceAccounts `web` and `client`, Service `web` (80 → 8080) and the
/// Deployment `web` whose three pods run at 10.244.1.1–3; (cluster, the
/// controller's kubeconfig, the pods' names in address order).
fn web_deployment() -> (Cluster, PathBuf, Vec<String>) {
    let (cluster, kc) = cluster_with_rbac(|y| y);
    cluster.apply(pimesh_lab::kube::SHOP_WEB_YAML).unwrap();
    let mut pods = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods.len() < 3 {
        assert!(Instant::now() < deadline, "the Deployment made no 3 pods");
        pods = cluster.unstarted_pods("shop", "app=web").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, pod) in pods.iter().enumerate() {
        cluster
            .run_pod("shop", pod, "lab-node", &format!("10.244.1.{}", i + 1))
            .unwrap();
    }

    (cluster, kc, pods)
}

#[test]
fn discovery_follows_services_endpointslices_and_pods() {
    let (cluster, kc, pods) = web_deployment();
    let data = TempDir::new("kube-discovery");
    let ctl = start(&kc, &data);
    let anchors = ctl.anchors_pem();
    let token = cluster
        .create_token("shop", "client", Some(AUDIENCE), Duration::from_secs(3600))
        .unwrap();
    let cert = ctl.client_cert_with(&anchors, "shop/client", &token);
    let w = Watch::open(
        ctl.proxy,
        &anchors,
        Some(&cert),
        "name=web.shop.svc.cluster.local:80",
    )
    .unwrap_or_else(|e| panic!("watch: {e:?}\n{}", ctl.log()));
    let three = ["10.244.1.1:8080", "10.244.1.2:8080", "10.244.1.3:8080"];
    let (ev, _) = wait_addrs(&w, &three, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no state with the three pods\n{}", ctl.log()));
    let r = ev.object.unwrap();
    assert!(r.exists);
    assert_eq!(r.service.as_deref(), Some("web.shop.svc.cluster.local"));
    for e in &r.endpoints {
        assert_eq!(
            e.identity.as_ref().map(|i| i.to_string()).as_deref(),
            Some("shop/web")
        );
        assert_eq!(
            e.labels.get("deployment").map(String::as_str),
            Some("web"),
            "{e:?}"
        );
        assert_eq!(
            e.labels.get("serviceaccount").map(String::as_str),
            Some("web"),
            "{e:?}"
        );
        assert_eq!(
            e.labels.get("namespace").map(String::as_str),
            Some("shop"),
            "{e:?}"
        );
        assert!(pods.contains(e.labels.get("pod").unwrap()), "{e:?}");
    }
    // The same by the other names and by the ClusterIP.
    let ip = cluster
        .kubectl(&[
            "get",
            "service",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .unwrap();
    for q in [
        "name=web.shop:80",
        "name=web.shop.svc",
        &format!("addr={}:80", ip.trim()),
    ] {
        let w2 = Watch::open(ctl.proxy, &anchors, Some(&cert), q).unwrap();
        assert!(
            wait_addrs(&w2, &three, Duration::from_secs(5)).is_some(),
            "{q}"
        );
    }
    // Pod address → its service.
    let w3 = Watch::open(ctl.proxy, &anchors, Some(&cert), "addr=10.244.1.2:8080").unwrap();
    assert!(wait_addrs(&w3, &three, Duration::from_secs(5)).is_some());

    // A pod deleted: gone from the watch within 2 s of the request (the
    // time kubectl takes included).
    let t0 = Instant::now();
    cluster.delete_pod("shop", &pods[0]).unwrap();
    let left = Duration::from_secs(2).saturating_sub(t0.elapsed());
    let (ev, _) = wait_addrs(&w, &three[1..], left)
        .unwrap_or_else(|| panic!("the deleted pod is still served after 2 s\n{}", ctl.log()));
    assert_eq!(ev.kind, EventType::Modified);
    eprintln!(
        "pod deletion reached the watch {:?} after kubectl delete started",
        t0.elapsed()
    );
    // Its ReplicaSet's replacement, once running, joins within 2 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let new = loop {
        if let Some(p) = cluster
            .unstarted_pods("shop", "app=web")
            .unwrap()
            .into_iter()
            .find(|p| !pods.contains(p))
        {
            break p;
        }
        assert!(Instant::now() < deadline, "no replacement pod");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Ready from the status update on (run_pod's last step): timed from
    // before the binding, the generous side.
    let t0 = Instant::now();
    cluster
        .run_pod("shop", &new, "lab-node", "10.244.1.4")
        .unwrap();
    let four = ["10.244.1.2:8080", "10.244.1.3:8080", "10.244.1.4:8080"];
    let left = Duration::from_secs(2).saturating_sub(t0.elapsed());
    let (ev, _) = wait_addrs(&w, &four, left)
        .unwrap_or_else(|| panic!("the new pod is not served after 2 s\n{}", ctl.log()));
    eprintln!(
        "a new pod reached the watch {:?} after its binding started",
        t0.elapsed()
    );
    let r = ev.object.unwrap();
    let e = r
        .endpoints
        .iter()
        .find(|e| e.addr.to_string() == "10.244.1.4:8080")
        .unwrap();
    assert_eq!(e.labels.get("pod"), Some(&new));

    // Opaque ports from the Service's annotation.
    cluster
        .kubectl(&[
            "annotate",
            "service",
            "web",
            "-n",
            "shop",
            "config.pimesh.io/opaque-ports=80",
        ])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let opaque = loop {
        let Some(ev) = w.next_within(deadline.saturating_duration_since(Instant::now())) else {
            break false;
        };
        if ev.object.as_ref().is_some_and(|r| {
            r.endpoints
                .iter()
                .all(|e| e.protocol == pimesh_api::discovery::ProtocolHint::Opaque)
                && !r.endpoints.is_empty()
        }) {
            break true;
        }
    };
    assert!(
        opaque,
        "the opaque-ports annotation did not reach the watch"
    );
}

#[test]
fn api_server_outage_keeps_endpoints_and_readiness_follows() {
    let (mut cluster, kc, pods) = web_deployment();
    let data = TempDir::new("kube-outage");
    let ctl = start(&kc, &data);
    let anchors = ctl.anchors_pem();
    let token = cluster
        .create_token("shop", "client", Some(AUDIENCE), Duration::from_secs(3600))
        .unwrap();
    let cert = ctl.client_cert_with(&anchors, "shop/client", &token);
    let three = ["10.244.1.1:8080", "10.244.1.2:8080", "10.244.1.3:8080"];
    let w = Watch::open(ctl.proxy, &anchors, Some(&cert), "name=web.shop:80").unwrap();
    assert!(
        wait_addrs(&w, &three, Duration::from_secs(20)).is_some(),
        "{}",
        ctl.log()
    );
    assert!(support::eventually(Duration::from_secs(10), || ctl
        .get("/ready")
        .0
        == 200));

    // The API server goes away: not ready, the last endpoints still served
    // (to the open watch and to a new one), no crash.
    cluster.stop_apiserver();
    assert!(
        support::eventually(Duration::from_secs(30), || ctl.get("/ready").0 != 200),
        "still ready without an API server\n{}",
        ctl.log()
    );
    let w2 = Watch::open(
        ctl.proxy,
        &anchors,
        Some(&cert),
        "name=web.shop.svc.cluster.local:80",
    )
    .unwrap();
    assert!(
        wait_addrs(&w2, &three, Duration::from_secs(5)).is_some(),
        "{}",
        ctl.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(w
        .next_within(Duration::from_millis(100))
        .is_none_or(|e| e.kind == EventType::Bookmark));

    // Back: ready again, and changes flow again (the watches resumed or relisted).
    cluster.start_apiserver().unwrap();
    assert!(
        support::eventually(Duration::from_secs(60), || ctl.get("/ready").0 == 200),
        "not ready again after the API server came back\n{}",
        ctl.log()
    );
    cluster.delete_pod("shop", &pods[0]).unwrap();
    // kube-controller-manager lost the API server too; its informers come
    // back on client-go's backoff (up to 30 s), and only then does the
    // EndpointSlice lose the pod. Ours must follow that slice change.
    assert!(
        support::eventually(Duration::from_secs(60), || slice_addresses(&cluster)
            .is_some_and(|a| a.len() == 2)),
        "kube-controller-manager did not update the EndpointSlice after the outage"
    );
    assert!(
        wait_addrs(&w, &three[1..], Duration::from_secs(10)).is_some(),
        "a deletion after the outage did not reach the watch\n{}",
        ctl.log()
    );
    let log = ctl.log();
    let outage_lines = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(outage_lines > 0, "the outage was not logged:\n{log}");
    assert!(outage_lines < 40, "the outage was logged per retry:\n{log}");
}
