//! The node agent on the test API server, through the library
//! (`KubeLab`): the demo's manifests run meshed; `pimesh check` passes
//! (the controller appears as a mirror pod, the injector answers, the
//! meshed pods are Ready at this version); a deleted pod's network
//! namespace goes and its replacement runs; a pod that opts out of native
//! sidecars gets the proxy first and its app after `pimesh-proxy await`;
//! once the controller stops,
//! `pimesh check` fails with a clear ×. Needs root.

mod support;

use pimesh_lab::kube::node::Image;
use pimesh_lab::kube_lab::KubeLab;
use pimesh_lab::Options;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

fn check(bins: &pimesh_lab::Bins, kubeconfig: &Path) -> (Option<i32>, String) {
    let out = run(
        Command::new(&bins.pimesh)
            .args(["check", "--kubeconfig"])
            .arg(kubeconfig),
        Duration::from_secs(60),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn injected_pods_run_and_check_follows_the_controller() {
    if !root_or_skip() {
        return;
    }
    let bins = bins();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/emojivoto");
    let demo = demo.canonicalize().unwrap();
    let opts = Options {
        id: Some(test_id()),
        scrape_interval: Duration::from_secs(2),
        ..Options::default()
    };
    let images = [(pimesh_lab::demo::kube_image(), Image::Dir(demo.clone()))].into();
    let mut kl =
        KubeLab::up(&bins, &opts, images, pimesh_lab::kube_lab::NODE).expect("kube lab up");
    let manifest = std::fs::read_to_string(demo.join("k8s/emojivoto.yaml")).unwrap();
    kl.cluster.apply(&manifest).unwrap();
    kl.wait_deployments("emojivoto", Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}\n{}", node_log(&kl)));

    // Every pod carries the proxy as a native sidecar, with the token.
    let pods = kl
        .cluster
        .kubectl(&[
            "get",
            "pods",
            "-n",
            "emojivoto",
            "-l",
            "app",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.initContainers[*].name} {.status.podIP}{\"\\n\"}{end}",
        ])
        .unwrap();
    assert_eq!(pods.lines().count(), 4, "{pods}");
    for l in pods.lines() {
        assert!(l.contains(" pimesh-init pimesh-proxy "), "{l}");
    }

    let kubeconfig = kl.cluster.kubeconfig.clone();
    let mut out = String::new();
    let passed = eventually(Duration::from_secs(60), || {
        let (code, o) = check(&bins, &kubeconfig);
        out = o;
        code == Some(0)
    });
    assert!(
        passed,
        "pimesh check did not pass:\n{out}\n{}",
        node_log(&kl)
    );
    assert!(
        out.contains("✔ controller pod is running and ready"),
        "{out}"
    );
    assert!(
        out.contains("✔ data-plane proxies are ready (4 meshed pod(s))")
            || out.contains("✔ data-plane proxies are ready (5 meshed pod(s))"),
        "the four deployments' pods (and the Job's while it runs): {out}"
    );

    // A deleted pod: its namespace goes, the ReplicaSet's new one runs.
    let web = kl
        .cluster
        .kubectl(&[
            "get",
            "pods",
            "-n",
            "emojivoto",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .unwrap();
    kl.cluster
        .kubectl(&[
            "delete",
            "pod",
            &web,
            "-n",
            "emojivoto",
            "--wait=true",
            "--timeout=60s",
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", node_log(&kl)));
    assert!(
        node_log(&kl).contains(&format!("emojivoto/{web}: stopped")),
        "the agent did not stop {web}:\n{}",
        node_log(&kl)
    );
    kl.wait_deployments("emojivoto", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n{}", node_log(&kl)));

    // An API server before 1.29 (or this annotation): the proxy is the
    // first container, and the app starts once its postStart hook
    // (`pimesh-proxy await`) saw the proxy ready.
    let old_style = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: old-style\n  namespace: emojivoto\n  \
         annotations:\n    config.pimesh.io/proxy-enable-native-sidecar: \"false\"\nspec:\n  \
         serviceAccountName: web\n  containers:\n    - name: app\n      \
         image: {}\n      \
         command: [\"python3\", \"-m\", \"http.server\", \"8080\"]\n      \
         readinessProbe:\n        tcpSocket:\n          port: 8080\n",
        pimesh_lab::demo::kube_image()
    );
    kl.cluster.apply(&old_style).unwrap();
    let mut got = String::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            got = kl
                .cluster
                .kubectl(&[
                    "get",
                    "pod",
                    "old-style",
                    "-n",
                    "emojivoto",
                    "-o",
                    "jsonpath={.spec.containers[*].name} {.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .unwrap_or_default();
            got == "pimesh-proxy app True"
        }),
        "{got}\n{}",
        node_log(&kl)
    );
    assert!(
        node_log(&kl).contains("emojivoto/old-style: pimesh-proxy postStart exited with 0"),
        "{}",
        node_log(&kl)
    );

    // No controller: the injector does not answer, its pod is not Ready.
    kl.lab.stop_controller();
    let failed = eventually(Duration::from_secs(30), || {
        let (code, o) = check(&bins, &kubeconfig);
        out = o;
        code == Some(1) && out.contains("× controller pod is running and ready")
    });
    assert!(failed, "{out}");
    assert!(
        out.contains("× proxy injector answers (a dry-run pod is injected)"),
        "{out}"
    );
    drop(kl);
}

fn node_log(kl: &KubeLab) -> String {
    std::fs::read_to_string(kl.lab.dir.join("node/node-agent.log")).unwrap_or_default()
}
