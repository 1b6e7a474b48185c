//! The test control plane: a real Kubernetes API server on loopback, for
//! tests, benchmarks and `pimesh-lab kube up`. [`Cluster::up`] starts etcd,
//! kube-apiserver (RBAC on, ServiceAccount token issuer and signing key, a
//! CA made for it, ports chosen free) and kube-controller-manager (the
//! EndpointSlice, ServiceAccount, token, root-CA publisher, namespace and
//! garbage-collector controllers, and Deployments' and ReplicaSets'),
//! waits for `/readyz`, and writes
//! `DIR/kubeconfig` (cluster-admin). No kubelet or scheduler runs: Pods are
//! objects whose status a test sets through the status subresource.
//!
//! The binaries are built from source once per machine by
//! `lab/kube/build.sh` (Go module proxy: `k8s.io/kubernetes` at the k3s
//! release line, etcd at the version Kubernetes pins) into
//! `target/kube/<version>/bin`; [`KubeBins::locate`] finds or builds them.
//!
//! Children die with the process that started them (`PR_SET_PDEATHSIG`),
//! so a killed `up` leaves nothing running; dropping the [`Cluster`] kills
//! them and removes its directory.
//!
//! - `pki`: the CA, certificates, signing key and kubeconfigs.

pub mod node;
pub mod pki;

use crate::interrupt;
use crate::process::{self, command, run, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The wrapper module's go.mod: the versions built (and the bin dir's name).
const GO_MOD: &str = include_str!("../kube/go.mod");
/// The build script, as committed (run from the source tree).
const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kube/build.sh");
/// The Service ClusterIP range (k3s's default, `10.43.0.0/16`).
pub const SERVICE_CIDR: &str = "10.43.0.0/16";
/// The ServiceAccount token issuer (`iss`) and default audience, as a
/// kubeadm or k3s cluster's.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// kube-controller-manager's controllers: what discovery and identity use
/// (EndpointSlices, ServiceAccounts and their tokens, the root CA
/// ConfigMap), Deployments → ReplicaSets → Pods (the owner chain behind
/// the `deployment` label), and what keeps namespaces and owned objects
/// tidy. No scheduler runs: Pods stay unbound until a test binds them.
pub const CONTROLLERS: &str = "endpointslice-controller,serviceaccount-controller,\
serviceaccount-token-controller,root-ca-certificate-publisher-controller,\
deployment-controller,replicaset-controller,\
namespace-controller,garbage-collector-controller,job-controller";
/// The tests' shop (Linkerd's docs' shape): namespace `shop`, Node
/// `lab-node`, ServiceAccounts `web` and `client`, Service `web` (port 80
/// `http` → 8080, selector `app=web`) and Deployment `web` (3 replicas,
/// ServiceAccount `web`, meshed: label `pimesh.io/control-plane-ns`). Its
/// pods start with [`Cluster::run_pod`].
pub const SHOP_WEB_YAML: &str = "\
apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
apiVersion: v1\nkind: Node\nmetadata:\n  name: lab-node\n---\n\
apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n  namespace: shop\n---\n\
apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: client\n  namespace: shop\n---\n\
apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n\
spec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n\
spec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: web\n  template:\n\
\x20   metadata:\n      labels:\n        app: web\n        pimesh.io/control-plane-ns: pimesh\n\
\x20   spec:\n      serviceAccountName: web\n      containers:\n      - name: app\n        image: app\n\
\x20       ports:\n        - containerPort: 8080\n";

/// Time for the API server to answer `/readyz` (bootstrap of RBAC roles
/// and priority levels takes seconds; more on a loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Starting or using the test control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary is missing and could not be built.
    #[error("the test control plane's binaries are not in {dir} and `{script}` failed")]
    Build {
        /// Where they are expected.
        dir: PathBuf,
        /// The build script.
        script: String,
        /// Why it failed.
        #[source]
        source: process::Error,
    },
    /// Another `up` runs in the directory.
    #[error(
        "a cluster runs in {dir} (pid {pid}); stop it with `pimesh-lab kube down --dir {dir}`"
    )]
    Busy {
        /// The directory.
        dir: String,
        /// The running `up`.
        pid: i32,
    },
    /// The directory exists and holds something else: never removed.
    #[error("{} exists and is not a pimesh-lab kube directory (it has no {MARKER} file); give a new or empty --dir", .0.display())]
    NotOurs(PathBuf),
    /// Certificates or kubeconfigs.
    #[error("certificates")]
    Pki(#[from] pki::Error),
    /// A file or directory cannot be written.
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    /// A child could not be started or a command failed.
    #[error("process")]
    Process(#[from] process::Error),
    /// A component did not become ready; `log` is the end of its output.
    #[error("{what}:\n{log}")]
    NotReady {
        /// What did not.
        what: String,
        /// Its log's last lines.
        log: String,
    },
    /// SIGINT/SIGTERM/SIGHUP arrived.
    #[error("interrupted")]
    Interrupted(#[from] interrupt::Interrupted),
}

/// The four binaries.
#[derive(Debug, Clone)]
pub struct KubeBins {
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kube-apiserver`.
    pub apiserver: PathBuf,
    /// `kube-controller-manager`.
    pub controller_manager: PathBuf,
    /// `kubectl`.
    pub kubectl: PathBuf,
}

/// kubectl with a kubeconfig: what the node agent and the CLI's
/// `kube node` talk to an API server with.
#[derive(Debug, Clone)]
pub struct Kubectl {
    /// The kubectl binary.
    pub bin: PathBuf,
    /// The kubeconfig it uses.
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs `kubectl ARGS…` (30 s at most); its stdout.
    ///
    /// # Errors
    ///
    /// [`process::Error::Failed`] with its stderr when it fails.
    pub fn run(&self, args: &[&str]) -> Result<String, process::Error> {
        let mut c = Command::new(&self.bin);
        c.env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::null())
            .args(args);
        let out = run(&mut c, Duration::from_secs(30))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn with_file(&self, dir: &Path, verb: &[&str], yaml: &str) -> Result<String, process::Error> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let f = dir.join(format!(
            "kubectl-{}-{}.yaml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&f, yaml)
            .map_err(|e| process::Error::Spawn(format!("kubectl (writing {})", f.display()), e))?;
        let mut args = verb.to_vec();
        let path = f.display().to_string();
        args.extend(["-f", &path]);
        let out = self.run(&args);
        let _ = std::fs::remove_file(&f);
        out
    }

    /// `kubectl apply --server-side --force-conflicts -f` of `yaml`
    /// (written to a file in `dir` first).
    ///
    /// # Errors
    ///
    /// As [`Kubectl::run`].
    pub fn apply(&self, dir: &Path, yaml: &str) -> Result<String, process::Error> {
        self.with_file(dir, &["apply", "--server-side", "--force-conflicts"], yaml)
    }

    /// `kubectl create -f` of `yaml`.
    ///
    /// # Errors
    ///
    /// As [`Kubectl::run`].
    pub fn create(&self, dir: &Path, yaml: &str) -> Result<String, process::Error> {
        self.with_file(dir, &["create"], yaml)
    }

    /// Binds pod `ns/name` to Node `node` (a `Binding`, the scheduler's
    /// part), the file written in `dir`.
    ///
    /// # Errors
    ///
    /// As [`Kubectl::run`] (no such pod, already bound, ...).
    pub fn bind(&self, dir: &Path, ns: &str, name: &str, node: &str) -> Result<(), process::Error> {
        let binding = format!(
            "apiVersion: v1\nkind: Binding\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             target:\n  apiVersion: v1\n  kind: Node\n  name: {node}\n"
        );
        self.create(dir, &binding).map(drop)
    }

    /// Merges `body` (`{"status": …}`, JSON) into pod `ns/name`'s status
    /// subresource (the kubelet's part).
    ///
    /// # Errors
    ///
    /// As [`Kubectl::run`].
    pub fn patch_status(&self, ns: &str, name: &str, body: &str) -> Result<(), process::Error> {
        self.run(&[
            "patch",
            "pod",
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            body,
        ])
        .map(drop)
    }

    /// Deletes pod `ns/name` at once (`--grace-period=0 --force`: no
    /// kubelet confirms a graceful deletion), waiting for it when `wait`.
    ///
    /// # Errors
    ///
    /// As [`Kubectl::run`].
    pub fn force_delete_pod(&self, ns: &str, name: &str, wait: bool) -> Result<(), process::Error> {
        let wait = if wait { "--wait=true" } else { "--wait=false" };
        self.run(&[
            "delete",
            "pod",
            name,
            "-n",
            ns,
            "--grace-period=0",
            "--force",
            wait,
        ])
        .map(drop)
    }
}

/// `(kubernetes, etcd)` versions the lab builds (from lab/kube/go.mod).
pub fn versions() -> (&'static str, &'static str) {
    let find = |module: &str| {
        GO_MOD
            .lines()
            .map(str::split_whitespace)
            .find_map(|mut w| (w.next() == Some(module)).then(|| w.next()).flatten())
            .unwrap_or("unknown")
    };
    (find("k8s.io/kubernetes"), find("go.etcd.io/etcd/server/v3"))
}

impl KubeBins {
    /// The binaries in `PIMESH_KUBE_BIN_DIR` when set, else in the target
    /// directory's `kube/<kubernetes>-etcd-<etcd>/bin` (`CARGO_TARGET_DIR`,
    /// else the directory above the running executable's `debug/` or
    /// `release/`), building them there with `lab/kube/build.sh` when
    /// missing (~15 min the first time on 2 cores; progress on stderr).
    ///
    /// # Errors
    ///
    /// [`Error::Build`] when they are missing and cannot be built.
    pub fn locate() -> Result<KubeBins, Error> {
        let dir = match std::env::var_os("PIMESH_KUBE_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let (k8s, etcd) = versions();
                target_dir().join(format!("kube/{k8s}-etcd-{etcd}/bin"))
            }
        };
        let bins = KubeBins {
            etcd: dir.join("etcd"),
            apiserver: dir.join("kube-apiserver"),
            controller_manager: dir.join("kube-controller-manager"),
            kubectl: dir.join("kubectl"),
        };
        let present = |b: &KubeBins| {
            [&b.etcd, &b.apiserver, &b.controller_manager, &b.kubectl]
                .iter()
                .all(|p| p.is_file())
        };
        if present(&bins) {
            return Ok(bins);
        }
        let mut c = Command::new("bash");
        c.arg(BUILD_SCRIPT).env("CARGO_TARGET_DIR", target_dir());
        let built = Path::new(BUILD_SCRIPT)
            .is_file()
            .then(|| {
                c.stderr(std::process::Stdio::inherit())
                    .stdout(std::process::Stdio::null())
                    .status()
            })
            .and_then(Result::ok)
            .is_some_and(|s| s.success());
        if built && present(&bins) {
            Ok(bins)
        } else {
            Err(Error::Build {
                dir,
                script: format!("bash {BUILD_SCRIPT}"),
                source: process::Error::Failed {
                    cmd: BUILD_SCRIPT.into(),
                    status: if built { "no binaries" } else { "failed" }.into(),
                    stderr: "see its output above".into(),
                },
            })
        }
    }
}

/// The cargo target directory this binary (or test) was built in.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        let d = PathBuf::from(d);
        return if d.is_absolute() {
            d
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(d)
        };
    }
    // target/{debug,release}/pimesh-lab or target/debug/deps/<test>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|a| a.join("debug").is_dir() || a.join("release").is_dir())
                .filter(|a| a.file_name().is_some_and(|n| n != "deps"))
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// How a cluster runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Its directory (data, certificates, kubeconfig, logs); `None`: a new
    /// one under the system's temporary directory.
    pub dir: Option<PathBuf>,
    /// Keep the directory when the cluster is dropped.
    pub keep_dir: bool,
    /// Print each step on stdout (`pimesh-lab: …`).
    pub progress: bool,
}

/// A running test control plane. Dropping it stops everything and removes
/// its directory (unless kept).
#[derive(Debug)]
pub struct Cluster {
    /// Where its files are: `kubeconfig`, `pki/`, `etcd/`, `*.log`.
    pub dir: PathBuf,
    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub server: String,
    /// A cluster-admin kubeconfig (client certificate, `O=system:masters`).
    pub kubeconfig: PathBuf,
    /// The certificates (the CA verifies the API server).
    pub pki: pki::Pki,
    /// The binaries.
    pub bins: KubeBins,
    /// etcd, kube-apiserver, kube-controller-manager (stopped in reverse).
    procs: Vec<Proc>,
    /// kube-apiserver's flags, for [`Cluster::start_apiserver`] after a stop.
    api_args: Vec<String>,
    keep_dir: bool,
}

impl Cluster {
    /// Starts etcd, kube-apiserver and kube-controller-manager on free
    /// loopback ports and waits until the API server is ready and the
    /// `default` ServiceAccount exists (the controller manager works).
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] when another `up` runs in `opts.dir`,
    /// [`Error::NotOurs`] when it holds something else (left untouched);
    /// [`Error::Build`] when the binaries are missing and cannot be built;
    /// [`Error::NotReady`] with the component's log when one does not start.
    pub fn up(opts: &Options) -> Result<Cluster, Error> {
        let bins = KubeBins::locate()?;
        let dir = match &opts.dir {
            Some(d) => d.clone(),
            None => {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                std::env::temp_dir().join(format!(
                    "pimesh-kube-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ))
            }
        };
        claim_dir(&dir)?;
        let mut cluster = Cluster {
            kubeconfig: dir.join("kubeconfig"),
            pki: pki::write(&dir.join("pki"))?,
            server: String::new(),
            dir,
            bins,
            procs: Vec::new(),
            api_args: Vec::new(),
            keep_dir: opts.keep_dir,
        };
        let say = |m: &str| {
            if opts.progress {
                println!("pimesh-lab: {m}");
            }
        };
        // Ports are found free and then bound by etcd and kube-apiserver:
        // a program beside us can take one in between. Then again, on
        // fresh ports (three tries).
        let mut tries = 1;
        loop {
            match cluster.start_etcd_and_apiserver(&say) {
                Ok(()) => break,
                Err(Error::NotReady { log, .. })
                    if tries < 3 && log.contains("address already in use") =>
                {
                    say("a port was taken meanwhile; again on fresh ports");
                    tries += 1;
                    while let Some(mut p) = cluster.procs.pop() {
                        p.kill();
                    }
                    let etcd_data = cluster.dir.join("etcd");
                    let _ = std::fs::remove_dir_all(etcd_data);
                }
                Err(e) => return Err(e),
            }
        }
        let d = cluster.dir.clone();
        let arg = |k: &str, v: &dyn std::fmt::Display| format!("--{k}={v}");
        let p = |f: &Path| f.display().to_string();
        let pki = cluster.pki.clone();

        say("kube-controller-manager");
        let kcm_config = d.join("controller-manager.kubeconfig");
        pki::write_kubeconfig(
            &kcm_config,
            &cluster.server,
            &pki.ca_cert,
            &pki::User::Cert {
                cert: pki.kcm_cert.clone(),
                key: pki.kcm_key.clone(),
            },
        )?;
        let mut kcm = command(None, None, &cluster.bins.controller_manager)?;
        kcm.args([
            arg("kubeconfig", &p(&kcm_config)),
            arg("controllers", &CONTROLLERS),
            arg("service-account-private-key-file", &p(&pki.sa_key)),
            arg("root-ca-file", &p(&pki.ca_cert)),
            // Each controller acts as its own ServiceAccount with its
            // bootstrap role, as kubeadm and k3s clusters run it.
            arg("use-service-account-credentials", &"true"),
            arg("leader-elect", &"false"),
            arg("secure-port", &0),
            arg("cluster-name", &"pimesh-lab"),
        ]);
        cluster.spawn("kube-controller-manager", kcm)?;
        cluster.wait_for(
            "the default ServiceAccount (kube-controller-manager's serviceaccount controller)",
            Duration::from_secs(60),
            |c| {
                c.kubectl(&["get", "serviceaccount", "default", "-n", "default"])
                    .is_ok()
            },
        )?;
        say(&format!("API server ready at {}", cluster.server));
        Ok(cluster)
    }

    /// Starts etcd and kube-apiserver on free loopback ports, writes the
    /// admin kubeconfig and waits for `/readyz`.
    fn start_etcd_and_apiserver(&mut self, say: &dyn Fn(&str)) -> Result<(), Error> {
        let etcd_port = crate::loopback::free_port().map_err(port_error)?.port();
        let peer_port = crate::loopback::free_port().map_err(port_error)?.port();
        let api_port = crate::loopback::free_port().map_err(port_error)?.port();
        let d = self.dir.clone();
        let arg = |k: &str, v: &dyn std::fmt::Display| format!("--{k}={v}");
        let p = |f: &Path| f.display().to_string();

        say(&format!("etcd on 127.0.0.1:{etcd_port}"));
        let mut etcd = command(None, None, &self.bins.etcd)?;
        let client = format!("http://127.0.0.1:{etcd_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        etcd.args([
            arg("name", &"pimesh-lab"),
            arg("data-dir", &p(&d.join("etcd"))),
            arg("listen-client-urls", &client),
            arg("advertise-client-urls", &client),
            arg("listen-peer-urls", &peer),
            arg("initial-advertise-peer-urls", &peer),
            arg("initial-cluster", &format!("pimesh-lab={peer}")),
            // A throwaway store: no fsync (tests are I/O-bound otherwise).
            "--unsafe-no-fsync".into(),
            arg("log-level", &"warn"),
        ]);
        self.spawn("etcd", etcd)?;

        say(&format!("kube-apiserver on 127.0.0.1:{api_port}"));
        let pki = self.pki.clone();
        let api_args = vec![
            arg("etcd-servers", &client),
            arg("bind-address", &"127.0.0.1"),
            arg("advertise-address", &"127.0.0.1"),
            arg("secure-port", &api_port),
            arg("tls-cert-file", &p(&pki.server_cert)),
            arg("tls-private-key-file", &p(&pki.server_key)),
            arg("client-ca-file", &p(&pki.ca_cert)),
            arg("authorization-mode", &"RBAC"),
            arg("service-account-issuer", &SERVICE_ACCOUNT_ISSUER),
            arg("service-account-key-file", &p(&pki.sa_pub)),
            arg("service-account-signing-key-file", &p(&pki.sa_key)),
            arg("service-cluster-ip-range", &SERVICE_CIDR),
            // No node and no loopback Endpoints for the `kubernetes` Service.
            arg("endpoint-reconciler-type", &"none"),
            arg("allow-privileged", &"true"),
            arg("profiling", &"false"),
            arg("cert-dir", &p(&d.join("apiserver-certs"))),
        ];
        self.api_args = api_args;
        self.server = String::new();
        self.start_apiserver()?;
        self.server = format!("https://127.0.0.1:{api_port}");
        pki::write_kubeconfig(
            &self.kubeconfig,
            &self.server,
            &pki.ca_cert,
            &pki::User::Cert {
                cert: pki.admin_cert.clone(),
                key: pki.admin_key.clone(),
            },
        )?;
        self.wait_ready()
    }

    /// A `kubectl` command speaking as cluster-admin to this cluster.
    pub fn kubectl_command(&self) -> Command {
        let mut c = Command::new(&self.bins.kubectl);
        c.env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::null());
        c
    }

    /// kubectl with the cluster-admin kubeconfig.
    pub fn kubectl_handle(&self) -> Kubectl {
        Kubectl {
            bin: self.bins.kubectl.clone(),
            kubeconfig: self.kubeconfig.clone(),
        }
    }

    /// Runs `kubectl ARGS…` (30 s at most); its stdout.
    ///
    /// # Errors
    ///
    /// [`process::Error::Failed`] with its stderr when it fails.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, process::Error> {
        let mut c = self.kubectl_command();
        c.args(args);
        let out = run(&mut c, Duration::from_secs(30))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f` of `yaml` (written to a file in the cluster's
    /// directory first); kubectl's stdout.
    ///
    /// # Errors
    ///
    /// As [`Cluster::kubectl`]; the file cannot be written.
    pub fn apply(&self, yaml: &str) -> Result<String, Error> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let f = self
            .dir
            .join(format!("apply-{}.yaml", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&f, yaml).map_err(|e| Error::Write(f.clone(), e))?;
        let out = self.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &f.display().to_string(),
        ]);
        let _ = std::fs::remove_file(&f);
        Ok(out?)
    }

    /// A token of ServiceAccount `ns/name` from the TokenRequest API
    /// (`kubectl create token`), for `audience` (`None`: the API server's),
    /// valid `duration` (≥ 10 min, the API server's minimum).
    ///
    /// # Errors
    ///
    /// As [`Cluster::kubectl`] (no such ServiceAccount, ...).
    pub fn create_token(
        &self,
        ns: &str,
        name: &str,
        audience: Option<&str>,
        duration: Duration,
    ) -> Result<String, process::Error> {
        let d = format!("{}s", duration.as_secs());
        let mut args = vec!["create", "token", name, "-n", ns, "--duration", &d];
        if let Some(a) = audience {
            args.extend(["--audience", a]);
        }
        Ok(self.kubectl(&args)?.trim().to_string())
    }

    /// Writes a kubeconfig at `path` that speaks to this cluster with
    /// `token` (a ServiceAccount's: what an in-cluster controller has).
    ///
    /// # Errors
    ///
    /// [`Error::Pki`] when it cannot be written.
    pub fn token_kubeconfig(&self, path: &Path, token: &str) -> Result<(), Error> {
        Ok(pki::write_kubeconfig(
            path,
            &self.server,
            &self.pki.ca_cert,
            &pki::User::Token(token.to_string()),
        )?)
    }

    /// Binds pod `ns/name` to Node `node` (the `pods/binding` subresource)
    /// and reports it `Running` and `Ready` at `ip` (the status
    /// subresource): what the scheduler and a kubelet would do, so that
    /// kube-controller-manager puts it in its Services' EndpointSlices.
    /// The Node must exist.
    ///
    /// # Errors
    ///
    /// As [`Cluster::kubectl`] (no such pod, already bound, ...).
    pub fn run_pod(&self, ns: &str, name: &str, node: &str, ip: &str) -> Result<(), Error> {
        let kubectl = self.kubectl_handle();
        kubectl.bind(&self.dir, ns, name, node)?;
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
        );
        kubectl.patch_status(ns, name, &status)?;
        Ok(())
    }

    /// Names of the pods of `ns` matching label `selector` that have no
    /// IP yet (not started by [`Cluster::run_pod`]).
    ///
    /// # Errors
    ///
    /// As [`Cluster::kubectl`].
    pub fn unstarted_pods(&self, ns: &str, selector: &str) -> Result<Vec<String>, Error> {
        let out = self.kubectl(&[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{\"\\n\"}{end}",
        ])?;
        Ok(out
            .lines()
            .filter(|l| l.split_whitespace().count() == 1)
            .map(|l| l.trim().to_string())
            .collect())
    }

    /// Deletes pod `ns/name` at once (`--grace-period=0 --force`: no
    /// kubelet confirms a graceful deletion here).
    ///
    /// # Errors
    ///
    /// As [`Cluster::kubectl`].
    pub fn delete_pod(&self, ns: &str, name: &str) -> Result<(), Error> {
        Ok(self.kubectl_handle().force_delete_pod(ns, name, true)?)
    }

    /// `Err` naming the first component that exited, with its log.
    ///
    /// # Errors
    ///
    /// A message naming the first component that exited, with the end of its
    /// log.
    pub fn check(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if !p.running() {
                return Err(format!("{} exited:\n{}", p.name, tail(&p.log_text(), 30)));
            }
        }
        Ok(())
    }

    /// Polls `ready` every 250 ms until it holds or `timeout` passes
    /// (failing early when a component exits).
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] when a component exits or `ready` does not hold
    /// within `timeout`; [`Error::Interrupted`] on a stop request.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Cluster) -> bool,
    ) -> Result<(), Error> {
        let end = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Err(log) = self.check() {
                return Err(Error::NotReady {
                    what: format!("waiting for {what}"),
                    log,
                });
            }
            if Instant::now() > end {
                let logs: Vec<String> = self
                    .procs
                    .iter()
                    .map(|p| format!("--- {}:\n{}", p.name, tail(&p.log_text(), 15)))
                    .collect();
                return Err(Error::NotReady {
                    what: format!("{what} not there within {timeout:?}"),
                    log: logs.join("\n"),
                });
            }
            interrupt::sleep(Duration::from_millis(250))?;
        }
    }

    /// Stops kube-apiserver (SIGKILL; etcd and the controller manager stay):
    /// an API server outage, for clients' retry and readiness tests.
    pub fn stop_apiserver(&mut self) {
        self.procs.retain_mut(|p| {
            if p.name == "kube-apiserver" {
                p.kill();
                false
            } else {
                true
            }
        });
    }

    /// Starts kube-apiserver (again, on the same port, certificates and
    /// data) and waits until it is ready.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] with its log.
    pub fn start_apiserver(&mut self) -> Result<(), Error> {
        let mut api = command(None, None, &self.bins.apiserver)?;
        api.args(&self.api_args);
        self.spawn("kube-apiserver", api)?;
        if self.server.is_empty() {
            return Ok(());
        }
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        self.wait_for("kube-apiserver /readyz", READY_TIMEOUT, |c| {
            c.kubectl(&["get", "--raw", "/readyz"])
                .is_ok_and(|o| o.trim() == "ok")
        })
    }

    fn spawn(&mut self, name: &str, c: Command) -> Result<(), Error> {
        let log = self.dir.join(format!("{name}.log"));
        self.procs.push(Proc::spawn(name, c, &log)?);
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.kill();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            let _ = std::fs::remove_file(self.dir.join(PID_FILE));
        }
    }
}

/// The `up` process's pid, in its directory (for `down`).
pub const PID_FILE: &str = "pid";
/// Marks a directory as a cluster's: only such a directory (or an empty
/// one) is ever removed, so a mistyped `--dir $HOME` deletes nothing.
pub const MARKER: &str = ".pimesh-lab-kube";

/// Whether `dir` may be removed: missing, empty, or marked as a cluster's.
fn ours(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Err(_) => !dir.exists(),
        Ok(mut entries) => entries.next().is_none() || dir.join(MARKER).is_file(),
    }
}

/// Makes `dir` this process's: refused while another live `up` holds it
/// or when it holds something else; what a dead `up` left is removed.
fn claim_dir(dir: &Path) -> Result<(), Error> {
    if !ours(dir) {
        return Err(Error::NotOurs(dir.into()));
    }
    if let Some(pid) = running_pid(dir) {
        if pid != std::process::id() as i32 {
            return Err(Error::Busy {
                dir: dir.display().to_string(),
                pid,
            });
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| Error::Write(dir.into(), e))?;
    let m = dir.join(MARKER);
    std::fs::write(&m, "").map_err(|e| Error::Write(m, e))?;
    let f = dir.join(PID_FILE);
    std::fs::write(&f, std::process::id().to_string()).map_err(|e| Error::Write(f, e))
}

/// The pid in `dir/pid` if that process is alive.
pub fn running_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    (pid > 0 && unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

/// Stops the `up` running in `dir` (SIGTERM, then SIGKILL after 15 s) and
/// removes the directory; whether one was running.
///
/// # Errors
///
/// [`Error::NotOurs`] (nothing touched) when `dir` holds something
/// else than a cluster; [`Error::Write`] when it cannot be removed.
pub fn down(dir: &Path) -> Result<bool, Error> {
    if !ours(dir) {
        return Err(Error::NotOurs(dir.into()));
    }
    let pid = running_pid(dir);
    if let Some(pid) = pid {
        // SAFETY: signalling the process recorded as this directory's owner.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(15);
        while running_pid(dir) == Some(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        if running_pid(dir) == Some(pid) {
            // SAFETY: as above; its children die with it (PDEATHSIG).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(pid.is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(pid.is_some()),
        Err(e) => Err(Error::Write(dir.into(), e)),
    }
}

fn port_error(e: crate::Error) -> Error {
    Error::NotReady {
        what: "a free loopback port".into(),
        log: e.to_string(),
    }
}

/// The last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
