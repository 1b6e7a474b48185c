//! `pimesh install`, `k3s/pimesh.yaml` and `pimesh inject` against a real
//! API server (`pimesh_lab::kube::Cluster`, cluster-admin): every manifest
//! passes a server-side dry run (`kubectl apply --dry-run=server`: the API
//! server's own validation, defaulting and admission, nothing stored), and
//! the stream `pimesh install` prints is then applied for real.
//!
//! The control plane's namespace is created first: a dry run stores no
//! Namespace, and the namespaced objects of the same stream need one.
//! No root needed.

mod support;

use pimesh_lab::kube::{Cluster, Options};
use std::path::{Path, PathBuf};
use support::{pimesh, TempDir};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `pimesh ARGS`' stdout; panics with its stderr when it fails.
fn pimesh_ok(args: &[&str]) -> String {
    let out = pimesh(args);
    assert!(
        out.status.success(),
        "pimesh {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl apply --dry-run=server -f FILE`; panics with kubectl's error.
fn dry_run(cluster: &Cluster, file: &Path) -> String {
    cluster
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            &file.display().to_string(),
        ])
        .unwrap_or_else(|e| panic!("dry run of {}: {e}", file.display()))
}

/// Every `*.yaml` under `dir`, recursively, sorted.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn install_k3s_manifest_and_injected_examples_pass_server_side_dry_run() {
    let cluster = Cluster::up(&Options::default()).expect("kube up");
    let tmp = TempDir::new("kube-install");
    cluster.kubectl(&["create", "namespace", "pimesh"]).unwrap();

    // The checked-in auto-deploy manifest, and `pimesh install` as printed.
    let k3s = repo().join("k3s/pimesh.yaml");
    let out = dry_run(&cluster, &k3s);
    for object in [
        "deployment.apps/pimesh-controller",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/pimesh-proxy-injector",
        "persistentvolumeclaim/pimesh-controller-data",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
    let installed = tmp.path().join("install.yaml");
    std::fs::write(&installed, pimesh_ok(&["install"])).unwrap();
    dry_run(&cluster, &installed);

    // Flags: another namespace, repository, tag, limits, failure policy.
    cluster.kubectl(&["create", "namespace", "mesh"]).unwrap();
    let custom = tmp.path().join("custom.yaml");
    std::fs::write(
        &custom,
        pimesh_ok(&[
            "install",
            "--namespace",
            "mesh",
            "--image-repository",
            "registry.lan:5000/pi",
            "--image-tag",
            "dev",
            "--image-pull-policy",
            "always",
            "--controller-cpu-limit",
            "500m",
            "--storage-class",
            "local-path",
            "--webhook-failure-policy",
            "fail",
        ]),
    )
    .unwrap();
    dry_run(&cluster, &custom);

    // Bad flags: exit 64 naming the flag, nothing on stdout.
    let bad = pimesh(&["install", "--controller-memory-limit", "lots"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(bad.stdout.is_empty());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--controller-memory-limit"));

    // `pimesh inject` (annotation, and --manual) of every example manifest.
    let mut examples = Vec::new();
    yaml_files(&repo().join("examples"), &mut examples);
    assert!(!examples.is_empty(), "no manifests under examples/");
    // Their namespaces, created for real (as for the control plane's).
    for file in &examples {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&std::fs::read_to_string(file).unwrap()).unwrap();
        for ns in docs.iter().filter(|d| d["kind"] == "Namespace") {
            let name = ns["metadata"]["name"].as_str().unwrap();
            cluster.kubectl(&["create", "namespace", name]).unwrap();
        }
    }
    for (i, file) in examples.iter().enumerate() {
        let f = file.display().to_string();
        for manual in [false, true] {
            let mut args = vec!["inject", f.as_str()];
            if manual {
                args.push("--manual");
            }
            let yaml = pimesh_ok(&args);
            assert!(yaml.contains("pimesh.io/inject: enabled"), "{f}:\n{yaml}");
            if manual {
                assert!(yaml.contains("name: pimesh-init"), "{f}:\n{yaml}");
            }
            let injected = tmp.path().join(format!("example-{i}-{manual}.yaml"));
            std::fs::write(&injected, yaml).unwrap();
            dry_run(&cluster, &injected);
        }
    }

    // For real: the install stream is stored as printed (no kubelet runs
    // the controller's pod here; the lab's node agent will).
    cluster
        .kubectl(&["apply", "-f", &installed.display().to_string()])
        .unwrap();
    let policy = cluster
        .kubectl(&[
            "get",
            "mutatingwebhookconfiguration",
            "pimesh-proxy-injector",
            "-o",
            "jsonpath={.webhooks[0].failurePolicy} {.webhooks[0].clientConfig.service.name}",
        ])
        .unwrap();
    assert_eq!(policy, "Ignore pimesh-controller");
}
