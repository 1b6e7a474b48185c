//! `pimesh install`, `k3s/pimesh.yaml`, `pimesh inject` and `pimesh check` against a real
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
use std::time::Duration;
use support::kube::{cluster_with_rbac, install_webhook_configuration, webhook_addr};
use support::{eventually, pimesh, Controller, TempDir};

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
        if p.ends_with("examples/policy") || p.ends_with("examples/routes") {
            // Policy resources and Gateway API routes, not workloads to
            // inject: tests/kube_policy.rs applies them once their CRDs
            // are in.
            continue;
        }
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
            "--default-inbound-policy",
            "cluster-authenticated",
            "--cluster-networks",
            "10.42.0.0/16,10.43.0.0/16",
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

/// `pimesh check ARGS --kubeconfig KC`: (exit code, stdout).
fn check(kc: &Path, args: &[&str]) -> (Option<i32>, String) {
    let kc = kc.display().to_string();
    let mut a = vec!["check", "--kubeconfig", kc.as_str()];
    a.extend_from_slice(args);
    let out = pimesh(&a);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `pimesh check --pre` and `pimesh check` on the test control plane with
/// the installed manifests: the controller runs outside the cluster (its
/// webhook configuration points at its URL), the lab plays the kubelet for
/// the controller's pod and a meshed pod (`Cluster::run_pod`). Then the
/// controller stops: the injector check fails with a clear ×.
#[test]
fn check_passes_on_an_installed_mesh_and_fails_without_the_controller() {
    let (cluster, kc) = cluster_with_rbac(|y| y);
    let admin = cluster.kubeconfig.clone();

    // --pre: an admin may install into a new namespace; the controller's
    // own ServiceAccount may not, and the existing namespace is reported.
    let (code, out) = check(&admin, &["--pre", "--namespace", "fresh"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("✔ can create mutatingwebhookconfigurations"),
        "{out}"
    );
    let (code, out) = check(&kc, &["--pre"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("× control plane namespace does not already exist"),
        "{out}"
    );
    assert!(out.contains("× can create namespaces"), "{out}");

    // Installed, nothing running yet. The webhook configuration comes
    // later, pointing at the controller's URL (a server-side apply would
    // merge `url` into the `service` reference, which the API refuses).
    let installed = cluster.dir.join("install.yaml");
    let stream: Vec<String> = pimesh_ok(&["install"])
        .split("---\n")
        .filter(|d| !d.contains("kind: MutatingWebhookConfiguration"))
        .map(str::to_string)
        .collect();
    std::fs::write(&installed, stream.join("---\n")).unwrap();
    cluster
        .kubectl(&["apply", "-f", &installed.display().to_string()])
        .unwrap();
    let (code, out) = check(&admin, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("× controller pod is running and ready"),
        "{out}"
    );

    // The controller (outside), its webhook URL, its pod made Ready.
    let data = TempDir::new("kube-check");
    let mut ctl = Controller::spawn_kube(&kc, data.path(), Vec::new())
        .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"));
    cluster
        .apply(&install_webhook_configuration(&webhook_addr(&ctl)))
        .unwrap();
    cluster
        .apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: lab-0\n")
        .unwrap();
    let selector = "app.kubernetes.io/name=pimesh-controller";
    let mut pods = Vec::new();
    assert!(eventually(Duration::from_secs(30), || {
        pods = cluster.unstarted_pods("pimesh", selector).unwrap();
        !pods.is_empty()
    }));
    cluster
        .run_pod("pimesh", &pods[0], "lab-0", "10.244.0.2")
        .unwrap();
    // A meshed pod, injected by the API server through the webhook.
    cluster
        .apply(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  annotations:\n    \
             pimesh.io/inject: enabled\n",
        )
        .unwrap();
    let pod = cluster.dir.join("web.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  \
         containers:\n    - name: app\n      image: web\n",
    )
    .unwrap();
    let pod = pod.display().to_string();
    let mut out = String::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            // The default ServiceAccount may not exist yet, nor the caBundle.
            let _ = cluster.kubectl(&[
                "delete",
                "pod",
                "web",
                "-n",
                "shop",
                "--ignore-not-found",
                "--grace-period=0",
                "--force",
            ]);
            cluster.kubectl(&["create", "-f", &pod]).is_ok()
                && cluster
                    .kubectl(&[
                        "get",
                        "pod",
                        "web",
                        "-n",
                        "shop",
                        "-o",
                        "jsonpath={.spec.initContainers[*].name}",
                    ])
                    .is_ok_and(|n| n.contains("pimesh-proxy"))
        }),
        "the pod was not injected:\n{}",
        ctl.log()
    );
    cluster
        .run_pod("shop", "web", "lab-0", "10.244.1.2")
        .unwrap();
    let mut code = None;
    assert!(
        eventually(Duration::from_secs(30), || {
            (code, out) = check(&admin, &[]);
            code == Some(0)
        }),
        "check did not pass:\n{out}\n{}",
        ctl.log()
    );
    for line in [
        "✔ controller pod is running and ready",
        "✔ trust anchors are valid for at least 60 days",
        "✔ proxy injector webhook is registered with the trust anchors",
        "✔ proxy injector answers (a dry-run pod is injected)",
        "✔ data-plane proxies are ready (1 meshed pod(s))",
        "✔ data-plane proxies are at the control plane's version",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }

    // The controller stops: pods would be created uninjected.
    ctl.kill();
    let (code, out) = check(&admin, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("× proxy injector answers (a dry-run pod is injected)\n    the API server created the pod uninjected"),
        "{out}"
    );
}
