//! A meshed Kubernetes cluster on one machine, for `pimesh-lab demo --kube`
//! and `pimesh-lab kube node`: the test control plane ([`Cluster`]),
//! pimesh installed from `pimesh install` (namespace, ServiceAccount and
//! RBAC, Service, the proxy injector's MutatingWebhookConfiguration), the
//! controller running in the mesh lab's controller namespace in
//! Kubernetes mode with its own ServiceAccount token (no kubelet runs its
//! Deployment: that and its volume claim are left out; the node agent
//! shows it as a mirror pod, as a kubelet shows a static pod), and the
//! node agent ([`NodeAgent`]) running every pod the API server stores,
//! injected by the controller through the real admission chain.
//!
//! The webhook configuration is `pimesh install`'s with its Service
//! reference replaced by the URL of the injector forwarded to the host's
//! loopback (no kube-proxy routes a ClusterIP here); pods reach the
//! controller at the Service's DNS name through the node agent's
//! `/etc/hosts`.

use crate::kube::node::{Image, NodeAgent, NodeConfig, StaticPod};
use crate::kube::{self, Cluster};
use crate::lab::{Bins, KubeMode, Lab, Options};
use crate::process::run;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The Node the agent registers unless told otherwise.
pub const NODE: &str = "lab-0";

/// Bringing the Kubernetes lab up failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The test control plane.
    #[error("the test control plane")]
    Kube(#[from] kube::Error),
    /// The mesh lab (network, controller).
    #[error("the mesh lab")]
    Lab(#[from] crate::lab::Error),
    /// A command (pimesh install, kubectl).
    #[error(transparent)]
    Process(#[from] crate::process::Error),
    /// Something did not become ready in time.
    #[error("{0}")]
    NotReady(String),
}

/// What runs; dropping it stops the agent's pods, then the lab, then the
/// control plane.
#[derive(Debug)]
pub struct KubeLab {
    /// The node agent (dropped first: its pods stop).
    pub agent: NodeAgent,
    /// The mesh lab: bridge, controller.
    pub lab: Lab,
    /// The API server and friends.
    pub cluster: Cluster,
}

/// The documents of `pimesh install`'s output (without the leading
/// comment), split.
fn documents(stream: &str) -> Vec<String> {
    stream
        .split("---\n")
        .map(str::to_string)
        .filter(|d| d.contains("kind: "))
        .collect()
}

impl KubeLab {
    /// Brings everything up (see the module doc). `images` maps image
    /// references to what the node agent runs for them, besides the proxy
    /// image (→ `bins.proxy`); the agent registers Node `node`.
    ///
    /// # Errors
    ///
    /// The first part that fails, with what it printed.
    pub fn up(
        bins: &Bins,
        opts: &Options,
        images: BTreeMap<String, Image>,
        node: &str,
    ) -> Result<KubeLab, Error> {
        let say = |m: &str| {
            if opts.progress {
                println!("pimesh-lab: {m}");
            }
        };
        let cluster = Cluster::up(&kube::Options {
            dir: None,
            keep_dir: opts.keep_dir,
            progress: opts.progress,
        })?;
        let mut install = Command::new(&bins.pimesh);
        install.arg("install");
        let stream = String::from_utf8_lossy(&run(&mut install, Duration::from_secs(30))?.stdout)
            .into_owned();
        let docs = documents(&stream);
        let keep: Vec<&String> = docs
            .iter()
            .filter(|d| {
                !d.contains("kind: Deployment\n")
                    && !d.contains("kind: PersistentVolumeClaim\n")
                    && !d.contains("kind: MutatingWebhookConfiguration\n")
            })
            .collect();
        let keep: Vec<&str> = keep.iter().map(|d| d.as_str()).collect();
        cluster.apply(&keep.join("---\n"))?;
        say("pimesh installed (pimesh install: namespace, RBAC, Service; the controller runs in the lab)");
        let token = cluster.create_token(
            "pimesh",
            "pimesh-controller",
            None,
            Duration::from_secs(24 * 3600),
        )?;
        let kubeconfig = cluster.dir.join("controller.kubeconfig");
        cluster.token_kubeconfig(&kubeconfig, &token)?;
        let api_port: u16 = cluster
            .server
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default();
        let mut lab_opts = opts.clone();
        lab_opts.kube = Some(KubeMode {
            kubeconfig,
            api_port,
            tokens: BTreeMap::new(),
            service_cidr: kube::SERVICE_CIDR.into(),
        });
        let lab = Lab::up(&[], bins, &lab_opts)?;
        let hook = lab
            .webhook
            .as_ref()
            .map(|f| f.addr)
            .ok_or_else(|| Error::NotReady("the lab forwards no webhook port".into()))?;
        let service =
            "      service:\n        name: pimesh-controller\n        namespace: pimesh\n        \
                       path: /inject\n        port: 443\n";
        let webhook = docs
            .iter()
            .find(|d| d.contains("kind: MutatingWebhookConfiguration\n") && d.contains(service))
            .ok_or_else(|| {
                Error::NotReady("pimesh install printed no webhook configuration".into())
            })?
            .replace(service, &format!("      url: https://{hook}/inject\n"));
        cluster.apply(&webhook)?;

        let version = env!("CARGO_PKG_VERSION");
        let mut images = images;
        images.insert(
            format!("ghcr.io/pimesh/pimesh-proxy:{version}"),
            Image::Binary(bins.proxy.clone()),
        );
        let dir = lab.dir.join("node");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::NotReady(format!("{}: {e}", dir.display())))?;
        let agent = NodeAgent::start(NodeConfig {
            node: node.into(),
            kubectl: cluster.kubectl_handle(),
            names: lab.names.clone(),
            subnet: lab.subnet,
            hosts: 100..=250,
            dir,
            images,
            service_addrs: [("pimesh-controller.pimesh".to_string(), lab.controller_ip)].into(),
            service_cidr: kube::SERVICE_CIDR.into(),
            cluster_domain: "cluster.local".into(),
            // The controller, as the pod `pimesh check` and the Service
            // `pimesh-controller` look for.
            static_pods: vec![StaticPod {
                namespace: "pimesh".into(),
                name: format!("pimesh-controller-{node}"),
                labels: [
                    ("app.kubernetes.io/name", "pimesh-controller"),
                    ("app.kubernetes.io/part-of", "pimesh"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
                image: format!("ghcr.io/pimesh/pimesh:{version}"),
                ports: vec![
                    ("proxy-api".into(), crate::lab::CONTROLLER_PROXY_PORT),
                    ("admin".into(), crate::lab::CONTROLLER_ADMIN_PORT),
                    ("webhook".into(), crate::lab::WEBHOOK_PORT),
                ],
                ip: lab.controller_ip,
                netns: lab.names.netns("ctl"),
                ready: (crate::lab::CONTROLLER_ADMIN_PORT, "/ready".into()),
            }],
        })?;
        let kl = KubeLab {
            agent,
            lab,
            cluster,
        };
        kl.wait_injector(Duration::from_secs(60))?;
        say(&format!(
            "node agent {node} running; the API server injects pods through the controller ({hook})"
        ));
        Ok(kl)
    }

    /// Waits until a server-side dry-run pod (annotated) comes back with
    /// the proxy: the controller wrote the webhook's `caBundle` and answers.
    fn wait_injector(&self, timeout: Duration) -> Result<(), Error> {
        let probe = self.cluster.dir.join("inject-probe.yaml");
        std::fs::write(
            &probe,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: inject-probe\n  namespace: default\n  \
             annotations:\n    pimesh.io/inject: enabled\nspec:\n  containers:\n    - name: probe\n      image: probe\n",
        )
        .map_err(|e| Error::NotReady(format!("{}: {e}", probe.display())))?;
        let probe = probe.display().to_string();
        let end = Instant::now() + timeout;
        loop {
            let out =
                self.cluster
                    .kubectl(&["create", "--dry-run=server", "-o", "json", "-f", &probe]);
            if out.is_ok_and(|o| o.contains("\"pimesh-proxy\"")) {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(Error::NotReady(format!(
                    "the API server does not inject pods through the controller after {timeout:?}"
                )));
            }
            crate::interrupt::sleep(Duration::from_millis(500))
                .map_err(|e| Error::NotReady(e.to_string()))?;
        }
    }

    /// Waits until every Deployment of `ns` has all its replicas ready;
    /// `Err` names those that have not.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] naming the Deployments not ready after `timeout`
    /// (with the node agent's log), or when their list cannot be read; a
    /// failing `kubectl` as [`Error::Kube`].
    pub fn wait_deployments(&self, ns: &str, timeout: Duration) -> Result<(), Error> {
        let end = Instant::now() + timeout;
        loop {
            let out = self.cluster.kubectl(&[
                "get",
                "deployments",
                "-n",
                ns,
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.spec.replicas} {.status.readyReplicas}{\"\\n\"}{end}",
            ])?;
            let waiting: Vec<&str> = out
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() < 3 || f[1] != f[2]).then(|| f.first().copied().unwrap_or(""))
                })
                .collect();
            if !out.trim().is_empty() && waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(Error::NotReady(format!(
                    "deployments in {ns} not ready after {timeout:?}: {}\n(node agent log: {})",
                    waiting.join(", "),
                    self.lab.dir.join("node/node-agent.log").display()
                )));
            }
            crate::interrupt::sleep(Duration::from_millis(500))
                .map_err(|e| Error::NotReady(e.to_string()))?;
        }
    }

    /// Where the node agent keeps pods' logs.
    pub fn pods_dir(&self) -> PathBuf {
        self.lab.dir.join("node/pods")
    }
}
