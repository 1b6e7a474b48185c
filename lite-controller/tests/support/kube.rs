//! Test support for Kubernetes mode: the test control plane with the
//! controller's checked-in RBAC and a kubeconfig holding the controller's
//! own ServiceAccount token (never admin).

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
