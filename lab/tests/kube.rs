//! The test control plane (`pimesh-lab kube`): a real API server that
//! answers `/readyz`, enforces RBAC (cluster-admin may, a fresh
//! ServiceAccount may not), issues ServiceAccount tokens, and whose
//! kube-controller-manager builds EndpointSlices; `kube up` killed with
//! SIGKILL leaves no process running, `kube down` stops a running one and
//! removes its directory. No root needed.

mod support;

use pimesh_lab::kube::{Cluster, Options};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn api_server_answers_and_enforces_rbac() {
    let mut cluster = Cluster::up(&Options::default()).expect("kube up");
    assert_eq!(
        cluster
            .kubectl(&["get", "--raw", "/readyz"])
            .unwrap()
            .trim(),
        "ok"
    );
    let version = cluster.kubectl(&["version", "-o", "json"]).unwrap();
    assert!(
        version.contains(&format!(
            "\"gitVersion\": \"{}\"",
            pimesh_lab::kube::versions().0
        )),
        "{version}"
    );
    // cluster-admin may; a new ServiceAccount (through its token) may not.
    assert_eq!(
        cluster
            .kubectl(&["auth", "can-i", "create", "pods"])
            .unwrap()
            .trim(),
        "yes"
    );
    cluster.kubectl(&["create", "namespace", "shop"]).unwrap();
    cluster
        .kubectl(&["create", "serviceaccount", "web", "-n", "shop"])
        .unwrap();
    let token = cluster
        .create_token("shop", "web", None, Duration::from_secs(600))
        .unwrap();
    let kc = cluster.dir.join("web.kubeconfig");
    cluster.token_kubeconfig(&kc, &token).unwrap();
    let can_i = |args: &[&str]| {
        let mut c = cluster.kubectl_command();
        c.env("KUBECONFIG", &kc).args(["auth", "can-i"]).args(args);
        String::from_utf8_lossy(&c.output().unwrap().stdout)
            .trim()
            .to_string()
    };
    assert_eq!(can_i(&["list", "pods", "-n", "shop"]), "no");
    assert_eq!(
        can_i(&["create", "tokenreviews.authentication.k8s.io"]),
        "no"
    );
    // A Role makes it yes: RBAC is on and reads our objects.
    cluster
        .kubectl(&[
            "create",
            "role",
            "read-pods",
            "-n",
            "shop",
            "--verb=list",
            "--resource=pods",
        ])
        .unwrap();
    cluster
        .kubectl(&[
            "create",
            "rolebinding",
            "read-pods",
            "-n",
            "shop",
            "--role=read-pods",
            "--serviceaccount=shop:web",
        ])
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || can_i(&[
            "list", "pods", "-n", "shop"
        ]) == "yes"),
        "the RoleBinding never took effect"
    );

    // kube-controller-manager: a Service with a ready Pod gets an
    // EndpointSlice (the Pod bound to a Node, its status set as a kubelet would).
    cluster
        .apply(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: lab-node\n---\n\
             apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n\
             spec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\n  labels:\n    app: web\n\
             spec:\n  nodeName: lab-node\n  serviceAccountName: web\n  containers:\n  - name: app\n    image: app\n",
        )
        .unwrap();
    cluster
        .kubectl(&[
            "patch", "pod", "web-1", "-n", "shop", "--subresource=status", "--type=merge", "-p",
            r#"{"status":{"phase":"Running","podIP":"10.244.0.7","podIPs":[{"ip":"10.244.0.7"}],"conditions":[{"type":"Ready","status":"True"}]}}"#,
        ])
        .unwrap();
    let mut slices = String::new();
    let built = {
        let c = &mut cluster;
        eventually(Duration::from_secs(20), || {
            slices = c
                .kubectl(&[
                    "get",
                    "endpointslices",
                    "-n",
                    "shop",
                    "-l",
                    "kubernetes.io/service-name=web",
                    "-o",
                    "jsonpath={.items[*].endpoints[*].addresses[*]}",
                ])
                .unwrap_or_default();
            slices.trim() == "10.244.0.7"
        })
    };
    assert!(built, "no EndpointSlice with the pod: {slices:?}");
    cluster.check().unwrap();
}

/// `pimesh-lab kube up --dir DIR` as a child; returns it once it printed
/// the kubeconfig export, with the lines it printed.
fn start_up(dir: &Path) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(lab_bin())
        .args(["kube", "up", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let done = line.starts_with("pimesh-lab: Kubernetes");
                seen.push(line);
                if done {
                    return (child, seen);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kube up printed no ready line:\n{}", seen.join("\n"))
            }
        }
    }
}

/// Pids of processes whose command line mentions `dir` (the cluster's
/// etcd, kube-apiserver and kube-controller-manager).
fn processes_of(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) && !cmd.contains("kube up") {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn killed_up_leaves_nothing_running_and_down_stops_a_live_one() {
    let base = std::env::temp_dir().join(format!("pimesh-kube-cli-{}", std::process::id()));
    let (mut child, lines) = start_up(&base);
    let export = format!("export KUBECONFIG={}", base.join("kubeconfig").display());
    assert!(lines.contains(&export), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("kubectl: ")),
        "{lines:?}"
    );
    let children = processes_of(&base);
    assert_eq!(
        children.len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager: {children:?}"
    );
    // A second up in the same directory is refused while this one lives.
    let busy = Command::new(lab_bin())
        .args(["kube", "up", "--dir"])
        .arg(&base)
        .output()
        .unwrap();
    assert_eq!(
        busy.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert!(String::from_utf8_lossy(&busy.stderr).contains("kube down --dir"));

    child.kill().unwrap();
    child.wait().unwrap();
    let gone = eventually(Duration::from_secs(10), || processes_of(&base).is_empty());
    assert!(
        gone,
        "left running after SIGKILL: {:?}",
        processes_of(&base)
    );

    // up again in the same directory (what the dead one left is replaced),
    // then down from another process.
    let (mut child, _) = start_up(&base);
    assert_eq!(processes_of(&base).len(), 3);
    let down = Command::new(lab_bin())
        .args(["kube", "down", "--dir"])
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(String::from_utf8_lossy(&down.stdout).contains("stopped the cluster"));
    let end = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "kube up did not exit after kube down");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(processes_of(&base).is_empty());
    assert!(!base.exists(), "kube down left {}", base.display());

    // A directory that holds something else is never removed, by up or down.
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("precious.txt"), "keep me").unwrap();
    for cmd in ["up", "down"] {
        let out = Command::new(lab_bin())
            .args(["kube", cmd, "--dir"])
            .arg(&base)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "kube {cmd}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a pimesh-lab kube directory"));
        assert!(
            base.join("precious.txt").is_file(),
            "kube {cmd} removed a foreign directory"
        );
    }
    std::fs::remove_dir_all(&base).unwrap();
}
