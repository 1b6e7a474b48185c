//! The policy CRDs (`k3s/pimesh-crds.yaml`, `pimesh install --crds`) on a
//! real API server (`pimesh_lab::kube::Cluster`): they are stored and
//! become Established, the sample policies under `examples/policy/` pass a
//! server-side dry run (`kubectl apply --dry-run=server`), and what the
//! schema says it refuses (an unknown proxyProtocol, a port out of range,
//! an identity with `*` inside, a CIDR with host bits, a rate of 0) is
//! refused with the field named — the same fields `pimesh`'s own
//! validation names. A controller in Kubernetes mode refuses `pimesh
//! apply` (the API server keeps them there). No root needed.

mod support;

use pimesh_lab::kube::{Cluster, Options};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use support::{pimesh, Controller, TempDir};

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

    // The samples, as a Linkerd user would apply them.
    cluster.kubectl(&["create", "namespace", "shop"]).unwrap();
    let out = dry_run(&cluster, &repo().join("examples/policy")).expect("samples");
    for object in [
        "server.policy.pimesh.io/api-http",
        "meshtlsauthentication.policy.pimesh.io/web-only",
        "authorizationpolicy.policy.pimesh.io/api-web-only",
        "networkauthentication.policy.pimesh.io/cluster-network",
        "httplocalratelimitpolicy.policy.pimesh.io/api-rate-limit",
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
