//! Kubernetes discovery end to end: a real API server (the test control
//! plane), `pimesh controller` in Kubernetes mode inside the lab (its own
//! ServiceAccount token, the RBAC of `k3s/controller-rbac.yaml`), and
//! meshed pods as network namespaces whose proxies certify with projected
//! ServiceAccount tokens. The Deployment `web` (3 replicas) in `shop` has
//! its Pod objects bound and made ready at the lab pods' addresses, as a
//! scheduler and kubelet would; kube-controller-manager builds the
//! EndpointSlices. From the `client` pod, requests to
//! `web.shop.svc.cluster.local` (explicit proxy) and to the ClusterIP
//! (transparent) reach all three pods over mTLS, and the client proxy's
//! metrics carry `dst_pod` / `dst_deployment`. Deleting a pod takes it out
//! of the client's balancer within 2 s; its replacement, once running,
//! is the one endpoint left when the other two are deleted.
//! Needs root.

mod support;

use pimesh_lab::kube::{Cluster, Options as KubeOptions};
use pimesh_lab::{KubeMode, Lab, Options, PodSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::*;

const AUDIENCE: &str = "identity.pimesh.io";

fn greeter(name: &str) -> PodSpec {
    PodSpec::new(name, &[8080])
        .identity("shop/web")
        .command(&format!(
        "echo 'hello from {name}' > index.html && exec python3 -m http.server 8080 --bind 0.0.0.0"
    ))
}

/// `n` requests from the client pod with curl `args`; which lab pods
/// answered (the greeting names them), and the failures.
fn answers(lab: &Lab, args: &[&str], n: usize) -> (BTreeSet<String>, Vec<String>) {
    let (mut who, mut bad) = (BTreeSet::new(), Vec::new());
    for _ in 0..n {
        let mut c = lab.exec("client", "curl").unwrap();
        c.args(["-sS", "--max-time", "5"]).args(args);
        let out = c.output().unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        match body.trim().strip_prefix("hello from ") {
            Some(pod) if out.status.success() => {
                who.insert(pod.to_string());
            }
            _ => bad.push(format!("{body} {}", String::from_utf8_lossy(&out.stderr))),
        }
    }
    (who, bad)
}

#[test]
fn pods_discovered_from_kubernetes_are_reached_over_mtls() {
    if !root_or_skip() {
        return;
    }
    let bins = bins();
    let cluster = Cluster::up(&KubeOptions::default()).expect("kube up");
    let rbac = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../k3s/controller-rbac.yaml"),
    )
    .unwrap();
    cluster.kubectl(&["create", "namespace", "pimesh"]).unwrap();
    cluster.apply(&rbac).unwrap();
    cluster.apply(pimesh_lab::kube::SHOP_WEB_YAML).unwrap();
    let controller_token = cluster
        .create_token(
            "pimesh",
            "pimesh-controller",
            None,
            Duration::from_secs(3600),
        )
        .unwrap();
    let kubeconfig = cluster.dir.join("controller.kubeconfig");
    cluster
        .token_kubeconfig(&kubeconfig, &controller_token)
        .unwrap();
    let hour = Duration::from_secs(3600);
    let mut tokens = BTreeMap::new();
    for pod in ["web-a", "web-b", "web-c", "web-d"] {
        let t = cluster
            .create_token("shop", "web", Some(AUDIENCE), hour)
            .unwrap();
        tokens.insert(pod.to_string(), t);
    }
    tokens.insert(
        "client".into(),
        cluster
            .create_token("shop", "client", Some(AUDIENCE), hour)
            .unwrap(),
    );
    let api_port: u16 = cluster.server.rsplit(':').next().unwrap().parse().unwrap();
    let opts = Options {
        kube: Some(KubeMode {
            kubeconfig,
            api_port,
            tokens,
            service_cidr: pimesh_lab::kube::SERVICE_CIDR.into(),
        }),
        proxy_log: "warn,pimesh=debug".into(),
        ..Options::default()
    };
    let pods = vec![
        greeter("web-a"),
        greeter("web-b"),
        greeter("web-c"),
        greeter("web-d"),
        PodSpec::new("client", &[]).identity("shop/client"),
    ];
    let lab = Lab::up(&pods, &bins, &opts).expect("lab up");
    let ip = |pod: &str| lab.pod(pod).ip.to_string();

    // The Deployment's three pods run at web-a, web-b and web-c.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut k8s = Vec::new();
    while k8s.len() < 3 {
        assert!(Instant::now() < deadline, "the Deployment made no 3 pods");
        k8s = cluster.unstarted_pods("shop", "app=web").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut lab_of: BTreeMap<String, String> = BTreeMap::new();
    for (k, l) in k8s.iter().zip(["web-a", "web-b", "web-c"]) {
        cluster.run_pod("shop", k, "lab-node", &ip(l)).unwrap();
        lab_of.insert(k.clone(), l.to_string());
    }

    // By name through the explicit proxy, and by ClusterIP transparently.
    let by_name = [
        "-x",
        "http://127.0.0.1:4140",
        "http://web.shop.svc.cluster.local/",
    ];
    let all3: BTreeSet<String> = ["web-a", "web-b", "web-c"].map(String::from).into();
    let reached = eventually(Duration::from_secs(20), || {
        answers(&lab, &by_name, 12).0 == all3
    });
    // Then no failures, every answer from the Deployment's pods (the
    // latency-aware balancer may leave its slowest pod out of a short run).
    let (who, bad) = answers(&lab, &by_name, 30);
    assert!(
        reached && who.is_subset(&all3) && bad.is_empty(),
        "by name: {who:?}, failures {bad:?}\n{}",
        lab.proxy_log("client")
    );
    let cluster_ip = cluster
        .kubectl(&[
            "get",
            "service",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .unwrap();
    let url = format!("http://{}/", cluster_ip.trim());
    let reached = eventually(Duration::from_secs(20), || {
        answers(&lab, &[&url], 12).0 == all3
    });
    let (who, bad) = answers(&lab, &[&url], 30);
    assert!(
        reached && who.is_subset(&all3) && bad.is_empty(),
        "by ClusterIP {url}: {who:?}, failures {bad:?}"
    );

    // mTLS, labelled with the Kubernetes pods and their Deployment.
    let m = lab.metrics("client").unwrap();
    for k in &k8s {
        let found = m.lines().any(|l| {
            l.starts_with("response_total{")
                && l.contains("direction=\"outbound\"")
                && l.contains("tls=\"true\"")
                && l.contains("server_id=\"web.shop.serviceaccount.identity.pimesh.cluster.local\"")
                && l.contains(&format!("dst_pod=\"{k}\""))
                && l.contains("dst_deployment=\"web\"")
                && l.contains("dst_namespace=\"shop\"")
        });
        assert!(found, "no mTLS response_total for pod {k}:\n{m}");
    }
    let served = lab.metrics("web-a").unwrap();
    assert!(
        served.lines().any(|l| l.starts_with("request_total{")
            && l.contains("direction=\"inbound\"")
            && l.contains(
                "client_id=\"client.shop.serviceaccount.identity.pimesh.cluster.local\""
            )),
        "web-a saw no meshed request from the client:\n{served}"
    );

    // A pod deleted leaves the client's balancer; its replacement joins.
    let gone = k8s[0].clone();
    cluster.delete_pod("shop", &gone).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (who, bad) = answers(&lab, &by_name, 20);
    assert!(bad.is_empty(), "{bad:?}");
    assert!(
        !who.contains(&lab_of[&gone]),
        "{} still served 2 s after its deletion: {who:?}",
        lab_of[&gone]
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let new = loop {
        if let Some(p) = cluster
            .unstarted_pods("shop", "app=web")
            .unwrap()
            .into_iter()
            .find(|p| !k8s.contains(p))
        {
            break p;
        }
        assert!(Instant::now() < deadline, "no replacement pod");
        std::thread::sleep(Duration::from_millis(100));
    };
    cluster
        .run_pod("shop", &new, "lab-node", &ip("web-d"))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // A fresh endpoint starts at peak-EWMA's default RTT (30 ms, as
    // Linkerd's) and loses p2c against warm ones under sequential load, so
    // take the two others away: 2 s later, web-d alone must answer.
    for k in &k8s[1..] {
        cluster.delete_pod("shop", k).unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let (who, bad) = answers(&lab, &by_name, 20);
    let only_d: BTreeSet<String> = ["web-d".to_string()].into();
    assert!(
        who == only_d && bad.is_empty(),
        "the replacement at web-d ({}) is not the one endpoint left: {who:?} {bad:?}\nslices: {}\ncontroller: {}",
        ip("web-d"),
        cluster
            .kubectl(&["get", "endpointslices", "-n", "shop", "-o", "yaml"])
            .unwrap_or_default(),
        lab.cli(&["service", "ls", "-n", "shop", "-o", "json"])
            .unwrap_or_else(|e| e.to_string()),
    );
    let mut lab = lab;
    lab.check().unwrap();
}
