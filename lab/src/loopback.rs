//! The lab without root: the same pods on 127.0.0.1, each app on a free
//! port behind its own meshed proxy in explicit mode (no iptables). Apps
//! get `http_proxy` pointing at their proxy's outbound listener (honoured
//! by urllib, curl and grpcio) and reach the other services at those
//! services' proxies' inbound listeners. HTTP/1 requests sent through the
//! proxy cross the mesh over mTLS; what an app tunnels with `CONNECT`
//! (grpcio does for gRPC) is forwarded as it is, in plaintext.

use crate::interrupt;
use crate::lab::{self, Bins, Error, Options, PROXY_ENV};
use crate::process::{command, http_get, run, Proc};
use crate::spec::PodSpec;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A pod on loopback: its app's and its proxy's addresses.
#[derive(Debug, Clone)]
pub struct LoopPod {
    /// What it runs.
    pub spec: PodSpec,
    /// The app's listen address (its first port), if it has one.
    pub app: Option<SocketAddr>,
    /// The proxy's inbound listener: where the other pods send to this one.
    pub inbound: SocketAddr,
    /// The proxy's outbound listener (the app's `http_proxy`).
    pub outbound: SocketAddr,
    /// The proxy's admin listener.
    pub admin: SocketAddr,
}

/// A running loopback lab; dropping it stops everything and removes its
/// work directory.
#[derive(Debug)]
pub struct LoopbackLab {
    /// Logs, tokens, controller data.
    pub dir: PathBuf,
    /// The pods, in spec order.
    pub pods: Vec<LoopPod>,
    /// The controller's operator address.
    pub controller_admin: SocketAddr,
    bins: Bins,
    opts: Options,
    procs: Vec<Proc>,
}

/// A free loopback port, chosen below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`) so that other programs' port-0 binds
/// (tests running beside the lab, outgoing connections) cannot take it
/// between this check and the proxy's own bind; port 0 when that range
/// leaves no room.
pub(crate) fn free_port() -> Result<SocketAddr, Error> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    const LOW: u32 = 20_000;
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    if ephemeral_low > LOW + 1_000 {
        let span = u64::from(ephemeral_low - LOW);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 20);
        for _ in 0..256 {
            // splitmix64 of seed + draw: spread, not secret.
            let mut z = seed.wrapping_add(
                DRAWS
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let port = (u64::from(LOW) + z % span) as u16;
            if let Ok(addr) = TcpListener::bind(("127.0.0.1", port)).and_then(|l| l.local_addr()) {
                return Ok(addr);
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::Write(PathBuf::from("127.0.0.1:0"), e))
}

impl LoopbackLab {
    /// Starts the controller, then each pod's proxy (certified with a join
    /// token) and app, on loopback.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] for its work directory or when no loopback port is
    /// free; [`Error::Process`] or [`Error::NotReady`] when the controller, a
    /// proxy or an app cannot start, is not certified or never gets ready.
    pub fn up(pods: &[PodSpec], bins: &Bins, opts: &Options) -> Result<LoopbackLab, Error> {
        let dir = std::env::temp_dir().join(format!(
            "pml-loopback-{}-{}",
            std::process::id(),
            crate::net::random_id()
        ));
        lab::mkdir(&dir)?;
        let mut loop_pods = Vec::new();
        for spec in pods {
            loop_pods.push(LoopPod {
                spec: spec.clone(),
                app: match spec.ports.first() {
                    Some(_) => Some(free_port()?),
                    None => None,
                },
                inbound: free_port()?,
                outbound: free_port()?,
                admin: free_port()?,
            });
        }
        let mut lab = LoopbackLab {
            dir,
            pods: loop_pods,
            controller_admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            bins: bins.clone(),
            opts: opts.clone(),
            procs: Vec::new(),
        };
        lab.build()?;
        Ok(lab)
    }

    fn step(&self, msg: &str) {
        if self.opts.progress {
            println!("pimesh-lab: {msg}");
        }
    }

    fn build(&mut self) -> Result<(), Error> {
        let proxy_addr = self.start_controller()?;
        let anchors = self.dir.join("trust-anchors.pem");
        let pem = self.cli(&["identity", "trust-anchors"])?;
        lab::write_file(&anchors, &pem, 0o644, None)?;
        for i in 0..self.pods.len() {
            interrupt::check()?;
            self.start_proxy(i, proxy_addr, &anchors)?;
        }
        for i in 0..self.pods.len() {
            self.wait_ready(i)?;
        }
        self.step("every proxy holds its certificate (mTLS ready)");
        let wanted: Vec<_> = self
            .pods
            .iter()
            .filter_map(|p| p.spec.registered_service())
            .collect();
        lab::wait_registered(
            || self.cli(&["service", "ls"]),
            &wanted,
            Duration::from_secs(30),
        )?;
        for i in 0..self.pods.len() {
            interrupt::check()?;
            self.start_app(i)?;
        }
        self.step("loopback lab is up");
        Ok(())
    }

    fn start_controller(&mut self) -> Result<SocketAddr, Error> {
        let mut c = command(None, None, &self.bins.pimesh)?;
        c.args(["controller", "--standalone", "--data-dir"])
            .arg(self.dir.join("controller-data"))
            .args(["--proxy-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .arg("--scrape-interval")
            .arg(lab::scrape_interval_arg(self.opts.scrape_interval));
        let mut p = Proc::spawn("controller", c, &self.dir.join("controller.log"))?;
        let ready = p.wait_for_log("pimesh controller listening", Duration::from_secs(30));
        let log = p.log_text();
        self.procs.push(p);
        ready.map_err(|log| Error::NotReady {
            what: "the controller did not start".into(),
            log,
        })?;
        let addr = |key: &str| -> Option<SocketAddr> {
            let line = log
                .lines()
                .find(|l| l.contains("pimesh controller listening"))?;
            let start = line.find(key)? + key.len();
            line[start..].split_whitespace().next()?.parse().ok()
        };
        let (Some(proxy), Some(admin)) = (addr("proxy="), addr("admin=")) else {
            return Err(Error::NotReady {
                what: "no addresses in the controller's start line".into(),
                log,
            });
        };
        self.controller_admin = admin;
        self.step(&format!(
            "controller up (proxies: {proxy}, operator: http://{admin})"
        ));
        Ok(proxy)
    }

    /// The operator API's URL (`http://127.0.0.1:PORT`).
    pub fn operator_url(&self) -> String {
        format!("http://{}", self.controller_admin)
    }

    /// Runs `pimesh ARGS --controller http://ADMIN` and returns its stdout.
    ///
    /// # Errors
    ///
    /// [`Error::Process`] when `pimesh` cannot be started, runs past 30 s or
    /// exits non-zero (with its stderr).
    pub fn cli(&self, args: &[&str]) -> Result<String, Error> {
        let mut c = command(None, None, &self.bins.pimesh)?;
        c.args(args)
            .arg("--controller")
            .arg(format!("http://{}", self.controller_admin))
            .env_remove("PIMESH_CONTROLLER");
        let out = run(&mut c, Duration::from_secs(30))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn start_proxy(
        &mut self,
        i: usize,
        controller: SocketAddr,
        anchors: &std::path::Path,
    ) -> Result<(), Error> {
        let pod = self.pods[i].clone();
        let out = self.cli(&["token", "create", "--identity", &pod.spec.identity])?;
        let token = out
            .split_whitespace()
            .find(|w| w.starts_with("pmt_"))
            .ok_or_else(|| Error::NotReady {
                what: "pimesh token create printed no token".into(),
                log: out.clone(),
            })?;
        let token_file = self.dir.join(format!("{}.token", pod.spec.name));
        lab::write_file(&token_file, token, 0o600, None)?;
        // Every other pod with an app is a mesh destination at its proxy's
        // inbound listener.
        let dests: Vec<String> = self
            .pods
            .iter()
            .enumerate()
            .filter(|(j, p)| *j != i && p.app.is_some())
            .map(|(_, p)| format!("{}={}", p.inbound, p.spec.identity))
            .collect();
        let mut c = command(None, None, &self.bins.proxy)?;
        c.env("PIMESH_PROXY_INBOUND_LISTEN_ADDR", pod.inbound.to_string())
            .env(
                "PIMESH_PROXY_OUTBOUND_LISTEN_ADDR",
                pod.outbound.to_string(),
            )
            .env("PIMESH_PROXY_ADMIN_LISTEN_ADDR", pod.admin.to_string())
            // Every pod shares 127.0.0.1: any free port (registered as is).
            .env("PIMESH_PROXY_TAP_LISTEN_ADDR", "127.0.0.1:0")
            .env("PIMESH_PROXY_CONTROLLER_ADDR", controller.to_string())
            .env("PIMESH_PROXY_TRUST_ANCHORS", anchors)
            .env("PIMESH_PROXY_TOKEN_FILE", &token_file)
            .env("PIMESH_PROXY_IDENTITY", &pod.spec.identity)
            .env(
                "PIMESH_PROXY_WORKLOAD_LABELS",
                format!(
                    "namespace={},deployment={},pod={}",
                    pod.spec.identity.split('/').next().unwrap_or("lab"),
                    pod.spec.name,
                    pod.spec.name
                ),
            )
            .env("PIMESH_PROXY_MESH_DESTINATIONS", dests.join(","))
            .env("PIMESH_PROXY_LOG", &self.opts.proxy_log);
        if let Some(app) = pod.app {
            c.env("PIMESH_PROXY_INBOUND_TARGET", app.to_string());
        }
        // Registered at the app's own port: every pod shares 127.0.0.1, so
        // the spec's port (8080 for all) would give every service the same
        // endpoint address. Clients dial the endpoint's proxy_addr (the
        // inbound listener).
        if let (Some((_, name)), Some(app)) = (pod.spec.registered_service(), pod.app) {
            c.env("PIMESH_PROXY_SERVICE", format!("{name}:{}", app.port()));
        }
        for k in PROXY_ENV {
            c.env_remove(k);
        }
        let name = format!("{}/proxy", pod.spec.name);
        let mut p = Proc::spawn(
            &name,
            c,
            &self.dir.join(format!("{}.proxy.log", pod.spec.name)),
        )?;
        let listening = p.wait_for_log("listening inbound=", Duration::from_secs(30));
        self.procs.push(p);
        listening.map_err(|log| Error::NotReady {
            what: format!("{name} did not start"),
            log,
        })
    }

    fn wait_ready(&mut self, i: usize) -> Result<(), Error> {
        let pod = &self.pods[i];
        let end = Instant::now() + Duration::from_secs(30);
        while !matches!(
            http_get(None, pod.admin, "/ready", Duration::from_secs(2)),
            Ok((200, _))
        ) {
            if Instant::now() > end {
                return Err(Error::NotReady {
                    what: format!("{}/proxy has no certificate", pod.spec.name),
                    log: self.log(&format!("{}.proxy.log", pod.spec.name)),
                });
            }
            interrupt::sleep(Duration::from_millis(100))?;
        }
        Ok(())
    }

    fn start_app(&mut self, i: usize) -> Result<(), Error> {
        let pod = self.pods[i].clone();
        let Some(cmd) = &pod.spec.command else {
            return Ok(());
        };
        let mut c = command(None, None, "sh")?;
        let dir = self.dir.join(&pod.spec.name);
        lab::mkdir(&dir)?;
        c.args(["-c", cmd])
            .current_dir(pod.spec.cwd.as_ref().unwrap_or(&dir))
            .env("POD_NAME", &pod.spec.name);
        for k in PROXY_ENV {
            c.env_remove(k);
        }
        for (k, v) in &pod.spec.env {
            c.env(k, v);
        }
        // Other services at their proxies' inbound listeners; the app's own
        // traffic through its proxy (explicit mode).
        let others = self
            .pods
            .iter()
            .filter(|p| p.app.is_some())
            .map(|p| (p.spec.name.as_str(), p.inbound));
        for (k, v) in lab::service_env(others) {
            c.env(k, v);
        }
        c.env("http_proxy", format!("http://{}", pod.outbound))
            // gRPC apps that can (the demo's) send HTTP/2 to the proxy with
            // `:authority` naming the service instead of tunnelling it with
            // CONNECT: the mesh then carries gRPC requests (mTLS, metrics,
            // edges), not opaque bytes.
            .env("GRPC_PROXY_ADDR", pod.outbound.to_string());
        if let Some(app) = pod.app {
            c.env("PORT", app.port().to_string());
        }
        let name = format!("{}/app", pod.spec.name);
        let mut p = Proc::spawn(
            &name,
            c,
            &self.dir.join(format!("{}.app.log", pod.spec.name)),
        )?;
        if let Some(app) = pod.app {
            let end = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect_timeout(&app, Duration::from_secs(1)).is_err() {
                if !p.running() || Instant::now() > end {
                    return Err(Error::NotReady {
                        what: format!("{name} does not listen on {app}"),
                        log: p.log_text(),
                    });
                }
                interrupt::sleep(Duration::from_millis(100))?;
            }
        }
        self.procs.push(p);
        Ok(())
    }

    fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Pod `pod`'s proxy `/metrics` text.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] for an unknown pod or when its proxy's admin port
    /// does not answer 200.
    pub fn metrics(&self, pod: &str) -> Result<String, Error> {
        let p = self
            .pods
            .iter()
            .find(|p| p.spec.name == pod)
            .ok_or_else(|| Error::NotReady {
                what: format!("no pod {pod}"),
                log: String::new(),
            })?;
        http_get(None, p.admin, "/metrics", Duration::from_secs(5))
            .map(|(_, body)| body)
            .map_err(|e| Error::NotReady {
                what: format!("{pod}/proxy /metrics"),
                log: e.to_string(),
            })
    }

    /// `Err` naming every child that exited.
    ///
    /// # Errors
    ///
    /// The children that exited, one a line, with their logs.
    pub fn check(&mut self) -> Result<(), String> {
        let bad: Vec<String> = self
            .procs
            .iter_mut()
            .filter_map(|p| (!p.running()).then(|| format!("{} exited:\n{}", p.name, p.log_text())))
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("\n"))
        }
    }
}

impl Drop for LoopbackLab {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.kill();
        }
        if !self.opts.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
