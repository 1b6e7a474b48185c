//! Bringing a lab up and down. [`Lab::up`] removes stale labs, takes a lock
//! and a free /24, creates the bridge and one namespace per pod (plus one
//! for the controller), starts `pimesh controller --standalone`, creates a
//! join token per pod, runs `pimesh-proxy init` in each pod, starts each
//! pod's proxy under its own uid and waits until it holds a certificate,
//! then starts the apps. Dropping the [`Lab`] (normal end, panic in a test,
//! error half-way) removes everything; after a SIGKILL the children die
//! with the lab and the next start removes the rest.

use crate::interrupt::{self, Interrupted};
use crate::net::{self, Lock, Names, Subnet};
use crate::process::{self, command, connect_in, http_get, run, Proc};
use crate::spec::{self, PodSpec};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The controller's proxy-facing port (DESIGN.md).
pub const CONTROLLER_PROXY_PORT: u16 = 8086;
/// The controller's operator port (DESIGN.md).
pub const CONTROLLER_ADMIN_PORT: u16 = 8085;
/// The proxy's ports inside a pod (DESIGN.md): inbound, outbound, admin.
pub const PROXY_PORTS: (u16, u16, u16) = (4143, 4140, 4191);
/// The proxy's uid in a pod (nobody), distinct from the app's.
pub const DEFAULT_PROXY_UID: u32 = 65534;
/// Time for a proxy to get its certificate, or an app to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Environment variables an app must not inherit: apps carry no proxy
/// settings in the lab (redirection does the work).
pub const PROXY_ENV: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "grpc_proxy",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
];

/// Bringing the lab up failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lab needs root (namespaces, iptables, uids).
    #[error("the mesh lab needs root (network namespaces, iptables); without root use loopback mode")]
    NotRoot,
    /// `pimesh-proxy` or `pimesh` was not found.
    #[error("{0} not found (build it: cargo build -p pimesh-proxy -p pimesh-controller, or pass --bin-dir)")]
    Binary(String),
    /// A pod spec is unusable.
    #[error(transparent)]
    Spec(#[from] spec::Error),
    /// The network could not be set up.
    #[error("network")]
    Net(#[from] net::Error),
    /// A command or child failed.
    #[error("process")]
    Process(#[from] process::Error),
    /// A child did not become ready; `log` is its output.
    #[error("{what}:\n{log}")]
    NotReady { what: String, log: String },
    /// A file of the lab's work directory cannot be written.
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    /// SIGINT/SIGTERM/SIGHUP arrived.
    #[error("interrupted")]
    Interrupted(#[from] Interrupted),
}

/// The binaries the lab runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `pimesh-proxy`.
    pub proxy: PathBuf,
    /// `pimesh` (controller and CLI).
    pub pimesh: PathBuf,
}

impl Bins {
    /// Both binaries in `dir`, or (without `dir`) next to the running
    /// executable, in its parent directory (a test's `deps/`) or on PATH.
    pub fn locate(dir: Option<&Path>) -> Result<Bins, Error> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        match dir {
            Some(d) => dirs.push(d.to_path_buf()),
            None => {
                if let Ok(exe) = std::env::current_exe() {
                    dirs.extend(exe.parent().map(Path::to_path_buf));
                    dirs.extend(exe.parent().and_then(Path::parent).map(Path::to_path_buf));
                }
                dirs.extend(std::env::split_paths(
                    &std::env::var_os("PATH").unwrap_or_default(),
                ));
            }
        }
        let find = |name: &str| {
            dirs.iter()
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| Error::Binary(name.to_string()))
        };
        Ok(Bins {
            proxy: find("pimesh-proxy")?,
            pimesh: find("pimesh")?,
        })
    }
}

/// How the lab runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The lab id (`pml-<id>-…`); random when `None`.
    pub id: Option<String>,
    /// The proxies' uid (excluded from redirection).
    pub proxy_uid: u32,
    /// The apps' uid; `None`: root.
    pub app_uid: Option<u32>,
    /// `pimesh-proxy init --iptables-mode`: `auto`, `legacy` or `nft`.
    pub iptables_mode: String,
    /// The proxies' `PIMESH_PROXY_LOG`.
    pub proxy_log: String,
    /// Keep the work directory (logs) after teardown.
    pub keep_dir: bool,
    /// Print each step on stdout (`pimesh-lab: …`).
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            id: None,
            proxy_uid: DEFAULT_PROXY_UID,
            app_uid: None,
            iptables_mode: "auto".into(),
            proxy_log: "warn,pimesh=info".into(),
            keep_dir: false,
            progress: false,
        }
    }
}

/// A pod of a running lab.
#[derive(Debug, Clone)]
pub struct Pod {
    /// What it runs.
    pub spec: PodSpec,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
    /// Its network namespace (`pml-<id>-<name>`).
    pub netns: String,
    /// Its directory in the work dir (the app's default cwd).
    pub dir: PathBuf,
}

impl Pod {
    /// `ip:port` of the app's first port.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.spec
            .ports
            .first()
            .map(|p| SocketAddr::from((self.ip, *p)))
    }
}

/// A running lab; dropping it tears everything down.
#[derive(Debug)]
pub struct Lab {
    /// The names of everything it created.
    pub names: Names,
    /// Its /24.
    pub subnet: Subnet,
    /// The work directory: logs, tokens, trust anchors, controller data.
    pub dir: PathBuf,
    /// The pods, in spec order.
    pub pods: Vec<Pod>,
    /// The controller's address on the bridge.
    pub controller_ip: Ipv4Addr,
    bins: Bins,
    opts: Options,
    procs: Vec<Proc>,
    lock: Option<Lock>,
}

impl Lab {
    /// Brings a lab with `pods` up (see the module doc); on any error or
    /// interruption, what was created is removed before returning.
    pub fn up(pods: &[PodSpec], bins: &Bins, opts: &Options) -> Result<Lab, Error> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::NotRoot);
        }
        for p in pods {
            spec::check_name(&p.name).map_err(|reason| spec::Error {
                value: p.name.clone(),
                reason,
            })?;
        }
        for id in net::remove_stale() {
            if opts.progress {
                println!("pimesh-lab: removed stale lab pml-{id}");
            }
        }
        let id = opts.id.clone().unwrap_or_else(net::random_id);
        if !net::valid_id(&id) {
            return Err(spec::Error {
                value: id,
                reason: "a lab id is 1-5 characters of a-z and 0-9".into(),
            }
            .into());
        }
        let names = Names { id };
        let subnet = net::choose_subnet()?;
        let lock = Lock::take(&names, subnet)?;
        let dir = std::env::temp_dir().join(names.prefix().trim_end_matches('-'));
        let _ = std::fs::remove_dir_all(&dir);
        mkdir(&dir)?;
        let pods = pods
            .iter()
            .enumerate()
            .map(|(i, spec)| Pod {
                spec: spec.clone(),
                ip: subnet.host(2 + i as u8),
                netns: names.netns(&spec.name),
                dir: dir.join(&spec.name),
            })
            .collect();
        let mut lab = Lab {
            controller_ip: subnet.host(1),
            names,
            subnet,
            dir,
            pods,
            bins: bins.clone(),
            opts: opts.clone(),
            procs: Vec::new(),
            lock: Some(lock),
        };
        // From here on, dropping `lab` (on `?`) tears down what exists.
        lab.build()?;
        Ok(lab)
    }

    fn step(&self, msg: &str) {
        if self.opts.progress {
            println!("pimesh-lab: {msg}");
        }
    }

    fn build(&mut self) -> Result<(), Error> {
        if self.pods.len() > 200 {
            return Err(Error::NotReady {
                what: "too many pods".into(),
                log: "at most 200 pods per lab".into(),
            });
        }
        net::add_bridge(&self.names)?;
        let ctl_ns = self.names.netns("ctl");
        net::add_node(&self.names, &ctl_ns, &self.names.veth(0), self.controller_ip)?;
        for (i, pod) in self.pods.iter().enumerate() {
            interrupt::check()?;
            net::add_node(&self.names, &pod.netns, &self.names.veth(i + 1), pod.ip)?;
            mkdir(&pod.dir)?;
        }
        self.step(&format!(
            "network up: bridge {}, {} pods in {} (controller {})",
            self.names.bridge(),
            self.pods.len(),
            self.subnet,
            self.controller_ip
        ));
        self.start_controller()?;
        let anchors = self.dir.join("trust-anchors.pem");
        let pem = self.cli(&["identity", "trust-anchors"])?;
        write_file(&anchors, &pem, 0o644, None)?;
        for i in 0..self.pods.len() {
            interrupt::check()?;
            self.init_pod(i)?;
        }
        self.step("pimesh-proxy init done in every pod");
        for i in 0..self.pods.len() {
            interrupt::check()?;
            self.start_proxy(i, &anchors)?;
        }
        for i in 0..self.pods.len() {
            self.wait_proxy_ready(i)?;
        }
        self.step("every proxy holds its certificate (mTLS ready)");
        for i in 0..self.pods.len() {
            interrupt::check()?;
            self.start_app(i)?;
        }
        for i in 0..self.pods.len() {
            self.wait_app_ready(i)?;
        }
        self.step(&format!("lab pml-{} is up", self.names.id));
        Ok(())
    }

    fn start_controller(&mut self) -> Result<(), Error> {
        let ns = self.names.netns("ctl");
        let mut c = command(Some(&ns), None, &self.bins.pimesh)?;
        c.args(["controller", "--standalone", "--data-dir"])
            .arg(self.dir.join("controller-data"))
            .arg("--proxy-addr")
            .arg(format!("{}:{CONTROLLER_PROXY_PORT}", self.controller_ip))
            .arg("--admin-addr")
            .arg(format!("0.0.0.0:{CONTROLLER_ADMIN_PORT}"))
            .env("PIMESH_LAB", &self.names.id);
        let mut p = Proc::spawn("controller", c, &self.dir.join("controller.log"))?;
        let ready = p.wait_for_log("pimesh controller listening", READY_TIMEOUT);
        self.procs.push(p);
        ready.map_err(|log| self.not_ready("the controller did not start", log))?;
        self.step(&format!(
            "controller up in {ns} (proxies: {}:{CONTROLLER_PROXY_PORT}, operator: :{CONTROLLER_ADMIN_PORT})",
            self.controller_ip
        ));
        Ok(())
    }

    fn not_ready(&self, what: &str, log: String) -> Error {
        if interrupt::requested() {
            return Error::Interrupted(Interrupted);
        }
        Error::NotReady {
            what: what.to_string(),
            log,
        }
    }

    /// Runs `pimesh ARGS --controller http://127.0.0.1:8085` in the
    /// controller's namespace and returns its stdout. The place where
    /// `pimesh stat` / `pimesh edges` run once telemetry lands.
    pub fn cli(&self, args: &[&str]) -> Result<String, Error> {
        let mut c = command(Some(&self.names.netns("ctl")), None, &self.bins.pimesh)?;
        c.args(args)
            .arg("--controller")
            .arg(format!("http://127.0.0.1:{CONTROLLER_ADMIN_PORT}"))
            .env_remove("PIMESH_CONTROLLER");
        let out = run(&mut c, Duration::from_secs(30))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn init_pod(&mut self, i: usize) -> Result<(), Error> {
        let pod = &self.pods[i];
        let mut c = command(Some(&pod.netns), None, &self.bins.proxy)?;
        c.args(["init", "--proxy-uid", &self.opts.proxy_uid.to_string()])
            .args(["--iptables-mode", &self.opts.iptables_mode]);
        run(&mut c, Duration::from_secs(30))?;
        Ok(())
    }

    /// `PIMESH_PROXY_MESH_DESTINATIONS` for pod `i`: every other pod's
    /// ports with that pod's identity. (Until discovery lands on main; then
    /// the registry the proxies fill through `PIMESH_PROXY_SERVICE` answers.)
    fn mesh_destinations(&self, i: usize) -> String {
        let mut v = Vec::new();
        for (j, other) in self.pods.iter().enumerate() {
            if j == i {
                continue;
            }
            for port in &other.spec.ports {
                v.push(format!("{}:{port}={}", other.ip, other.spec.identity));
            }
        }
        v.join(",")
    }

    fn start_proxy(&mut self, i: usize, anchors: &Path) -> Result<(), Error> {
        let pod = self.pods[i].clone();
        let mut args = vec!["token", "create", "--identity", &pod.spec.identity];
        // The registration hook: a token bound to the pod's service.
        let service_name = pod.spec.service.as_deref().map(|s| s.split(':').next().unwrap_or(s));
        if let Some(s) = service_name {
            args.extend(["--service", s]);
        }
        let out = self.cli(&args)?;
        let token = out
            .split_whitespace()
            .find(|w| w.starts_with("pmt_"))
            .ok_or_else(|| self.not_ready("pimesh token create printed no token", out.clone()))?;
        let token_file = self.dir.join(format!("{}.token", pod.spec.name));
        write_file(&token_file, token, 0o600, Some(self.opts.proxy_uid))?;
        let (inbound, outbound, admin) = PROXY_PORTS;
        let mut c = command(Some(&pod.netns), Some(self.opts.proxy_uid), &self.bins.proxy)?;
        c.env("PIMESH_PROXY_INBOUND_LISTEN_ADDR", format!("0.0.0.0:{inbound}"))
            .env("PIMESH_PROXY_OUTBOUND_LISTEN_ADDR", format!("127.0.0.1:{outbound}"))
            .env("PIMESH_PROXY_ADMIN_LISTEN_ADDR", format!("0.0.0.0:{admin}"))
            .env(
                "PIMESH_PROXY_CONTROLLER_ADDR",
                format!("{}:{CONTROLLER_PROXY_PORT}", self.controller_ip),
            )
            .env("PIMESH_PROXY_TRUST_ANCHORS", anchors)
            .env("PIMESH_PROXY_TOKEN_FILE", &token_file)
            .env("PIMESH_PROXY_IDENTITY", &pod.spec.identity)
            .env(
                "PIMESH_PROXY_WORKLOAD_LABELS",
                format!(
                    "namespace={},deployment={},pod={}",
                    pod.spec.identity.split('/').next().unwrap_or("lab"),
                    pod.spec.name,
                    pod.netns
                ),
            )
            .env("PIMESH_PROXY_MESH_DESTINATIONS", self.mesh_destinations(i))
            .env("PIMESH_PROXY_LOG", &self.opts.proxy_log)
            .env("PIMESH_LAB", &self.names.id);
        // The registration hook (issue "registry"): the proxy registers
        // this service with the controller; proxies without registration
        // ignore the variable.
        if let Some(s) = &pod.spec.service {
            c.env("PIMESH_PROXY_SERVICE", s);
        }
        for k in PROXY_ENV {
            c.env_remove(k);
        }
        let name = format!("{}/proxy", pod.spec.name);
        let mut p = Proc::spawn(&name, c, &self.dir.join(format!("{}.proxy.log", pod.spec.name)))?;
        let listening = p.wait_for_log("listening inbound=", READY_TIMEOUT);
        self.procs.push(p);
        listening.map_err(|log| self.not_ready(&format!("{name} did not start"), log))?;
        Ok(())
    }

    fn wait_proxy_ready(&mut self, i: usize) -> Result<(), Error> {
        let pod = &self.pods[i];
        let admin = SocketAddr::from(([127, 0, 0, 1], PROXY_PORTS.2));
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = http_get(Some(&pod.netns), admin, "/ready", Duration::from_secs(2));
            if matches!(ready, Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > end {
                let log = self.proxy_log(&pod.spec.name);
                return Err(self.not_ready(
                    &format!("{}/proxy has no certificate after {READY_TIMEOUT:?}", pod.spec.name),
                    log,
                ));
            }
            interrupt::sleep(Duration::from_millis(100))?;
        }
    }

    fn start_app(&mut self, i: usize) -> Result<(), Error> {
        let pod = self.pods[i].clone();
        let Some(cmd) = &pod.spec.command else {
            return Ok(());
        };
        let mut c = command(Some(&pod.netns), self.opts.app_uid, "sh")?;
        c.args(["-c", cmd])
            .current_dir(pod.spec.cwd.as_ref().unwrap_or(&pod.dir))
            .env("POD_NAME", &pod.spec.name)
            .env("POD_IP", pod.ip.to_string())
            .env("PIMESH_LAB", &self.names.id);
        for (k, v) in self.service_env() {
            c.env(k, v);
        }
        for (k, v) in &pod.spec.env {
            c.env(k, v);
        }
        for k in PROXY_ENV {
            c.env_remove(k);
        }
        let name = format!("{}/app", pod.spec.name);
        let p = Proc::spawn(&name, c, &self.dir.join(format!("{}.app.log", pod.spec.name)))?;
        self.procs.push(p);
        Ok(())
    }

    /// `<NAME>_SERVICE_HOST` / `<NAME>_SERVICE_PORT` of every pod with a
    /// port, as Kubernetes gives apps (name upper-cased, `-` → `_`).
    pub fn service_env(&self) -> Vec<(String, String)> {
        service_env(self.pods.iter().filter_map(|p| Some((p.spec.name.as_str(), p.addr()?))))
    }

    fn wait_app_ready(&mut self, i: usize) -> Result<(), Error> {
        let pod = self.pods[i].clone();
        if pod.spec.command.is_none() {
            return Ok(());
        }
        let name = format!("{}/app", pod.spec.name);
        for port in &pod.spec.ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            let end = Instant::now() + READY_TIMEOUT;
            while connect_in(&pod.netns, addr, Duration::from_secs(1)).is_err() {
                let exited = self.procs.iter_mut().any(|p| p.name == name && !p.running());
                if exited || Instant::now() > end {
                    let log = self.app_log(&pod.spec.name);
                    return Err(self.not_ready(&format!("{name} does not listen on :{port}"), log));
                }
                interrupt::sleep(Duration::from_millis(100))?;
            }
        }
        Ok(())
    }

    /// The pod named `name`. Panics if there is none (a test's typo).
    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.spec.name == name)
            .unwrap_or_else(|| panic!("no pod {name} in the lab"))
    }

    /// A command that runs `program` as root inside pod `pod`'s namespace
    /// (its outbound TCP is redirected into the pod's proxy, as an app's).
    pub fn exec(&self, pod: &str, program: &str) -> Result<Command, Error> {
        let mut c = command(Some(&self.pod(pod).netns), None, program)?;
        for k in PROXY_ENV {
            c.env_remove(k);
        }
        Ok(c)
    }

    /// Pod `pod`'s proxy `/metrics` text.
    pub fn metrics(&self, pod: &str) -> Result<String, Error> {
        let admin = SocketAddr::from(([127, 0, 0, 1], PROXY_PORTS.2));
        let (code, body) = http_get(Some(&self.pod(pod).netns), admin, "/metrics", Duration::from_secs(5))
            .map_err(|e| Error::NotReady {
                what: format!("{pod}/proxy /metrics"),
                log: e.to_string(),
            })?;
        if code != 200 {
            return Err(Error::NotReady {
                what: format!("{pod}/proxy /metrics answered {code}"),
                log: body,
            });
        }
        Ok(body)
    }

    /// The bridge's name (capture on it to see what crosses between pods).
    pub fn bridge(&self) -> String {
        self.names.bridge()
    }

    /// Pod `pod`'s proxy log so far.
    pub fn proxy_log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{pod}.proxy.log"))).unwrap_or_default()
    }

    /// Pod `pod`'s app log so far.
    pub fn app_log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{pod}.app.log"))).unwrap_or_default()
    }

    /// `Err` naming every child that exited or logged a panic.
    pub fn check(&mut self) -> Result<(), String> {
        let mut bad = Vec::new();
        for p in &mut self.procs {
            if !p.running() {
                bad.push(format!("{} exited:\n{}", p.name, p.log_text()));
            } else if p.log_text().contains("panicked") {
                bad.push(format!("{} panicked:\n{}", p.name, p.log_text()));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("\n"))
        }
    }

    /// Tears the lab down now; returns what could not be removed.
    pub fn down(mut self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Vec<String> {
        let Some(lock) = self.lock.take() else {
            return Vec::new();
        };
        for p in self.procs.iter_mut().rev() {
            p.kill();
        }
        self.procs.clear();
        let left = net::teardown(&self.names.id);
        if !self.opts.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        lock.release();
        left
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for problem in self.teardown() {
            eprintln!("pimesh-lab: cannot remove {problem}");
        }
    }
}

/// `<NAME>_SERVICE_HOST` / `_PORT` pairs for `(name, addr)`.
pub fn service_env<'a>(
    pods: impl Iterator<Item = (&'a str, SocketAddr)>,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (name, addr) in pods {
        let key = name.to_ascii_uppercase().replace('-', "_");
        env.push((format!("{key}_SERVICE_HOST"), addr.ip().to_string()));
        env.push((format!("{key}_SERVICE_PORT"), addr.port().to_string()));
    }
    env
}

pub(crate) fn mkdir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| Error::Write(dir.to_path_buf(), e))
}

/// Writes `text` to `path` with `mode`, owned by `owner` (uid = gid) when given.
pub(crate) fn write_file(path: &Path, text: &str, mode: u32, owner: Option<u32>) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let err = |e| Error::Write(path.to_path_buf(), e);
    std::fs::write(path, text).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    if let Some(uid) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(uid)).map_err(err)?;
    }
    Ok(())
}
