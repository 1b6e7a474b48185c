//! The proxy injector against a real API server (`pimesh_lab::kube::Cluster`):
//! the controller runs with exactly the RBAC of `k3s/controller-rbac.yaml`
//! and its own ServiceAccount token; a MutatingWebhookConfiguration points
//! the API server at its `--webhook-addr`: `pimesh install`'s, whose
//! caBundle the controller fills in with its trust anchors.
//!
//! - A Pod and a Deployment's pod (created by the ReplicaSet controller)
//!   in namespace `shop` (`pimesh.io/inject: enabled`), read back through
//!   the API, carry `pimesh-init`, the `pimesh-proxy` native sidecar, the
//!   token volume (audience `identity.pimesh.io`) and the environment
//!   (`PIMESH_PROXY_POD_LABELS` equal to the pod's stored labels);
//! - a pod in `plain` and a pod saying `pimesh.io/inject: disabled` in
//!   `shop` are untouched; a `hostNetwork` pod in `shop` only gets
//!   `pimesh.io/inject-skipped: hostNetwork: true`;
//!   `pimesh_controller_injections_total` counts it all.
//!
//! No root needed.

mod support;

use pimesh_lab::kube::Cluster;
use serde_json::Value;
use std::time::Duration;
use support::kube::{b64, cluster_with_rbac, install_webhook_configuration, webhook_addr};
use support::{eventually, Controller, TempDir};

fn get_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    serde_json::from_str(&cluster.kubectl(&a).unwrap()).unwrap()
}

fn pod_yaml(ns: &str, name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{{annotations}}}\n\
         spec:\n  containers:\n    - name: app\n      image: example/app:1\n"
    )
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn env(c: &Value, name: &str) -> Value {
    c["env"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Asserts `pod` (as stored) is meshed: init container, native sidecar,
/// token volume, environment.
fn assert_injected(pod: &Value, owner_label: &str) {
    let spec = &pod["spec"];
    assert_eq!(
        names(&spec["initContainers"]),
        ["pimesh-init", "pimesh-proxy"],
        "{pod:#}"
    );
    let init = &spec["initContainers"][0];
    assert_eq!(init["args"][0], "init");
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
    let proxy = &spec["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(names(&spec["containers"]), ["app"]);
    assert_eq!(
        env(proxy, "PIMESH_PROXY_CONTROLLER_ADDR")["value"],
        "pimesh-controller.pimesh.svc.cluster.local:8086"
    );
    assert_eq!(
        env(proxy, "PIMESH_PROXY_IDENTITY")["value"],
        "$(_pod_ns)/$(_pod_sa)"
    );
    assert_eq!(
        env(proxy, "_pod_ip")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    let labels = env(proxy, "PIMESH_PROXY_WORKLOAD_LABELS")["value"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        labels.starts_with("namespace=shop,pod=$(_pod_name)"),
        "{labels}"
    );
    assert!(labels.ends_with(owner_label), "{labels}");
    // The pod's labels as the API server stored them (those given at
    // admission and the injector's), for the Servers' podSelectors.
    let pod_labels = env(proxy, "PIMESH_PROXY_POD_LABELS")["value"]
        .as_str()
        .map(pimesh_api::policy::inbound::parse_labels)
        .expect("PIMESH_PROXY_POD_LABELS")
        .unwrap();
    let stored: std::collections::BTreeMap<String, String> =
        serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap();
    assert_eq!(pod_labels, stored);
    let token = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "pimesh-identity-token")
        .expect("token volume");
    let sat = &token["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(sat["audience"], "identity.pimesh.io");
    assert_eq!(sat["expirationSeconds"], 86400);
    assert_eq!(
        pod["metadata"]["labels"]["pimesh.io/control-plane-ns"],
        "pimesh"
    );
}

fn assert_untouched(pod: &Value) {
    assert!(pod["spec"]["initContainers"].is_null(), "{pod:#}");
    assert_eq!(names(&pod["spec"]["containers"]), ["app"]);
    assert!(pod["metadata"]["labels"]["pimesh.io/control-plane-ns"].is_null());
}

#[test]
fn the_api_server_injects_pods_of_annotated_namespaces_through_the_webhook() {
    let (cluster, kc) = cluster_with_rbac(|y| y);
    let data = TempDir::new("kube-inject");
    let ctl = Controller::spawn_kube(
        &kc,
        data.path(),
        vec!["--webhook-addr".into(), "127.0.0.1:0".into()],
    )
    .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"));
    let webhook = webhook_addr(&ctl);
    // The configuration as `pimesh install` writes it, without a caBundle:
    // the controller fills in its trust anchors.
    cluster
        .apply(&install_webhook_configuration(&webhook))
        .unwrap();
    let ca = b64(ctl.anchors_pem().as_bytes());
    assert!(
        eventually(Duration::from_secs(45), || get_json(
            &cluster,
            &["mutatingwebhookconfiguration", "pimesh-proxy-injector"]
        )["webhooks"][0]["clientConfig"]["caBundle"]
            == ca.as_str()),
        "the controller did not fill in the caBundle:\n{}",
        ctl.log()
    );
    assert!(ctl.metric("pimesh_controller_kube_webhook_ca_bundle_updates_total") >= 1.0);
    cluster
        .apply(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  annotations:\n    pimesh.io/inject: enabled\n    \
             config.pimesh.io/default-inbound-policy: cluster-authenticated\n\
             ---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: plain\n",
        )
        .unwrap();
    // The namespaces' `default` ServiceAccounts (pods need them), and the
    // webhook configuration in effect: a server-side dry run is injected.
    let probe = cluster.dir.join("probe.yaml");
    std::fs::write(&probe, pod_yaml("shop", "probe", "")).unwrap();
    let probe = probe.display().to_string();
    let mut probes = 0.0;
    assert!(
        eventually(Duration::from_secs(30), || {
            probes += 1.0;
            cluster
                .kubectl(&["create", "--dry-run=server", "-o", "json", "-f", &probe])
                .is_ok_and(|out| out.contains("\"pimesh-proxy\""))
        }),
        "the webhook is not called:\n{}",
        ctl.log()
    );
    let before = |r: &str| {
        ctl.metric(&format!(
            "pimesh_controller_injections_total{{result=\"{r}\"}}"
        ))
    };
    // The trust anchors the injected pods mount, in their own namespace
    // (not in kube-system).
    let anchors = ctl.anchors_pem();
    assert!(
        eventually(Duration::from_secs(30), || cluster
            .kubectl(&[
                "get",
                "configmap",
                "pimesh-identity-trust-roots",
                "-n",
                "shop",
                "-o",
                "jsonpath={.data.ca-bundle\\.crt}",
            ])
            .is_ok_and(|b| b == anchors)),
        "no trust-roots ConfigMap in shop:\n{}",
        ctl.log()
    );
    assert!(cluster
        .kubectl(&[
            "get",
            "configmap",
            "pimesh-identity-trust-roots",
            "-n",
            "kube-system"
        ])
        .is_err());
    let injected0 = before("injected");
    assert!(injected0 >= 1.0);
    assert!(eventually(Duration::from_secs(30), || cluster
        .kubectl(&["get", "serviceaccount", "default", "-n", "plain"])
        .is_ok()));

    cluster
        .apply(&format!(
            "{}---\n{}---\n{}---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n\
             spec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n\
             \x20     annotations: {{config.pimesh.io/default-inbound-policy: deny}}\n\
             \x20   spec:\n      containers:\n        - name: app\n          image: example/app:1\n",
            pod_yaml("shop", "solo", ""),
            pod_yaml("shop", "opted-out", "pimesh.io/inject: disabled"),
            pod_yaml("plain", "other", ""),
        ))
        .unwrap();

    let solo = get_json(&cluster, &["pod", "solo", "-n", "shop"]);
    assert_injected(&solo, "pod=$(_pod_name)");
    // The namespace's default inbound policy, the cluster's networks.
    let proxy = &solo["spec"]["initContainers"][1];
    assert_eq!(
        env(proxy, "PIMESH_PROXY_INBOUND_DEFAULT_POLICY")["value"],
        "cluster-authenticated"
    );
    assert_eq!(
        env(proxy, "PIMESH_PROXY_POLICY_CLUSTER_NETWORKS")["value"],
        pimesh_api::policy::DEFAULT_CLUSTER_NETWORKS
    );
    assert_untouched(&get_json(&cluster, &["pod", "opted-out", "-n", "shop"]));
    assert_untouched(&get_json(&cluster, &["pod", "other", "-n", "plain"]));
    // A pod of the meshed namespace that cannot be meshed: it says why.
    cluster
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: host\n  namespace: shop\n\
             spec:\n  hostNetwork: true\n  containers:\n    - name: app\n      image: example/app:1\n",
        )
        .unwrap();
    let host = get_json(&cluster, &["pod", "host", "-n", "shop"]);
    assert_untouched(&host);
    assert_eq!(
        host["metadata"]["annotations"]["pimesh.io/inject-skipped"], "hostNetwork: true",
        "{host:#}"
    );
    assert!(
        get_json(&cluster, &["pod", "other", "-n", "plain"])["metadata"]["annotations"]
            ["pimesh.io/inject-skipped"]
            .is_null()
    );

    // The Deployment's pod, created by the ReplicaSet controller.
    let mut pods = Value::Null;
    assert!(
        eventually(Duration::from_secs(60), || {
            pods = get_json(&cluster, &["pods", "-n", "shop", "-l", "app=web"]);
            pods["items"].as_array().is_some_and(|a| !a.is_empty())
        }),
        "no pod of deployment web"
    );
    assert_injected(&pods["items"][0], ",deployment=web");
    // The pod template's own policy wins over its namespace's.
    assert_eq!(
        env(
            &pods["items"][0]["spec"]["initContainers"][1],
            "PIMESH_PROXY_INBOUND_DEFAULT_POLICY"
        )["value"],
        "deny"
    );

    let m = |r: &str| {
        ctl.metric(&format!(
            "pimesh_controller_injections_total{{result=\"{r}\"}}"
        ))
    };
    assert_eq!(m("injected") - injected0, 2.0, "{}", ctl.get("/metrics").1);
    assert_eq!(m("skipped_disabled"), 1.0);
    assert_eq!(m("skipped_not_enabled"), 1.0);
    assert_eq!(m("skipped_host_network"), 1.0);
    assert_eq!(m("malformed"), 0.0);
    assert!(probes >= 1.0);
}
