//! The policy CRDs (`k3s/pimesh-crds.yaml`, `pimesh install --crds`) on a
//! real API server (`pimesh_lab::kube::Cluster`): they are stored and
//! become Established, the sample policies under `examples/policy/` pass a
//! server-side dry run (`kubectl apply --dry-run=server`), and what the
//! schema says it refuses (an unknown proxyProtocol, a port out of range,
//! an identity with `*` inside, a CIDR with host bits, a rate of 0) is
//! refused with the field named — the same fields `pimesh`'s own
//! validation names. A controller in Kubernetes mode refuses `pimesh
//! apply` (the API server keeps them there).
//!
//! Kubernetes mode's policy end to end (the controller with exactly the
//! checked-in RBAC and its own ServiceAccount token): started before the
//! CRDs exist it serves, warns once naming `pimesh install --crds |
//! kubectl apply -f -`, and streams the default (empty) policy; installed
//! later, the CRDs are picked up; a Server, MeshTLSAuthentication and
//! AuthorizationPolicy created with kubectl reach a proxy's inbound-policy
//! stream (opened with a certificate the controller issued for a
//! ServiceAccount token), an AuthorizationPolicy changed or deleted too;
//! the older of two Servers on a port wins and the younger reports the
//! conflict; `pimesh policy ls` names an AuthorizationPolicy's missing
//! Server. Each resource's `status.conditions` says the same (`Accepted`,
//! `NoMatchingTarget`, `Conflict`), turns when that changes, and is not
//! rewritten while nothing does. Gateway API's HTTPRoute and
//! GRPCRoute (upstream's CRDs, fetched as the `sigs.k8s.io/gateway-api`
//! Go module) are watched too: missing, said once; installed later, a
//! kubectl-applied HTTPRoute rides its parent Service's discovery watch,
//! gets a `status.parents[]` entry (`controllerName:
//! pimesh.io/policy-controller`, Accepted, ResolvedRefs) beside another
//! controller's, which is kept, and goes when deleted. Per-route policy:
//! the sample `examples/policy/per-route.yaml` (HTTPRoutes with a Server
//! parent, an AuthorizationPolicy per route) created with kubectl reaches
//! a proxy's inbound-policy stream with the Server's routes, as the same
//! YAML applied with `pimesh apply -f` to a standalone controller does. No
//! root needed.

mod support;

use pimesh_api::discovery::route::{PathMatch, RouteMatch};
use pimesh_api::discovery::EventType;
use pimesh_api::policy::inbound::{
    Authentication, InboundPolicy, InboundRoute, PolicyEvent, RouteKind, INBOUND_POLICY_PATH,
};
use pimesh_lab::kube::{Cluster, Options};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::discovery::{ClientCert, Watch};
use support::kube::cluster_with_rbac;
use support::{eventually, pimesh, Controller, TempDir};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const CRDS: [&str; 5] = [
    "servers.policy.pimesh.io",
    "authorizationpolicies.policy.pimesh.io",
    "meshtlsauthentications.policy.pimesh.io",
    "networkauthentications.policy.pimesh.io",
    "httplocalratelimitpolicies.policy.pimesh.io",
];

/// `kubectl apply --dry-run=server -f FILE`: kubectl's stdout, or its error.
fn dry_run(cluster: &Cluster, file: &Path) -> Result<String, String> {
    cluster
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            &file.display().to_string(),
        ])
        .map_err(|e| e.to_string())
}

/// Sets the field at JSON Pointer `pointer` (RFC 6901), adding it to its
/// parent object when missing.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    match doc.pointer_mut(parent).unwrap() {
        Value::Array(a) => a[last.parse::<usize>().unwrap()] = value,
        parent => parent[last] = value,
    }
}

/// Applies `k3s/pimesh-crds.yaml` and waits until the five are Established.
fn install_crds(cluster: &Cluster) {
    let crds = repo().join("k3s/pimesh-crds.yaml");
    let applied = cluster
        .kubectl(&["apply", "-f", &crds.display().to_string()])
        .unwrap();
    for crd in CRDS {
        assert!(
            applied.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{crd}"
            )),
            "{crd} not applied:\n{applied}"
        );
    }
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let names: Vec<String> = CRDS.iter().map(|c| format!("crd/{c}")).collect();
    wait.extend(names.iter().map(String::as_str));
    cluster.kubectl(&wait).expect("CRDs Established");
}

#[test]
fn crds_are_established_and_sample_policies_pass_server_side_dry_run() {
    let cluster = Cluster::up(&Options::default()).expect("kube up");
    let tmp = TempDir::new("kube-policy");

    // `pimesh install --crds` prints the checked-in file; it is stored.
    let out = pimesh(&["install", "--crds"]);
    assert!(out.status.success(), "{out:?}");
    let crds = repo().join("k3s/pimesh-crds.yaml");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(&crds).unwrap()
    );
    install_crds(&cluster);

    // The samples, as a Linkerd user would apply them (the per-route one
    // has Gateway API HTTPRoutes: upstream's CRD first).
    install_gateway_crds(&cluster, &["httproutes"]);
    cluster.kubectl(&["create", "namespace", "shop"]).unwrap();
    let out = dry_run(&cluster, &repo().join("examples/policy")).expect("samples");
    for object in [
        "server.policy.pimesh.io/api-http",
        "meshtlsauthentication.policy.pimesh.io/web-only",
        "authorizationpolicy.policy.pimesh.io/api-web-only",
        "networkauthentication.policy.pimesh.io/cluster-network",
        "httplocalratelimitpolicy.policy.pimesh.io/api-rate-limit",
        "server.policy.pimesh.io/api-ops",
        "httproute.gateway.networking.k8s.io/api-public",
        "httproute.gateway.networking.k8s.io/api-admin",
        "authorizationpolicy.policy.pimesh.io/api-admin-web",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }

    // Each sample broken one way: the API server refuses it naming the
    // field, and `pimesh`'s validation names the same one.
    let cases: [(&str, &str, Value, &str); 8] = [
        (
            "server.yaml",
            "/spec/proxyProtocol",
            json!("HTTP/3"),
            "spec.proxyProtocol",
        ),
        ("server.yaml", "/spec/port", json!(-1), "spec.port"),
        ("server.yaml", "/spec/port", json!(70000), "spec.port"),
        (
            "server.yaml",
            "/spec/accessPolicy",
            json!("allow"),
            "spec.accessPolicy",
        ),
        (
            "meshtls-authentication.yaml",
            "/spec/identities/0",
            json!("web.*.serviceaccount.identity.pimesh.cluster.local"),
            "spec.identities[0]",
        ),
        (
            "network-authentication.yaml",
            "/spec/networks/1/cidr",
            json!("10.43.0.1/16"),
            "spec.networks[1].cidr",
        ),
        (
            "network-authentication.yaml",
            "/spec/networks/1/cidr",
            json!("cluster"),
            "spec.networks[1].cidr",
        ),
        (
            "ratelimit.yaml",
            "/spec/total/requestsPerSecond",
            json!(0),
            "spec.total.requestsPerSecond",
        ),
    ];
    for (i, (file, pointer, value, field)) in cases.into_iter().enumerate() {
        let text = std::fs::read_to_string(repo().join("examples/policy").join(file)).unwrap();
        let mut doc: Value = serde_saphyr::from_str(&text).unwrap();
        set(&mut doc, pointer, value.clone());
        let bad = tmp.path().join(format!("bad-{i}.json"));
        std::fs::write(&bad, serde_json::to_string(&doc).unwrap()).unwrap();
        let refused = dry_run(&cluster, &bad)
            .map(|out| panic!("{file} with {pointer} = {value} accepted: {out}"))
            .unwrap_err();
        assert!(
            refused.contains(field),
            "{file} with {pointer} = {value}: {field} not named in:\n{refused}"
        );
        let ours = pimesh_controller::policy::Resource::parse(doc)
            .map(|r| panic!("{r} accepted by pimesh"))
            .unwrap_err();
        assert_eq!(ours.field, field, "{ours}");
    }

    // A MeshTLSAuthentication with both identities and identityRefs (the
    // schema's oneOf), and one with neither.
    for spec in [
        json!({"identities": ["*"], "identityRefs": [{"kind": "ServiceAccount", "name": "web"}]}),
        json!({}),
    ] {
        let doc = json!({
            "apiVersion": "policy.pimesh.io/v1alpha1",
            "kind": "MeshTLSAuthentication",
            "metadata": {"name": "both", "namespace": "shop"},
            "spec": spec,
        });
        let bad = tmp.path().join("oneof.json");
        std::fs::write(&bad, doc.to_string()).unwrap();
        let refused = dry_run(&cluster, &bad).unwrap_err();
        assert!(refused.contains("spec"), "{refused}");
        assert!(pimesh_controller::policy::Resource::parse(doc).is_err());
    }

    // In Kubernetes mode the controller does not store policies itself.
    cluster.kubectl(&["create", "namespace", "pimesh"]).unwrap();
    let ctl = Controller::spawn_kube(&cluster.kubeconfig, &tmp.path().join("data"), Vec::new())
        .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"));
    let refused = ctl.cli(&[
        "apply",
        "-f",
        &repo().join("examples/policy").display().to_string(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("kubectl apply"), "{err}");
    assert_eq!(ctl.cli_ok(&["policy", "ls"]).lines().count(), 1);
}

const AUDIENCE: &str = "identity.pimesh.io";
const WEB: &str = "web.shop.serviceaccount.identity.pimesh.cluster.local";
const DB: &str = "db.shop.serviceaccount.identity.pimesh.cluster.local";

/// The inbound-policy stream of a proxy of pod labels `app=api` (and the
/// named container ports `ports`, `NAME%3DPORT`), as the proxy opens it.
fn policy_stream(ctl: &Controller, anchors: &str, cert: &ClientCert, ports: &str) -> Watch {
    let mut path = format!("{INBOUND_POLICY_PATH}?labels=app%3Dapi");
    if !ports.is_empty() {
        path = format!("{path}&ports={ports}");
    }
    let mut w = Watch::open_path(ctl.proxy, anchors, Some(cert), &path)
        .unwrap_or_else(|e| panic!("policy stream: {e:?}\n{}", ctl.log()));
    w.resume();
    w
}

/// The next event that is not a `BOOKMARK`, within 20 s.
fn next_policy(w: &Watch, ctl: &Controller) -> PolicyEvent {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = w
            .next_line(left)
            .unwrap_or_else(|| panic!("no policy event within 20 s\n{}", ctl.log()));
        let ev: PolicyEvent = serde_json::from_str(&line).unwrap();
        if ev.kind != EventType::Bookmark {
            return ev;
        }
    }
}

/// `MODIFIED` events until one whose policy satisfies `want`.
fn until(w: &Watch, ctl: &Controller, want: impl Fn(&InboundPolicy) -> bool) -> InboundPolicy {
    loop {
        let ev = next_policy(w, ctl);
        assert_eq!(ev.kind, EventType::Modified, "{ev:?}");
        let policy = ev.object.expect("a MODIFIED event carries the policy");
        if want(&policy) {
            return policy;
        }
    }
}

/// The mesh identities the authorizations of port 8080 admit, by
/// authorization name (`None`: no Server selects 8080).
fn identities_8080(p: &InboundPolicy) -> Option<Vec<(String, Vec<String>)>> {
    let s = p.servers.get(&8080)?;
    Some(
        s.authorizations
            .iter()
            .map(|a| {
                let ids = a
                    .authentications
                    .iter()
                    .flat_map(|au| match au {
                        Authentication::MeshTls { identities } => identities.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                (a.name.clone(), ids)
            })
            .collect(),
    )
}

/// The `Accepted` condition of `what` (`KIND/NAME` in `shop`), from
/// `kubectl get -o json` (`null` when it has none).
fn accepted(cluster: &Cluster, what: &str) -> Value {
    let json = cluster
        .kubectl(&["get", what, "-n", "shop", "-o", "json"])
        .unwrap();
    let obj: Value = serde_json::from_str(&json).unwrap();
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// `what`'s `Accepted` condition once its `status` is `want` (within 20 s).
fn accepted_until(cluster: &Cluster, ctl: &Controller, what: &str, want: &str) -> Value {
    let mut last = Value::Null;
    let ok = eventually(Duration::from_secs(20), || {
        last = accepted(cluster, what);
        last["status"] == want
    });
    assert!(ok, "{what}: Accepted is {last}, not {want}\n{}", ctl.log());
    last
}

fn kubectl_apply(cluster: &Cluster, file: &str) -> String {
    let path = repo().join("examples/policy").join(file);
    cluster
        .kubectl(&["apply", "-f", &path.display().to_string()])
        .unwrap()
}

#[test]
fn kubernetes_mode_watches_the_policy_crds_from_missing_to_installed() {
    let (cluster, kc) = cluster_with_rbac(|y| y);
    cluster.kubectl(&["create", "namespace", "shop"]).unwrap();
    cluster
        .kubectl(&["create", "serviceaccount", "api", "-n", "shop"])
        .unwrap();
    let data = TempDir::new("kube-policy-watch");
    let ctl = Controller::spawn_kube(&kc, data.path(), Vec::new())
        .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"));
    let anchors = ctl.anchors_pem();
    let token = cluster
        .create_token("shop", "api", Some(AUDIENCE), Duration::from_secs(3600))
        .unwrap();
    let cert = ctl.client_cert_with(&anchors, "shop/api", &token);

    // No CRDs: one warning naming the fix; the default policy streamed;
    // nothing listed.
    let warning = "pimesh install --crds | kubectl apply -f -";
    assert!(
        eventually(Duration::from_secs(20), || ctl.log().contains(warning)),
        "no warning about the missing CRDs:\n{}",
        ctl.log()
    );
    let w = policy_stream(&ctl, &anchors, &cert, "");
    let first = next_policy(&w, &ctl);
    assert_eq!(first.kind, EventType::Added);
    assert!(first.object.unwrap().servers.is_empty());
    assert_eq!(ctl.cli_ok(&["policy", "ls"]).lines().count(), 1);

    // Installed later: picked up, and the samples reach the stream.
    install_crds(&cluster);
    for file in [
        "server.yaml",
        "meshtls-authentication.yaml",
        "authorization-policy.yaml",
    ] {
        kubectl_apply(&cluster, file);
    }
    let p = until(&w, &ctl, |p| {
        identities_8080(p).is_some_and(|a| !a.is_empty())
    });
    assert_eq!(p.servers[&8080].name, "api-http");
    assert_eq!(
        identities_8080(&p).unwrap(),
        [("api-web-only".to_string(), vec![WEB.to_string()])]
    );
    assert_eq!(
        ctl.log().matches(warning).count(),
        1,
        "warned once:\n{}",
        ctl.log()
    );

    // The same YAML applied with `pimesh apply -f` to a standalone
    // controller streams the same policy: the proxy decides alike.
    let sa_data = TempDir::new("kube-policy-standalone");
    let sa = Controller::spawn(sa_data.path(), Vec::new())
        .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"));
    for file in [
        "server.yaml",
        "meshtls-authentication.yaml",
        "authorization-policy.yaml",
    ] {
        let path = repo().join("examples/policy").join(file);
        sa.cli_ok(&["apply", "-f", &path.display().to_string()]);
    }
    let sa_anchors = sa.anchors_pem();
    let sa_cert = sa.client_cert(&sa_anchors, "shop/api");
    let standalone = next_policy(&policy_stream(&sa, &sa_anchors, &sa_cert, ""), &sa);
    assert_eq!(standalone.kind, EventType::Added);
    assert_eq!(
        serde_json::to_value(standalone.object.unwrap()).unwrap(),
        serde_json::to_value(&p).unwrap(),
        "standalone and Kubernetes mode differ for the same YAML"
    );
    drop(sa);

    // The AuthorizationPolicy changed: MODIFIED with the new identities.
    let db_only = json!({
        "apiVersion": "policy.pimesh.io/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "api-web-only", "namespace": "shop"},
        "spec": {
            "targetRef": {"group": "policy.pimesh.io", "kind": "Server", "name": "api-http"},
            "requiredAuthenticationRefs": [{"kind": "ServiceAccount", "name": "db"}],
        },
    });
    let started = Instant::now();
    cluster.apply(&db_only.to_string()).unwrap();
    let applied = started.elapsed();
    let p = until(&w, &ctl, |p| identities_8080(p).is_some());
    // Printed, not asserted: kubectl's whole run, and when the stream's
    // event was read, both from kubectl's start.
    eprintln!(
        "AuthorizationPolicy changed: kubectl apply returned after {applied:?}, the proxy's stream had it after {:?}",
        started.elapsed()
    );
    assert_eq!(
        identities_8080(&p).unwrap(),
        [("api-web-only".to_string(), vec![DB.to_string()])]
    );

    // Deleted: the Server stays and admits nobody.
    cluster
        .kubectl(&[
            "delete",
            "authorizationpolicy",
            "api-web-only",
            "-n",
            "shop",
        ])
        .unwrap();
    let p = until(&w, &ctl, |_| true);
    assert_eq!(p.servers[&8080].name, "api-http");
    assert!(p.servers[&8080].authorizations.is_empty(), "{p:?}");

    // A younger Server on the same port loses (though its name sorts
    // first); the older one deleted, it takes the port.
    std::thread::sleep(Duration::from_millis(1100));
    let late = std::fs::read_to_string(repo().join("examples/policy/server.yaml"))
        .unwrap()
        .replace("name: api-http", "name: a-late");
    cluster.apply(&late).unwrap();
    // An AuthorizationPolicy naming a Server that does not exist.
    let orphan = json!({
        "apiVersion": "policy.pimesh.io/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "orphan", "namespace": "shop"},
        "spec": {
            "targetRef": {"group": "policy.pimesh.io", "kind": "Server", "name": "gone"},
            "requiredAuthenticationRefs": [{"kind": "ServiceAccount", "name": "web"}],
        },
    });
    cluster.apply(&orphan.to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let ls = ctl.cli_ok(&["policy", "ls"]);
            ls.contains("a-late") && ls.contains("orphan")
        }),
        "{}",
        ctl.cli_ok(&["policy", "ls"])
    );
    let ls = ctl.cli_ok(&["policy", "ls"]);
    let orphan_row = ls
        .lines()
        .find(|l| l.contains("orphan"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(orphan_row.starts_with("AuthorizationPolicy"), "{ls}");
    assert!(
        orphan_row.ends_with("not applied: Server shop/gone not found"),
        "{ls}"
    );
    for name in ["api-http", "web-only"] {
        // By the NAME column: a-late's reason names api-http.
        let row = ls
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(name))
            .unwrap();
        assert!(row.ends_with("applied") && !row.contains("not"), "{ls}");
    }
    // The younger of the two Servers says whose port it is.
    let late_row = ls.lines().find(|l| l.contains("a-late")).unwrap();
    assert!(
        late_row.contains("not applied: Conflict: port 8080")
            && late_row.contains("Server shop/api-http's, older"),
        "{ls}"
    );

    // Each resource's status says the same (Accepted, written with
    // server-side apply): the orphan waits for its Server, the younger
    // Server names the older.
    let orphan_accepted = accepted_until(&cluster, &ctl, "authorizationpolicy/orphan", "False");
    assert_eq!(
        orphan_accepted["reason"], "NoMatchingTarget",
        "{orphan_accepted}"
    );
    assert_eq!(orphan_accepted["message"], "Server shop/gone not found");
    assert_eq!(orphan_accepted["observedGeneration"], 1);
    let late_accepted = accepted_until(&cluster, &ctl, "server/a-late", "False");
    assert_eq!(late_accepted["reason"], "Conflict", "{late_accepted}");
    assert!(
        late_accepted["message"]
            .as_str()
            .unwrap()
            .contains("Server shop/api-http's, older"),
        "{late_accepted}"
    );
    let api_accepted = accepted_until(&cluster, &ctl, "server/api-http", "True");
    assert_eq!(api_accepted["reason"], "Accepted", "{api_accepted}");
    // Nothing changes: nothing is written (a write's own watch event
    // does not bring another).
    let writes = "pimesh_controller_kube_policy_status_writes_total";
    let mut settled = 0.0;
    let quiet = eventually(Duration::from_secs(20), || {
        settled = ctl.metric(writes);
        std::thread::sleep(Duration::from_secs(1));
        ctl.metric(writes) == settled
    });
    assert!(quiet, "status writes never stop: {settled}\n{}", ctl.log());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ctl.metric(writes), settled, "status writes go on");
    eprintln!(
        "status writes so far: {settled}; failed: {}",
        ctl.metric("pimesh_controller_kube_policy_status_write_errors_total")
    );
    let since = accepted(&cluster, "authorizationpolicy/orphan")["lastTransitionTime"].clone();
    assert_eq!(since, orphan_accepted["lastTransitionTime"]);
    // The Server it names created: Accepted turns True.
    let gone = std::fs::read_to_string(repo().join("examples/policy/server.yaml"))
        .unwrap()
        .replace("name: api-http", "name: gone")
        .replace("port: 8080", "port: 7070");
    cluster.apply(&gone).unwrap();
    let now_accepted = accepted_until(&cluster, &ctl, "authorizationpolicy/orphan", "True");
    assert_eq!(now_accepted["reason"], "Accepted", "{now_accepted}");
    cluster
        .kubectl(&["delete", "server", "gone", "-n", "shop"])
        .unwrap();
    let fresh = policy_stream(&ctl, &anchors, &cert, "");
    let added = next_policy(&fresh, &ctl);
    assert_eq!(added.kind, EventType::Added);
    assert_eq!(added.object.unwrap().servers[&8080].name, "api-http");
    cluster
        .kubectl(&["delete", "server", "api-http", "-n", "shop"])
        .unwrap();
    let p = until(&w, &ctl, |p| {
        p.servers.get(&8080).is_some_and(|s| s.name == "a-late")
    });
    assert!(p.servers[&8080].authorizations.is_empty());
    // No longer in conflict: its status says so.
    accepted_until(&cluster, &ctl, "server/a-late", "True");

    // A Server naming its port (Linkerd's `port: http`) selects the port
    // of that name for a proxy that declares it (PIMESH_PROXY_POD_PORTS),
    // and nothing for one that does not.
    let named = std::fs::read_to_string(repo().join("examples/policy/server.yaml"))
        .unwrap()
        .replace("name: api-http", "name: api-grpc")
        .replace("port: 8080", "port: grpc");
    assert!(named.contains("port: grpc"), "{named}");
    cluster.apply(&named).unwrap();
    let with_ports = policy_stream(&ctl, &anchors, &cert, "grpc%3D9090%2Chttp%3D8080");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut p = next_policy(&with_ports, &ctl).object.unwrap();
    while !p.servers.contains_key(&9090) {
        assert!(Instant::now() < deadline, "{p:?}\n{}", ctl.log());
        p = next_policy(&with_ports, &ctl).object.unwrap();
    }
    assert_eq!(p.servers[&9090].name, "api-grpc");
    assert_eq!(p.servers[&8080].name, "a-late");
    let without = policy_stream(&ctl, &anchors, &cert, "");
    let p = next_policy(&without, &ctl).object.unwrap();
    assert!(!p.servers.contains_key(&9090), "{p:?}");

    // Changes go through the API server: `pimesh apply` and `delete` say so.
    for verb in ["apply", "delete"] {
        let server = repo().join("examples/policy/server.yaml");
        let refused = ctl.cli(&[verb, "-f", &server.display().to_string()]);
        assert_eq!(refused.status.code(), Some(1), "{verb}");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains("kubectl"), "{verb}: {err}");
    }
}

/// Gateway API's release whose CRDs the route test installs, fetched as a
/// Go module (`sigs.k8s.io/gateway-api`, through the Go module proxy —
/// the machine's way to upstream's files; its `config/crd/standard/` is
/// what upstream's `standard-install.yaml` bundles).
const GATEWAY_API: &str = "sigs.k8s.io/gateway-api@v1.4.1";

/// Upstream's standard CRD of `plural` (`httproutes`, `grpcroutes`).
fn gateway_api_crd(plural: &str) -> PathBuf {
    let out = std::process::Command::new("go")
        .args(["mod", "download", "-json", GATEWAY_API])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("go (the test control plane's toolchain) runs");
    assert!(
        out.status.success(),
        "go mod download {GATEWAY_API}: {out:?}"
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dir = PathBuf::from(info["Dir"].as_str().expect("the module's Dir"));
    dir.join(format!(
        "config/crd/standard/gateway.networking.k8s.io_{plural}.yaml"
    ))
}

/// Creates upstream's CRDs of `plurals` and waits until Established.
fn install_gateway_crds(cluster: &Cluster, plurals: &[&str]) {
    for plural in plurals {
        let crd = gateway_api_crd(plural);
        // `create`: the CRDs are too large for apply's annotation.
        cluster
            .kubectl(&["create", "-f", &crd.display().to_string()])
            .unwrap();
        // Retried: right after `create` the CRD may have no conditions
        // yet, which `kubectl wait` refuses rather than waits for.
        let crd = format!("crd/{plural}.gateway.networking.k8s.io");
        let wait = ["wait", "--for=condition=Established", "--timeout=60s", &crd];
        assert!(
            eventually(Duration::from_secs(60), || cluster.kubectl(&wait).is_ok()),
            "{crd} not Established: {:?}",
            cluster.kubectl(&wait)
        );
    }
}

/// The routes of the discovery watch's next resolution of `w` for which
/// `want` holds, within 20 s.
fn routes_until(
    w: &Watch,
    ctl: &Controller,
    want: impl Fn(&[pimesh_api::discovery::route::HttpRoute]) -> bool,
) -> Vec<pimesh_api::discovery::route::HttpRoute> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = w.next_within(left).unwrap_or_else(|| {
            panic!(
                "no wanted routes within 20 s\n{}\n{}",
                ctl.cli_ok(&["policy", "ls"]),
                ctl.log()
            )
        });
        if let Some(r) = ev.object {
            if want(&r.routes) {
                return r.routes;
            }
        }
    }
}

/// `status.parents` of HTTPRoute `shop/web-split` once `want` holds of
/// it, within 20 s.
fn parent_status_until(
    cluster: &Cluster,
    ctl: &Controller,
    want: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = eventually(Duration::from_secs(20), || {
        let json = cluster
            .kubectl(&["get", "httproute", "web-split", "-n", "shop", "-o", "json"])
            .unwrap();
        let route: Value = serde_json::from_str(&json).unwrap();
        last = route["status"]["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        want(&last)
    });
    assert!(ok, "status.parents: {last:?}\n{}", ctl.log());
    last
}

#[test]
fn kubernetes_mode_watches_gateway_api_routes_onto_the_services_watch() {
    let (cluster, kc) = cluster_with_rbac(|y| y);
    cluster.kubectl(&["create", "namespace", "shop"]).unwrap();
    cluster
        .kubectl(&["create", "serviceaccount", "client", "-n", "shop"])
        .unwrap();
    for svc in ["web", "web-v1", "web-v2"] {
        cluster
            .kubectl(&[
                "create",
                "service",
                "clusterip",
                svc,
                "--tcp=80:8080",
                "-n",
                "shop",
            ])
            .unwrap();
    }
    let data = TempDir::new("kube-routes");
    let ctl = Controller::spawn_kube(&kc, data.path(), Vec::new())
        .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"));
    let anchors = ctl.anchors_pem();
    let token = cluster
        .create_token("shop", "client", Some(AUDIENCE), Duration::from_secs(3600))
        .unwrap();
    let cert = ctl.client_cert_with(&anchors, "shop/client", &token);

    // Without Gateway API's CRDs: said once, and the Service resolves
    // with no routes.
    let told = "Gateway API route CRDs (HTTPRoute, GRPCRoute) not installed";
    assert!(
        eventually(Duration::from_secs(20), || ctl.log().contains(told)),
        "{}",
        ctl.log()
    );
    let w = Watch::open(
        ctl.proxy,
        &anchors,
        Some(&cert),
        "name=web.shop.svc.cluster.local:80",
    )
    .unwrap_or_else(|e| panic!("watch: {e:?}\n{}", ctl.log()));
    let first = w.next();
    assert_eq!(first.kind, EventType::Added);
    let r = first.object.unwrap();
    assert!(r.exists && r.routes.is_empty(), "{r:?}");

    // Installed later (upstream's CRDs), the sample route reaches the
    // Service's watch with its split.
    install_gateway_crds(&cluster, &["httproutes", "grpcroutes"]);
    let sample = repo().join("examples/routes/httproute.yaml");
    cluster
        .kubectl(&["apply", "-f", &sample.display().to_string()])
        .unwrap();
    // The GRPCRoute sample passes upstream's schema too.
    let grpc = repo().join("examples/routes/grpcroute.yaml");
    dry_run(&cluster, &grpc).unwrap_or_else(|e| panic!("{}: {e}", grpc.display()));
    let routes = routes_until(&w, &ctl, |r| !r.is_empty());
    let weights: Vec<Vec<(String, Option<u16>, u32)>> = routes[0]
        .rules
        .iter()
        .map(|rule| {
            rule.backends
                .iter()
                .map(|b| (b.service.clone(), b.port, b.weight))
                .collect()
        })
        .collect();
    assert!(
        weights.contains(&vec![
            ("web-v1.shop".to_string(), Some(80), 90),
            ("web-v2.shop".to_string(), Some(80), 10),
        ]),
        "{routes:?}"
    );
    assert!(
        ctl.log().contains("Gateway API route CRDs installed"),
        "{}",
        ctl.log()
    );
    let ls = ctl.cli_ok(&["policy", "ls"]);
    let row = ls
        .lines()
        .find(|l| l.contains("web-split"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(
        row.starts_with("HTTPRoute") && !row.contains("not applied"),
        "{ls}"
    );

    // Its status: an entry for the parent Service, pimesh's, with
    // Accepted and ResolvedRefs.
    let ours = parent_status_until(&cluster, &ctl, |p| p.len() == 1);
    assert_eq!(ours[0]["controllerName"], "pimesh.io/policy-controller");
    assert_eq!(
        ours[0]["parentRef"],
        json!({"group": "", "kind": "Service", "name": "web", "port": 80})
    );
    let conditions: Vec<(String, String, String)> = ours[0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("status"), s("reason"))
        })
        .collect();
    assert_eq!(
        conditions,
        [
            ("Accepted".into(), "True".into(), "Accepted".into()),
            ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into()),
        ]
    );
    // Another controller's entry (its own write replacing the list): kept
    // as it is, pimesh's put back beside it.
    let foreign = json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    });
    cluster
        .kubectl(&[
            "patch",
            "httproute",
            "web-split",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            &json!({"status": {"parents": [foreign]}}).to_string(),
        ])
        .unwrap();
    let both = parent_status_until(&cluster, &ctl, |p| p.len() == 2);
    assert_eq!(both[0], foreign);
    assert_eq!(both[1]["controllerName"], ours[0]["controllerName"]);
    assert_eq!(both[1]["parentRef"], ours[0]["parentRef"]);
    for (i, c) in ours[0]["conditions"].as_array().unwrap().iter().enumerate() {
        let back = &both[1]["conditions"][i];
        assert_eq!((&back["type"], &back["status"]), (&c["type"], &c["status"]));
    }

    // Deleted: the Service resolves with no routes again.
    cluster
        .kubectl(&["delete", "httproute", "web-split", "-n", "shop"])
        .unwrap();
    routes_until(&w, &ctl, <[_]>::is_empty);
}

/// Port 9990's routes, sorted by name (routes created in the same second
/// are ordered by name, else by age: the two modes' timestamps differ).
fn routes_9990(p: &InboundPolicy) -> Vec<InboundRoute> {
    let mut routes = p
        .servers
        .get(&9990)
        .map(|s| s.routes.clone())
        .unwrap_or_default();
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    routes
}

#[test]
fn kubernetes_mode_streams_a_servers_routes_as_standalone_does() {
    let (cluster, kc) = cluster_with_rbac(|y| y);
    cluster.kubectl(&["create", "namespace", "shop"]).unwrap();
    cluster
        .kubectl(&["create", "serviceaccount", "api", "-n", "shop"])
        .unwrap();
    install_crds(&cluster);
    install_gateway_crds(&cluster, &["httproutes"]);
    let data = TempDir::new("kube-route-policy");
    let ctl = Controller::spawn_kube(&kc, data.path(), Vec::new())
        .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"));
    let anchors = ctl.anchors_pem();
    let token = cluster
        .create_token("shop", "api", Some(AUDIENCE), Duration::from_secs(3600))
        .unwrap();
    let cert = ctl.client_cert_with(&anchors, "shop/api", &token);
    let w = policy_stream(&ctl, &anchors, &cert, "");
    assert_eq!(next_policy(&w, &ctl).kind, EventType::Added);

    let files = ["per-route.yaml", "meshtls-authentication.yaml"];
    for file in files {
        kubectl_apply(&cluster, file);
    }
    let p = until(&w, &ctl, |p| {
        let r = routes_9990(p);
        r.len() == 2 && r.iter().all(|r| !r.authorizations.is_empty())
    });
    let routes = routes_9990(&p);
    let summary: Vec<(&str, RouteKind, Vec<RouteMatch>, Vec<&str>)> = routes
        .iter()
        .map(|r| {
            let authz = r.authorizations.iter().map(|a| a.name.as_str()).collect();
            (r.name.as_str(), r.kind, r.matches.clone(), authz)
        })
        .collect();
    let prefix = |v: &str| RouteMatch {
        path: Some(PathMatch::PathPrefix(v.into())),
        ..Default::default()
    };
    assert_eq!(
        summary,
        [
            (
                "api-admin",
                RouteKind::Http,
                vec![prefix("/admin")],
                vec!["api-admin-web"]
            ),
            (
                "api-public",
                RouteKind::Http,
                vec![prefix("/public")],
                vec!["api-public-all"]
            ),
        ]
    );
    assert_eq!(
        routes[0].authorizations[0].authentications,
        [Authentication::MeshTls {
            identities: vec![WEB.to_string()]
        }]
    );
    assert!(routes[1].authorizations[0].authentications.is_empty());
    assert!(p.servers[&9990].authorizations.is_empty(), "{p:?}");
    let ls = ctl.cli_ok(&["policy", "ls"]);
    for name in ["api-admin", "api-public", "api-admin-web", "api-public-all"] {
        let row = ls
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{ls}"));
        assert!(row.ends_with("applied") && !row.contains("not"), "{ls}");
    }

    // The same YAML with `pimesh apply -f` (standalone): the same policy.
    let sa_data = TempDir::new("kube-route-policy-standalone");
    let sa = Controller::spawn(sa_data.path(), Vec::new())
        .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"));
    for file in files {
        let path = repo().join("examples/policy").join(file);
        sa.cli_ok(&["apply", "-f", &path.display().to_string()]);
    }
    let sa_anchors = sa.anchors_pem();
    let sa_cert = sa.client_cert(&sa_anchors, "shop/api");
    let standalone = next_policy(&policy_stream(&sa, &sa_anchors, &sa_cert, ""), &sa);
    assert_eq!(standalone.kind, EventType::Added);
    let standalone = standalone.object.unwrap();
    assert_eq!(
        routes_9990(&standalone),
        routes,
        "standalone and Kubernetes mode differ"
    );
    let without_routes = |mut p: InboundPolicy| {
        p.servers.values_mut().for_each(|s| s.routes.clear());
        serde_json::to_value(p).unwrap()
    };
    assert_eq!(without_routes(standalone), without_routes(p));

    // The route deleted: its policy says why it is not applied, and the
    // Server keeps the other route.
    cluster
        .kubectl(&["delete", "httproute", "api-admin", "-n", "shop"])
        .unwrap();
    let p = until(&w, &ctl, |p| routes_9990(p).len() == 1);
    assert_eq!(routes_9990(&p)[0].name, "api-public");
    assert!(
        eventually(Duration::from_secs(10), || ctl
            .cli_ok(&["policy", "ls"])
            .contains("not applied: HTTPRoute shop/api-admin not found")),
        "{}",
        ctl.cli_ok(&["policy", "ls"])
    );
}
