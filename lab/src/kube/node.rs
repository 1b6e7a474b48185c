//! The lab's node agent (`pimesh-lab kube node`): a minimal kubelet for
//! tests. It registers Node `NAME` on the test API server, binds pods no
//! scheduler placed (`pods/binding`: no kube-scheduler runs here), and runs
//! every pod bound to it as a network namespace on the lab's bridge, as the
//! mesh lab runs its pods:
//!
//! - **volumes**: `projected` ServiceAccount tokens from the TokenRequest
//!   API (audience, expiry, bound to the pod, as the kubelet asks for
//!   them), `configMap` (and projected configMap) keys, `emptyDir`;
//!   each container sees them at their `mountPath` through bind mounts in
//!   its own mount namespace (a fresh `/run` for those under it, nothing
//!   made on the host), with an `/etc/hosts` that names every
//!   Service by its ClusterIP (and the Services given in
//!   [`NodeConfig::service_addrs`], which have no routable ClusterIP here,
//!   by that address): the lab's stand-in for cluster DNS;
//! - **containers**: init containers in order (so `pimesh-proxy init`
//!   programs the pod's iptables), a native sidecar (`restartPolicy:
//!   Always`) started and its `startupProbe` awaited before the next, then
//!   the containers, each after the previous one's `postStart` exec hook
//!   returned (the proxy's `pimesh-proxy await` when it is not a native
//!   sidecar). No images: [`NodeConfig::images`] maps an image to a
//!   built binary (its entrypoint) or to a directory (the working
//!   directory of the container's `command`), as the issue's "pods that
//!   really run" asks; `runAsUser`, `env` (values, `fieldRef`, `$(VAR)`)
//!   and Service links (`NAME_SERVICE_HOST`/`_PORT`) as the kubelet sets
//!   them;
//! - **status** through the status subresource: phase, pod IP,
//!   conditions, container statuses; `tcpSocket`/`httpGet` readiness
//!   probes; a pod whose containers all ended (`restartPolicy` `Never` /
//!   `OnFailure`: Jobs) stops its sidecars and becomes `Succeeded` (or
//!   `Failed`); a container that ends in an `Always` pod is restarted;
//! - **mirror pods** of what the lab runs itself ([`StaticPod`]: the
//!   controller), as a kubelet shows its static pods, Ready as their
//!   readiness endpoint answers;
//! - **deletion**: the containers stop (sidecars last), the namespace
//!   goes, and a gracefully deleted pod is removed for good (grace 0), as
//!   the kubelet confirms.
//!
//! It polls the API server (every [`POLL`]) through kubectl rather than
//! watching: small, and what a test needs. Everything it creates lives
//! under the lab's names, so the lab's teardown removes what is left.

use super::Kubectl;
use crate::net::{self, Names, Subnet};
use crate::process::{command_with_mounts, connect_in, http_get, Mount, Proc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the agent looks at the API server.
pub const POLL: Duration = Duration::from_millis(500);
/// How long a run-to-completion init container or a sidecar's startup
/// probe may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What an image stands for on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A built binary: the entrypoint when the container has no `command`.
    Binary(PathBuf),
    /// A directory: the working directory of the container's `command`.
    Dir(PathBuf),
}

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name.
    pub node: String,
    /// kubectl and a kubeconfig allowed to bind pods, write their status,
    /// create tokens and read ConfigMaps and Services (cluster-admin in
    /// the lab).
    pub kubectl: Kubectl,
    /// The lab's names (namespaces `pml-<id>-k-<n>`, veths).
    pub names: Names,
    /// The lab's /24.
    pub subnet: Subnet,
    /// Host numbers in the subnet this agent may give pods.
    pub hosts: std::ops::RangeInclusive<u8>,
    /// Where pods' files and logs go.
    pub dir: PathBuf,
    /// Images by reference (`ghcr.io/pimesh/pimesh-proxy:0.1.0`).
    pub images: BTreeMap<String, Image>,
    /// `NAME.NS` of Services reached at a fixed address (the controller
    /// running outside the cluster's pods), for `/etc/hosts`.
    pub service_addrs: BTreeMap<String, Ipv4Addr>,
    /// The Service CIDR, routed through the pod's `eth0` so that the
    /// proxy's iptables rules see traffic to ClusterIPs.
    pub service_cidr: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Processes the lab runs itself that the API should see as pods of
    /// this node (the kubelet's static pods, shown as mirror pods).
    pub static_pods: Vec<StaticPod>,
}

/// A process of the lab shown as a mirror pod (annotation
/// `kubernetes.io/config.mirror`, as a kubelet shows its static pods):
/// Running at `ip`, Ready while `GET /ready_path` on `ready_port` answers
/// 2xx/3xx inside `netns`.
#[derive(Debug, Clone)]
pub struct StaticPod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels (Services select it by them).
    pub labels: BTreeMap<String, String>,
    /// Its one container's image (for the record).
    pub image: String,
    /// Named container ports (Services' named target ports resolve here).
    pub ports: Vec<(String, u16)>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its network namespace.
    pub netns: String,
    /// The readiness probe's port and path.
    pub ready: (u16, String),
}

/// The annotation that marks a mirror pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A running agent; dropping it stops every pod it runs.
#[derive(Debug)]
pub struct NodeAgent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeAgent {
    /// Registers the Node and starts the agent's thread (which owns the
    /// pods' processes: they die with it).
    ///
    /// # Errors
    ///
    /// The Node cannot be created.
    pub fn start(cfg: NodeConfig) -> Result<NodeAgent, crate::process::Error> {
        cfg.kubectl.apply(
            &cfg.dir,
            &format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n  labels:\n    \
                 kubernetes.io/hostname: {}\n    kubernetes.io/os: linux\n",
                cfg.node, cfg.node
            ),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("node-{}", cfg.node))
            .spawn(move || Agent::new(cfg).run(&flag))
            .map_err(|e| crate::process::Error::Spawn("the node agent".into(), e))?;
        Ok(NodeAgent {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the agent's thread still runs.
    pub fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One container's process and what the agent knows of it.
#[derive(Debug)]
struct Running {
    name: String,
    image: String,
    proc: Proc,
    restarts: u32,
    /// Exit code once it ended (and is not restarted).
    exit: Option<i32>,
    ready: bool,
    spec: Value,
    sidecar: bool,
    env: Vec<(String, String)>,
    argv: Vec<String>,
    cwd: PathBuf,
    uid: Option<u32>,
    mounts: Vec<Mount>,
}

/// A pod the agent runs.
#[derive(Debug)]
struct PodRun {
    key: String,
    ns: String,
    name: String,
    netns: String,
    host: u8,
    ip: Ipv4Addr,
    dir: PathBuf,
    restart_policy: String,
    inits: Vec<(String, String, i32)>,
    containers: Vec<Running>,
    phase: String,
    message: Option<String>,
    last_status: String,
}

struct Agent {
    cfg: NodeConfig,
    pods: BTreeMap<String, PodRun>,
    free: BTreeSet<u8>,
    /// Pods that could not start yet (a ConfigMap missing): key → why.
    waiting: BTreeMap<String, String>,
    /// Mirror pods: key → the status last written.
    mirrors: BTreeMap<String, String>,
}

/// `metadata.namespace/metadata.name` of a Pod object.
fn key_of(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or_default(),
        pod["metadata"]["name"].as_str().unwrap_or_default()
    )
}

impl Agent {
    fn new(cfg: NodeConfig) -> Agent {
        let free = cfg.hosts.clone().collect();
        Agent {
            cfg,
            pods: BTreeMap::new(),
            free,
            waiting: BTreeMap::new(),
            mirrors: BTreeMap::new(),
        }
    }

    fn log(&self, msg: &str) {
        use std::io::Write;
        let path = self.cfg.dir.join("node-agent.log");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{msg}");
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.tick() {
                self.log(&format!("tick: {e}"));
            }
            let end = Instant::now() + POLL;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let keys: Vec<String> = self.pods.keys().cloned().collect();
        for k in keys {
            self.stop_pod(&k, false);
        }
    }

    fn list(&self, selector: &str) -> Result<Vec<Value>, String> {
        let out = self
            .cfg
            .kubectl
            .run(&[
                "get",
                "pods",
                "-A",
                "--field-selector",
                selector,
                "-o",
                "json",
            ])
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    fn tick(&mut self) -> Result<(), String> {
        // Bind what no scheduler placed.
        for pod in self.list("spec.nodeName=")? {
            if pod["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            let (ns, name) = (
                pod["metadata"]["namespace"].as_str().unwrap_or_default(),
                pod["metadata"]["name"].as_str().unwrap_or_default(),
            );
            if let Err(e) = self
                .cfg
                .kubectl
                .bind(&self.cfg.dir, ns, name, &self.cfg.node)
            {
                self.log(&format!("bind {ns}/{name}: {e}"));
            }
        }
        let pods = self.list(&format!("spec.nodeName={}", self.cfg.node))?;
        let seen: BTreeSet<String> = pods.iter().map(key_of).collect();
        // Gone from the API: stop.
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.stop_pod(&k, false);
        }
        for pod in &pods {
            let k = key_of(pod);
            if pod["metadata"]["annotations"][MIRROR_ANNOTATION].is_string() {
                continue;
            }
            if pod["metadata"]["deletionTimestamp"].is_string() {
                if self.pods.contains_key(&k) {
                    self.stop_pod(&k, true);
                } else {
                    self.confirm_deletion(&k);
                }
                continue;
            }
            let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
            if !self.pods.contains_key(&k) && (phase == "Pending" || phase.is_empty()) {
                match self.start_pod(pod) {
                    Ok(()) => {
                        self.waiting.remove(&k);
                    }
                    Err(why) => {
                        if self.waiting.insert(k.clone(), why.clone()).as_ref() != Some(&why) {
                            self.log(&format!("{k}: not started: {why}"));
                        }
                    }
                }
            }
        }
        let keys: Vec<String> = self.pods.keys().cloned().collect();
        for k in keys {
            self.supervise(&k);
            self.report(&k);
        }
        self.mirror(&seen);
        Ok(())
    }

    /// Creates the mirror pods that do not exist and writes their status
    /// when their readiness changed.
    fn mirror(&mut self, seen: &BTreeSet<String>) {
        for sp in self.cfg.static_pods.clone() {
            let k = format!("{}/{}", sp.namespace, sp.name);
            if !seen.contains(&k) {
                let labels: String = sp
                    .labels
                    .iter()
                    .map(|(l, v)| format!("    {l}: {v:?}\n"))
                    .collect();
                let ports: String = sp
                    .ports
                    .iter()
                    .map(|(n, p)| format!("        - name: {n}\n          containerPort: {p}\n"))
                    .collect();
                let yaml = format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  \
                     annotations:\n    {MIRROR_ANNOTATION}: lab\n  labels:\n{labels}spec:\n  \
                     nodeName: {}\n  containers:\n    - name: {}\n      image: {}\n      ports:\n{ports}",
                    sp.name, sp.namespace, self.cfg.node, sp.name, sp.image
                );
                match self.cfg.kubectl.create(&self.cfg.dir, &yaml) {
                    Ok(_) => {
                        self.mirrors.remove(&k);
                        self.log(&format!("{k}: mirror pod created"));
                    }
                    Err(e) => {
                        self.log(&format!("{k}: mirror pod: {e}"));
                        continue;
                    }
                }
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], sp.ready.0));
            let ready = matches!(
                http_get(Some(&sp.netns), addr, &sp.ready.1, Duration::from_secs(1)),
                Ok((c, _)) if (200..400).contains(&c)
            );
            let b = if ready { "True" } else { "False" };
            let body = json!({"status": {
                "phase": "Running",
                "podIP": sp.ip.to_string(),
                "podIPs": [{"ip": sp.ip.to_string()}],
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Initialized", "status": "True"},
                    {"type": "ContainersReady", "status": b},
                    {"type": "Ready", "status": b},
                ],
                "containerStatuses": [{"name": sp.name, "image": sp.image, "imageID": "",
                    "ready": ready, "started": true, "restartCount": 0, "state": {"running": {}}}],
            }})
            .to_string();
            if self.mirrors.get(&k) == Some(&body) {
                continue;
            }
            let patched = self
                .cfg
                .kubectl
                .patch_status(&sp.namespace, &sp.name, &body);
            match patched {
                Ok(_) => {
                    self.mirrors.insert(k, body);
                }
                Err(e) => self.log(&format!("{k}: mirror status: {e}")),
            }
        }
    }

    fn confirm_deletion(&self, k: &str) {
        let (ns, name) = k.split_once('/').unwrap_or(("", k));
        let _ = self.cfg.kubectl.force_delete_pod(ns, name, false);
    }

    /// Writes the pod's volumes under `dir/volumes`; name → directory.
    fn volumes(&self, pod: &Value, dir: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let sa = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let mut out = BTreeMap::new();
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default();
            let vdir = dir.join("volumes").join(name);
            std::fs::create_dir_all(&vdir).map_err(|e| format!("{}: {e}", vdir.display()))?;
            let mut sources = Vec::new();
            if let Some(ps) = v["projected"]["sources"].as_array() {
                sources.extend(ps.iter().cloned());
            }
            if v["configMap"].is_object() {
                sources.push(json!({"configMap": v["configMap"]}));
            }
            if v["downwardAPI"].is_object() {
                sources.push(json!({"downwardAPI": v["downwardAPI"]}));
            }
            for src in sources {
                if let Some(t) = src.get("serviceAccountToken") {
                    let mut args = vec![
                        "create".to_string(),
                        "token".into(),
                        sa.into(),
                        "-n".into(),
                        ns.into(),
                        "--bound-object-kind".into(),
                        "Pod".into(),
                        "--bound-object-name".into(),
                        pod["metadata"]["name"].as_str().unwrap_or_default().into(),
                        "--bound-object-uid".into(),
                        pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
                        "--duration".into(),
                        format!("{}s", t["expirationSeconds"].as_u64().unwrap_or(3600)),
                    ];
                    if let Some(a) = t["audience"].as_str() {
                        args.extend(["--audience".into(), a.into()]);
                    }
                    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                    let token = self.cfg.kubectl.run(&refs).map_err(|e| e.to_string())?;
                    let path = t["path"].as_str().unwrap_or("token");
                    write(&vdir.join(path), token.trim())?;
                }
                if let Some(d) = src.get("downwardAPI") {
                    for it in d["items"].as_array().into_iter().flatten() {
                        let value = match it["fieldRef"]["fieldPath"].as_str() {
                            Some("metadata.namespace") => ns.to_string(),
                            Some("metadata.name") => pod["metadata"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            Some("metadata.uid") => pod["metadata"]["uid"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            _ => continue,
                        };
                        let p = it["path"].as_str().unwrap_or_default();
                        if !p.is_empty() {
                            write(&vdir.join(p), &value)?;
                        }
                    }
                }
                if let Some(cm) = src.get("configMap") {
                    let cm_name = cm["name"].as_str().unwrap_or_default();
                    let got = self
                        .cfg
                        .kubectl
                        .run(&["get", "configmap", cm_name, "-n", ns, "-o", "json"])
                        .map_err(|_| format!("ConfigMap {ns}/{cm_name} not found"))?;
                    let got: Value = serde_json::from_str(&got).map_err(|e| e.to_string())?;
                    let data = got["data"].as_object().cloned().unwrap_or_default();
                    match cm["items"].as_array() {
                        Some(items) => {
                            for it in items {
                                let k = it["key"].as_str().unwrap_or_default();
                                let p = it["path"].as_str().unwrap_or(k);
                                write(
                                    &vdir.join(p),
                                    data.get(k).and_then(Value::as_str).unwrap_or(""),
                                )?;
                            }
                        }
                        None => {
                            for (k, val) in &data {
                                write(&vdir.join(k), val.as_str().unwrap_or_default())?;
                            }
                        }
                    }
                }
            }
            out.insert(name.to_string(), vdir);
        }
        Ok(out)
    }

    /// `/etc/hosts` of a pod: itself, every Service, the fixed addresses.
    fn hosts_file(&self, name: &str, ip: Ipv4Addr) -> Result<String, String> {
        let mut out = format!("127.0.0.1\tlocalhost\n{ip}\t{name}\n");
        let svcs = self
            .cfg
            .kubectl
            .run(&["get", "services", "-A", "-o", "json"])
            .map_err(|e| e.to_string())?;
        let svcs: Value = serde_json::from_str(&svcs).map_err(|e| e.to_string())?;
        let d = &self.cfg.cluster_domain;
        for s in svcs["items"].as_array().into_iter().flatten() {
            let (n, ns) = (
                s["metadata"]["name"].as_str().unwrap_or_default(),
                s["metadata"]["namespace"].as_str().unwrap_or_default(),
            );
            let addr = match self.cfg.service_addrs.get(&format!("{n}.{ns}")) {
                Some(a) => a.to_string(),
                None => match s["spec"]["clusterIP"].as_str() {
                    Some(ip) if ip != "None" && !ip.is_empty() => ip.to_string(),
                    _ => continue,
                },
            };
            out.push_str(&format!("{addr}\t{n}.{ns}.svc.{d} {n}.{ns}.svc {n}.{ns}\n"));
        }
        Ok(out)
    }

    /// `NAME_SERVICE_HOST` / `_PORT` of the Services of `ns` (the kubelet's
    /// `enableServiceLinks`).
    fn service_links(&self, ns: &str) -> Vec<(String, String)> {
        let Ok(out) = self
            .cfg
            .kubectl
            .run(&["get", "services", "-n", ns, "-o", "json"])
        else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        let mut env = Vec::new();
        for s in v["items"].as_array().into_iter().flatten() {
            let Some(ip) = s["spec"]["clusterIP"].as_str().filter(|ip| *ip != "None") else {
                continue;
            };
            let Some(port) = s["spec"]["ports"][0]["port"].as_u64() else {
                continue;
            };
            let n = s["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_uppercase()
                .replace('-', "_");
            env.push((format!("{n}_SERVICE_HOST"), ip.to_string()));
            env.push((format!("{n}_SERVICE_PORT"), port.to_string()));
        }
        env
    }

    fn start_pod(&mut self, pod: &Value) -> Result<(), String> {
        let k = key_of(pod);
        let (ns, name) = k.split_once('/').unwrap_or(("", &k));
        let (ns, name) = (ns.to_string(), name.to_string());
        let host = *self.free.iter().next().ok_or("no address left for a pod")?;
        let dir = self.cfg.dir.join("pods").join(format!("{ns}_{name}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let volumes = self.volumes(pod, &dir)?;
        // Readable by any uid a container runs as (no fsGroup here).
        let _ = std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(dir.join("volumes"))
            .status();
        let ip = self.cfg.subnet.host(host);
        let hosts = dir.join("hosts");
        write(&hosts, &self.hosts_file(&name, ip)?)?;
        let netns = self.cfg.names.netns(&format!("k{host}"));
        let veth = self.cfg.names.veth(1000 + usize::from(host));
        net::add_node(&self.cfg.names, &netns, &veth, ip)
            .map_err(|e| crate::lab::error_text(&e))?;
        self.free.remove(&host);
        let mut route =
            crate::process::command(Some(&netns), None, "ip").map_err(|e| e.to_string())?;
        route.args(["route", "add", &self.cfg.service_cidr, "dev", "eth0"]);
        crate::process::run(&mut route, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        self.log(&format!("{k}: network namespace {netns} at {ip}"));
        let mut run = PodRun {
            key: k.clone(),
            ns: ns.clone(),
            name: name.clone(),
            netns,
            host,
            ip,
            dir: dir.clone(),
            restart_policy: pod["spec"]["restartPolicy"]
                .as_str()
                .unwrap_or("Always")
                .to_string(),
            inits: Vec::new(),
            containers: Vec::new(),
            phase: "Pending".into(),
            message: None,
            last_status: String::new(),
        };
        let links = self.service_links(&ns);
        let node = self.cfg.node.clone();
        let field = |path: &str| -> String {
            match path {
                "metadata.name" => name.clone(),
                "metadata.namespace" => ns.clone(),
                "metadata.uid" => pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
                "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default")
                    .into(),
                "spec.nodeName" => node.clone(),
                "status.podIP" => ip.to_string(),
                _ => String::new(),
            }
        };
        let mut result = Ok(());
        let inits = pod["spec"]["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for c in &inits {
            let prepared = self.prepare(pod, c, &run, &volumes, &hosts, &links, &field);
            let mut r = match prepared {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if c["restartPolicy"] == "Always" {
                r.sidecar = true;
                let probe = c["startupProbe"].clone();
                let started = self.wait_probe(&run.netns, &probe, &mut r.proc);
                r.ready = started.is_ok();
                run.containers.push(r);
                if let Err(e) = started {
                    result = Err(e);
                    break;
                }
            } else {
                let code = wait_exit(&mut r.proc, STEP_TIMEOUT);
                run.inits.push((r.name.clone(), r.image.clone(), code));
                if code != 0 {
                    result = Err(format!(
                        "init container {} exited with {code}:\n{}",
                        r.name,
                        tail(&r.proc.log_text())
                    ));
                    break;
                }
            }
        }
        if result.is_ok() {
            for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
                match self.prepare(pod, c, &run, &volumes, &hosts, &links, &field) {
                    Ok(r) => {
                        // The kubelet starts the next container once the
                        // postStart hook returned.
                        let hook = self.post_start(&run, &r);
                        run.containers.push(r);
                        if let Err(e) = hook {
                            result = Err(e);
                            break;
                        }
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        match result {
            Ok(()) => run.phase = "Running".into(),
            Err(e) => {
                self.log(&format!("{k}: failed to start: {e}"));
                run.phase = "Failed".into();
                run.message = Some(e);
                for c in run.containers.iter_mut().rev() {
                    c.proc.kill();
                    c.exit = c.proc.child.try_wait().ok().flatten().map(exit_code);
                }
            }
        }
        self.pods.insert(k, run);
        Ok(())
    }

    /// Starts container `c` of `pod`.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        pod: &Value,
        c: &Value,
        run: &PodRun,
        volumes: &BTreeMap<String, PathBuf>,
        hosts: &Path,
        links: &[(String, String)],
        field: &dyn Fn(&str) -> String,
    ) -> Result<Running, String> {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let image = c["image"].as_str().unwrap_or_default().to_string();
        let mapped = self.cfg.images.get(&image).cloned();
        // Environment: service links first, then the container's own, in
        // order, each expanding `$(VAR)` of those before it.
        let mut env: Vec<(String, String)> = links.to_vec();
        for e in c["env"].as_array().into_iter().flatten() {
            let n = e["name"].as_str().unwrap_or_default().to_string();
            let v = if let Some(v) = e["value"].as_str() {
                expand(v, &env)
            } else if let Some(p) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                field(p)
            } else {
                String::new()
            };
            env.push((n, v));
        }
        let mut argv: Vec<String> = Vec::new();
        match c["command"].as_array() {
            Some(cmd) if !cmd.is_empty() => {
                argv.extend(
                    cmd.iter()
                        .filter_map(Value::as_str)
                        .map(|s| expand(s, &env)),
                );
                argv[0] = self.program(&image, &argv[0]);
            }
            _ => match &mapped {
                Some(Image::Binary(b)) => argv.push(b.display().to_string()),
                _ => {
                    return Err(format!(
                    "container {name}: no command and image {image:?} is not mapped to a binary"
                ))
                }
            },
        }
        argv.extend(
            c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|s| expand(s, &env)),
        );
        let cwd = match &mapped {
            Some(Image::Dir(d)) => d.clone(),
            _ => run.dir.clone(),
        };
        let uid = c["securityContext"]["runAsUser"]
            .as_u64()
            .or_else(|| pod["spec"]["securityContext"]["runAsUser"].as_u64())
            .and_then(|u| u32::try_from(u).ok())
            .filter(|u| *u != 0);
        let mut mounts = vec![Mount {
            source: hosts.to_path_buf(),
            target: PathBuf::from("/etc/hosts"),
            read_only: true,
        }];
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let v = m["name"].as_str().unwrap_or_default();
            let Some(src) = volumes.get(v) else {
                return Err(format!("container {name}: no volume {v}"));
            };
            let target = PathBuf::from(m["mountPath"].as_str().unwrap_or_default());
            if !target.is_absolute() {
                return Err(format!(
                    "container {name}: mountPath {} is not absolute",
                    target.display()
                ));
            }
            mounts.push(Mount {
                source: src.clone(),
                target,
                read_only: m["readOnly"] == true,
            });
        }
        let r = Running {
            name,
            image,
            proc: self.spawn(
                &run.netns, &run.dir, &argv, &env, &cwd, uid, &mounts, &run.key, 0,
            )?,
            restarts: 0,
            exit: None,
            ready: false,
            spec: c.clone(),
            sidecar: false,
            env,
            argv,
            cwd,
            uid,
            mounts,
        };
        Ok(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        netns: &str,
        dir: &Path,
        argv: &[String],
        env: &[(String, String)],
        cwd: &Path,
        uid: Option<u32>,
        mounts: &[Mount],
        key: &str,
        restarts: u32,
    ) -> Result<Proc, String> {
        let (program, args) = argv.split_first().ok_or("empty command")?;
        let mut cmd =
            command_with_mounts(Some(netns), uid, program, mounts).map_err(|e| e.to_string())?;
        cmd.args(args).current_dir(cwd);
        for k in crate::lab::PROXY_ENV {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let name = format!(
            "{key}/{}",
            Path::new(program)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or(program)
        );
        let log = dir.join(format!(
            "{}{}.log",
            Path::new(program)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("c"),
            if restarts > 0 {
                format!(".{restarts}")
            } else {
                String::new()
            }
        ));
        Proc::spawn(&name, cmd, &log).map_err(|e| crate::lab::error_text(&e))
    }

    /// Runs container `r`'s `lifecycle.postStart.exec` command (if any) in
    /// its namespaces, as its user, and waits for it ([`STEP_TIMEOUT`]).
    fn post_start(&self, run: &PodRun, r: &Running) -> Result<(), String> {
        let Some(cmd) = r.spec["lifecycle"]["postStart"]["exec"]["command"].as_array() else {
            return Ok(());
        };
        let mut argv: Vec<String> = cmd
            .iter()
            .filter_map(Value::as_str)
            .map(|s| expand(s, &r.env))
            .collect();
        if let Some(first) = argv.first_mut() {
            *first = self.program(&r.image, first);
        }
        let mut p = self.spawn(
            &run.netns,
            &run.dir,
            &argv,
            &r.env,
            &r.cwd,
            r.uid,
            &r.mounts,
            &format!("{}/{}-poststart", run.key, r.name),
            0,
        )?;
        let code = wait_exit(&mut p, STEP_TIMEOUT);
        self.log(&format!(
            "{}: {} postStart exited with {code}",
            run.key, r.name
        ));
        if code == 0 {
            Ok(())
        } else {
            Err(format!(
                "the postStart hook of {} exited with {code}:\n{}",
                r.name,
                tail(&p.log_text())
            ))
        }
    }

    /// `program` as this host runs it: the image's binary when `program`
    /// names it by its path in the image (`/pimesh-proxy`).
    fn program(&self, image: &str, program: &str) -> String {
        match self.cfg.images.get(image) {
            Some(Image::Binary(b))
                if b.file_name()
                    .and_then(|f| f.to_str())
                    .map(|f| format!("/{f}"))
                    == Some(program.to_string()) =>
            {
                b.display().to_string()
            }
            _ => program.to_string(),
        }
    }

    /// Waits for `probe` (httpGet / tcpSocket; none: started) while `proc`
    /// runs.
    fn wait_probe(&self, netns: &str, probe: &Value, proc: &mut Proc) -> Result<(), String> {
        let end = Instant::now() + STEP_TIMEOUT;
        loop {
            if probe_ok(netns, probe) {
                return Ok(());
            }
            if !proc.running() {
                return Err(format!("{} exited:\n{}", proc.name, tail(&proc.log_text())));
            }
            if Instant::now() > end {
                return Err(format!(
                    "{}: startup probe failed for {STEP_TIMEOUT:?}:\n{}",
                    proc.name,
                    tail(&proc.log_text())
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Readiness, exits, restarts, and the end of a run-to-completion pod.
    fn supervise(&mut self, k: &str) {
        let Some(mut run) = self.pods.remove(k) else {
            return;
        };
        if run.phase == "Running" {
            let mut restart = Vec::new();
            for (i, c) in run.containers.iter_mut().enumerate() {
                if c.exit.is_some() {
                    continue;
                }
                if let Ok(Some(status)) = c.proc.child.try_wait() {
                    let code = exit_code(status);
                    let again = c.sidecar
                        || run.restart_policy == "Always"
                        || (run.restart_policy == "OnFailure" && code != 0);
                    if again {
                        restart.push(i);
                    } else {
                        c.exit = Some(code);
                        c.ready = false;
                    }
                    continue;
                }
                let probe = if c.sidecar {
                    &c.spec["startupProbe"]
                } else {
                    &c.spec["readinessProbe"]
                };
                c.ready = probe_ok(&run.netns, probe);
            }
            for i in restart {
                let c = &run.containers[i];
                match self.spawn(
                    &run.netns,
                    &run.dir,
                    &c.argv,
                    &c.env,
                    &c.cwd,
                    c.uid,
                    &c.mounts,
                    &run.key,
                    c.restarts + 1,
                ) {
                    Ok(p) => {
                        let c = &mut run.containers[i];
                        c.proc = p;
                        c.restarts += 1;
                        c.ready = false;
                    }
                    Err(e) => self.log(&format!("{k}: restart failed: {e}")),
                }
            }
            let apps: Vec<&Running> = run.containers.iter().filter(|c| !c.sidecar).collect();
            if !apps.is_empty() && apps.iter().all(|c| c.exit.is_some()) {
                let ok = apps.iter().all(|c| c.exit == Some(0));
                // The sidecars stop once the pod's containers are done.
                for c in run.containers.iter_mut().filter(|c| c.sidecar) {
                    c.proc.kill();
                    c.exit = Some(0);
                    c.ready = false;
                }
                run.phase = if ok { "Succeeded" } else { "Failed" }.into();
                self.log(&format!("{k}: {}", run.phase));
            }
        }
        self.pods.insert(k.to_string(), run);
    }

    /// Writes the pod's status when it changed.
    fn report(&mut self, k: &str) {
        let Some(run) = self.pods.get_mut(k) else {
            return;
        };
        let state = |exit: Option<i32>, running: bool| match exit {
            Some(code) => {
                json!({"terminated": {"exitCode": code, "reason": if code == 0 {"Completed"} else {"Error"}}})
            }
            None if running => json!({"running": {}}),
            None => json!({"waiting": {"reason": "ContainerCreating"}}),
        };
        let running = run.phase == "Running";
        let status_of = |c: &Running| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": c.ready,
                "started": c.exit.is_none() && running, "restartCount": c.restarts,
                "state": state(c.exit, running),
            })
        };
        let mut init_statuses: Vec<Value> = run
            .inits
            .iter()
            .map(|(n, image, code)| {
                json!({"name": n, "image": image, "imageID": "", "ready": *code == 0,
                       "restartCount": 0, "state": state(Some(*code), false)})
            })
            .collect();
        init_statuses.extend(run.containers.iter().filter(|c| c.sidecar).map(status_of));
        let statuses: Vec<Value> = run
            .containers
            .iter()
            .filter(|c| !c.sidecar)
            .map(status_of)
            .collect();
        let all_ready = running && run.containers.iter().all(|c| c.ready);
        let b = |v: bool| if v { "True" } else { "False" };
        let mut status = json!({
            "phase": run.phase,
            "podIP": run.ip.to_string(),
            "podIPs": [{"ip": run.ip.to_string()}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": b(run.phase != "Pending")},
                {"type": "ContainersReady", "status": b(all_ready)},
                {"type": "Ready", "status": b(all_ready)},
            ],
            "initContainerStatuses": init_statuses,
            "containerStatuses": statuses,
        });
        if let Some(m) = &run.message {
            status["message"] = json!(m.chars().take(1000).collect::<String>());
        }
        let body = json!({"status": status}).to_string();
        if body == run.last_status {
            return;
        }
        let (ns, name) = (run.ns.clone(), run.name.clone());
        match self.cfg.kubectl.patch_status(&ns, &name, &body) {
            Ok(_) => run.last_status = body,
            Err(e) => {
                let e = e.to_string();
                self.log(&format!("{k}: status: {e}"));
            }
        }
    }

    /// Stops a pod's containers (apps first, sidecars last) and removes its
    /// namespace; `confirm`: the pod is being deleted, remove it for good.
    fn stop_pod(&mut self, k: &str, confirm: bool) {
        let Some(mut run) = self.pods.remove(k) else {
            return;
        };
        for c in run.containers.iter_mut().filter(|c| !c.sidecar) {
            c.proc.kill();
        }
        for c in run.containers.iter_mut().rev().filter(|c| c.sidecar) {
            c.proc.kill();
        }
        let mut del = crate::process::command(None, None, "ip").ok();
        if let Some(c) = del.as_mut() {
            c.args(["netns", "del", &run.netns]);
            let _ = crate::process::run(c, Duration::from_secs(10));
        }
        self.free.insert(run.host);
        self.log(&format!("{k}: stopped"));
        if confirm {
            self.confirm_deletion(k);
        }
        let _ = std::fs::remove_dir_all(&run.dir);
    }
}

/// Whether `probe` (`httpGet` with `path`/`port`, or `tcpSocket`) passes
/// from inside `netns`; no probe passes.
fn probe_ok(netns: &str, probe: &Value) -> bool {
    let port = |v: &Value| v["port"].as_u64().and_then(|p| u16::try_from(p).ok());
    if let Some(port) = port(&probe["httpGet"]) {
        let path = probe["httpGet"]["path"].as_str().unwrap_or("/");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        return matches!(http_get(Some(netns), addr, path, Duration::from_secs(1)), Ok((c, _)) if (200..400).contains(&c));
    }
    if let Some(port) = port(&probe["tcpSocket"]) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        return connect_in(netns, addr, Duration::from_secs(1)).is_ok();
    }
    true
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

fn wait_exit(p: &mut Proc, timeout: Duration) -> i32 {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = p.child.try_wait() {
            return exit_code(s);
        }
        if Instant::now() > end {
            p.kill();
            return 137;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `$(VAR)` of the variables in `env` (later wins) expanded; unknown ones
/// and `$$(…)` kept, as the kubelet does.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("$(") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("$(");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                let name = &after[..j];
                match env.iter().rev().find(|(k, _)| k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push_str("$(");
                        out.push_str(name);
                        out.push(')');
                    }
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_as_the_kubelet_does() {
        let env = vec![
            ("_pod_ns".to_string(), "shop".to_string()),
            ("_pod_sa".to_string(), "web".to_string()),
        ];
        assert_eq!(expand("$(_pod_ns)/$(_pod_sa)", &env), "shop/web");
        assert_eq!(expand("x$(nope)y", &env), "x$(nope)y");
        assert_eq!(expand("$$(_pod_ns)", &env), "$(_pod_ns)");
        assert_eq!(expand("open $(", &env), "open $(");
        assert_eq!(expand("plain", &env), "plain");
    }
}
