//! Bringing a lab up and down. [`Lab::up`] removes stale labs, takes a lock
//! and a free /24, creates the bridge and one namespace per pod (plus one
//! for the controller), starts `pimesh controller --standalone`, creates a
//! join token per pod, runs `pimesh-proxy init` in each pod, starts each
//! pod's proxy under its own uid and waits until it holds a certificate,
//! then starts the apps. Dropping the [`Lab`] (normal end, panic in a test,
//! error half-way) removes everything; after a SIGKILL the children die
//! with the lab and the next start removes the rest.

use crate::forward::Forward;
use crate::interrupt::{self, Interrupted};
use crate::net::{self, Lock, Names, Subnet};
use crate::process::{command, http_get, run, Proc};
use crate::spec::{self, PodSpec};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

mod config;
mod error;
mod pods;

pub use error::Error;

pub(crate) use config::{mkdir, scrape_interval_arg, wait_registered, write_file};
pub use config::{
    service_env, Bins, KubeMode, Options, DEFAULT_PROXY_UID, DEFAULT_SCRAPE_INTERVAL, PROXY_ENV,
};

/// The controller's proxy-facing port (DESIGN.md).
pub const CONTROLLER_PROXY_PORT: u16 = 8086;
/// The controller's operator port (DESIGN.md).
pub const CONTROLLER_ADMIN_PORT: u16 = 8085;
/// The controller's proxy injector port (Kubernetes mode).
pub const WEBHOOK_PORT: u16 = 8443;
/// The proxy's ports inside a pod (DESIGN.md): inbound, outbound, admin.
pub const PROXY_PORTS: (u16, u16, u16) = (4143, 4140, 4191);
/// Time for a proxy to get its certificate, or an app to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) use pimesh_api::text::error_chain as error_text;

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
    /// The controller's operator API forwarded to the host's 127.0.0.1
    /// (the `pimesh` CLI and the dashboard from the host).
    pub operator: Option<Forward>,
    /// Kubernetes mode: the API server forwarded into the controller's
    /// namespace.
    api_forward: Option<Forward>,
    /// Kubernetes mode: the proxy injector (127.0.0.1:8443 in the
    /// controller's namespace) forwarded to the host's 127.0.0.1, where the
    /// API server calls it.
    pub webhook: Option<Forward>,
    bins: Bins,
    opts: Options,
    procs: Vec<Proc>,
    lock: Option<Lock>,
}

impl Lab {
    /// Brings a lab with `pods` up (see the module doc); on any error or
    /// interruption, what was created is removed before returning.
    ///
    /// # Errors
    ///
    /// [`Error::NotRoot`] without root; [`Error::Spec`] for a bad or repeated
    /// pod name; [`Error::Net`] when no subnet is free, the lab id is in use or
    /// a namespace, link or rule cannot be made; [`Error::Write`] for its work
    /// directory; [`Error::Process`] or [`Error::NotReady`] when a child cannot
    /// start or never gets ready; [`Error::Interrupted`] on SIGINT, SIGTERM or
    /// SIGHUP.
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
            operator: None,
            api_forward: None,
            webhook: None,
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
        net::add_node(
            &self.names,
            &ctl_ns,
            &self.names.veth(0),
            self.controller_ip,
        )?;
        for (i, pod) in self.pods.iter().enumerate() {
            interrupt::check()?;
            net::add_node(&self.names, &pod.netns, &self.names.veth(i + 1), pod.ip)?;
            if let Some(k) = &self.opts.kube {
                let mut c = command(Some(&pod.netns), None, "ip")?;
                c.args(["route", "add", &k.service_cidr, "dev", "eth0"]);
                run(&mut c, Duration::from_secs(10))?;
            }
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
        if !self.pods.is_empty() {
            self.step("pimesh-proxy init done in every pod");
        }
        for i in 0..self.pods.len() {
            interrupt::check()?;
            self.start_proxy(i, &anchors)?;
        }
        for i in 0..self.pods.len() {
            self.wait_proxy_ready(i)?;
        }
        if !self.pods.is_empty() {
            self.step("every proxy holds its certificate (mTLS ready)");
        }
        // Kubernetes mode registers nothing: EndpointSlices say who serves.
        let wanted: Vec<_> = self
            .pods
            .iter()
            .filter(|_| self.opts.kube.is_none())
            .filter_map(|p| p.spec.registered_service())
            .collect();
        wait_registered(|| self.cli(&["service", "ls"]), &wanted, READY_TIMEOUT)?;
        if !wanted.is_empty() {
            self.step("every service is registered (the controller scrapes its proxies)");
        }
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
        c.arg("controller");
        match &self.opts.kube {
            Some(k) => {
                let api = SocketAddr::from(([127, 0, 0, 1], k.api_port));
                self.api_forward = Some(
                    Forward::out_of(&ns, api, api)
                        .map_err(|e| Error::Write(PathBuf::from(api.to_string()), e))?,
                );
                c.arg("--kubeconfig")
                    .arg(&k.kubeconfig)
                    .arg("--webhook-addr")
                    .arg(format!("127.0.0.1:{WEBHOOK_PORT}"));
            }
            None => {
                c.arg("--standalone");
            }
        }
        c.arg("--data-dir")
            .arg(self.dir.join("controller-data"))
            .arg("--proxy-addr")
            .arg(format!("{}:{CONTROLLER_PROXY_PORT}", self.controller_ip))
            .arg("--admin-addr")
            .arg(format!("0.0.0.0:{CONTROLLER_ADMIN_PORT}"))
            .arg("--scrape-interval")
            .arg(scrape_interval_arg(self.opts.scrape_interval))
            .env("PIMESH_LAB", &self.names.id);
        let mut p = Proc::spawn("controller", c, &self.dir.join("controller.log"))?;
        let ready = p.wait_for_log("pimesh controller listening", READY_TIMEOUT);
        self.procs.push(p);
        ready.map_err(|log| self.not_ready("the controller did not start", log))?;
        if self.opts.kube.is_some() {
            let hook = SocketAddr::from(([127, 0, 0, 1], WEBHOOK_PORT));
            self.webhook = Some(
                Forward::start(&ns, hook)
                    .map_err(|e| Error::Write(PathBuf::from("127.0.0.1:0"), e))?,
            );
        }
        let operator = SocketAddr::from(([127, 0, 0, 1], CONTROLLER_ADMIN_PORT));
        self.operator = Some(
            Forward::start(&ns, operator)
                .map_err(|e| Error::Write(PathBuf::from("127.0.0.1:0"), e))?,
        );
        self.step(&format!(
            "controller up in {ns} (proxies: {}:{CONTROLLER_PROXY_PORT}, operator: :{CONTROLLER_ADMIN_PORT}, from the host: {})",
            self.controller_ip,
            self.operator_url()
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

    /// The operator API's URL from the host (`http://127.0.0.1:PORT`, the
    /// forwarder into the controller's namespace).
    pub fn operator_url(&self) -> String {
        match &self.operator {
            Some(f) => format!("http://{}", f.addr),
            None => format!("http://127.0.0.1:{CONTROLLER_ADMIN_PORT}"),
        }
    }

    /// Runs `pimesh ARGS --controller http://127.0.0.1:8085` in the
    /// controller's namespace and returns its stdout.
    ///
    /// # Errors
    ///
    /// [`Error::Process`] when `pimesh` cannot be started in the controller's
    /// namespace, runs past 30 s or exits non-zero (with its stderr).
    pub fn cli(&self, args: &[&str]) -> Result<String, Error> {
        let mut c = command(Some(&self.names.netns("ctl")), None, &self.bins.pimesh)?;
        c.args(args)
            .arg("--controller")
            .arg(format!("http://127.0.0.1:{CONTROLLER_ADMIN_PORT}"))
            .env_remove("PIMESH_CONTROLLER");
        let out = run(&mut c, Duration::from_secs(30))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
    ///
    /// # Errors
    ///
    /// [`Error::Process`] when the pod's namespace cannot be opened.
    pub fn exec(&self, pod: &str, program: &str) -> Result<Command, Error> {
        let mut c = command(Some(&self.pod(pod).netns), None, program)?;
        for k in PROXY_ENV {
            c.env_remove(k);
        }
        Ok(c)
    }

    /// Pod `pod`'s proxy `/metrics` text.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] when the proxy's admin port does not answer 200.
    pub fn metrics(&self, pod: &str) -> Result<String, Error> {
        let admin = SocketAddr::from(([127, 0, 0, 1], PROXY_PORTS.2));
        let (code, body) = http_get(
            Some(&self.pod(pod).netns),
            admin,
            "/metrics",
            Duration::from_secs(5),
        )
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
    ///
    /// # Errors
    ///
    /// The children that exited or logged a panic, one a line, with their logs.
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

    /// Stops the controller (SIGKILL), as a crash would: what the mesh
    /// and `pimesh check` do without it.
    pub fn stop_controller(&mut self) {
        for p in self.procs.iter_mut().filter(|p| p.name == "controller") {
            p.kill();
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
        self.operator = None;
        self.api_forward = None;
        self.webhook = None;
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
