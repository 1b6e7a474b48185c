//! Test support for Kubernetes mode: the test control plane with the
//! controller's checked-in RBAC and a kubeconfig holding the controller's
//! own ServiceAccount token (never admin).

use super::{eventually, Controller};
use pimesh_lab::kube::{Cluster, Options};
use std::path::PathBuf;
use std::time::Duration;

/// The checked-in RBAC of the controller.
pub fn rbac_yaml() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../k3s/controller-rbac.yaml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A cluster with namespace `pimesh`, the controller's RBAC applied (after
/// `edit`, which may drop a rule), and a kubeconfig holding the
/// controller's own ServiceAccount token.
pub fn cluster_with_rbac(edit: impl Fn(String) -> String) -> (Cluster, PathBuf) {
    let cluster = Cluster::up(&Options::default()).expect("kube up");
    cluster.kubectl(&["create", "namespace", "pimesh"]).unwrap();
    cluster.apply(&edit(rbac_yaml())).unwrap();
    let token = cluster
        .create_token(
            "pimesh",
            "pimesh-controller",
            None,
            Duration::from_secs(3600),
        )
        .unwrap();
    let kc = cluster.dir.join("controller.kubeconfig");
    cluster.token_kubeconfig(&kc, &token).unwrap();
    (cluster, kc)
}

/// Standard base64 (the webhook configuration's `caBundle`).
pub fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// `pimesh install`'s MutatingWebhookConfiguration (no `caBundle`), its
/// service reference replaced by the URL of a controller running outside
/// the cluster (no kube-proxy here routes a Service's address).
pub fn install_webhook_configuration(webhook: &str) -> String {
    let all = pimesh_controller::install::manifests(&Default::default()).unwrap();
    let doc = all
        .split("---\n")
        .find(|d| d.contains("kind: MutatingWebhookConfiguration"))
        .expect("the webhook configuration in `pimesh install`");
    let service =
        "      service:\n        name: pimesh-controller\n        namespace: pimesh\n        \
                   path: /inject\n        port: 443\n";
    assert!(doc.contains(service), "{doc}");
    doc.replace(service, &format!("      url: https://{webhook}/inject\n"))
}

/// `webhook=ADDR` of the "pimesh controller listening" line.
pub fn webhook_addr(ctl: &Controller) -> String {
    // The reader thread reports the line before it reaches the log.
    assert!(eventually(Duration::from_secs(5), || ctl
        .log()
        .contains("pimesh controller listening")));
    let log = ctl.log();
    let line = log
        .lines()
        .find(|l| l.contains("pimesh controller listening"))
        .expect("listening line");
    let start = line
        .find("webhook=")
        .expect("webhook= in the listening line")
        + 8;
    line[start..].split_whitespace().next().unwrap().to_string()
}
