use super::*;

/// The checked-in auto-deploy manifest is `pimesh install`'s output:
/// regenerate with `cargo run -p pimesh-controller -- install --k3s > k3s/pimesh.yaml`.
#[test]
fn checked_in_k3s_manifest_is_generated() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../k3s/pimesh.yaml");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in
            == manifests(&InstallArgs {
                k3s: true,
                ..InstallArgs::default()
            })
            .unwrap(),
        "{path} differs from `pimesh install`; run \
         `cargo run -p pimesh-controller -- install --k3s > k3s/pimesh.yaml`"
    );
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple(yaml).unwrap()
}

#[test]
fn every_document_parses_and_names_its_kind() {
    let docs = documents(&manifests(&InstallArgs::default()).unwrap());
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
            "MutatingWebhookConfiguration",
        ]
    );
    let deploy = &docs[5];
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(c["image"], format!("ghcr.io/pimesh/pimesh:{v}"));
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert!(c["args"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(format!(
            "--proxy-image=ghcr.io/pimesh/pimesh-proxy:{v}"
        ))));
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
    assert!(c["resources"]["limits"].get("cpu").is_none());
    let hook = &docs[7]["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["clientConfig"]["service"]["path"], "/inject");
    assert!(hook["clientConfig"].get("caBundle").is_none());
}

#[test]
fn flags_reach_the_manifests() {
    let a = InstallArgs {
        namespace: "mesh".into(),
        image_repository: "registry.lan:5000/pi/".into(),
        image_tag: Some("dev".into()),
        image_pull_policy: PullPolicy::Always,
        controller_cpu_limit: Some("500m".into()),
        storage_class: Some("nfs-client".into()),
        webhook_failure_policy: FailurePolicy::Fail,
        default_inbound_policy: "cluster-authenticated".into(),
        cluster_networks: Some("10.42.0.0/16, 10.43.0.0/16".into()),
        ..InstallArgs::default()
    };
    let docs = documents(&manifests(&a).unwrap());
    let args = &docs[5]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .iter()
            .any(|v| v == "--default-inbound-policy=cluster-authenticated"),
        "{args}"
    );
    assert!(
        args.as_array()
            .unwrap()
            .iter()
            .any(|v| v == "--cluster-networks=10.42.0.0/16,10.43.0.0/16"),
        "{args}"
    );
    assert!(docs.iter().all(|d| d["kind"] == "Namespace"
        || d["kind"] == "ClusterRole"
        || d["kind"] == "ClusterRoleBinding"
        || d["kind"] == "MutatingWebhookConfiguration"
        || d["metadata"]["namespace"] == "mesh"));
    let c = &docs[5]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.lan:5000/pi/pimesh:dev");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    assert_eq!(docs[4]["spec"]["storageClassName"], "nfs-client");
    assert_eq!(docs[7]["webhooks"][0]["failurePolicy"], "Fail");
    assert_eq!(
        docs[7]["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "mesh"
    );
    assert_eq!(
        proxy_image(&a).unwrap(),
        "registry.lan:5000/pi/pimesh-proxy:dev"
    );
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let cases: Vec<(&str, InstallArgs)> = vec![
        (
            "namespace",
            InstallArgs {
                namespace: "Pi Mesh".into(),
                ..InstallArgs::default()
            },
        ),
        (
            "namespace",
            InstallArgs {
                namespace: "kube-system".into(),
                ..InstallArgs::default()
            },
        ),
        (
            "image-repository",
            InstallArgs {
                image_repository: "ghcr.io/PiMesh\n".into(),
                ..InstallArgs::default()
            },
        ),
        (
            "image-tag",
            InstallArgs {
                image_tag: Some("v1: x".into()),
                ..InstallArgs::default()
            },
        ),
        (
            "controller-memory-limit",
            InstallArgs {
                controller_memory_limit: "lots".into(),
                ..InstallArgs::default()
            },
        ),
        (
            "controller-memory-request",
            InstallArgs {
                controller_memory_request: "1Gi".into(),
                ..InstallArgs::default()
            },
        ),
        (
            "data-volume-size",
            InstallArgs {
                data_volume_size: "0".into(),
                ..InstallArgs::default()
            },
        ),
        (
            "storage-class",
            InstallArgs {
                storage_class: Some("local path".into()),
                ..InstallArgs::default()
            },
        ),
        (
            "default-inbound-policy",
            InstallArgs {
                default_inbound_policy: "allow-all".into(),
                ..InstallArgs::default()
            },
        ),
        (
            "cluster-networks",
            InstallArgs {
                cluster_networks: Some("10.42.0.1/16".into()),
                ..InstallArgs::default()
            },
        ),
    ];
    for (flag, a) in cases {
        let e = manifests(&a).unwrap_err();
        assert_eq!(e.flag, flag, "{e}");
    }
}

#[test]
fn k3s_uses_the_air_gap_images_and_says_where_the_file_goes() {
    let a = InstallArgs {
        k3s: true,
        image_pull_policy: PullPolicy::Always,
        ..InstallArgs::default()
    };
    let out = manifests(&a).unwrap();
    assert!(out.contains("/var/lib/rancher/k3s/server/manifests/"));
    let docs = documents(&out);
    assert_eq!(
        docs[5]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
}
