//! The paths measured, each set up from scratch: `direct` (client →
//! upstream), `inbound` (client → one proxy's inbound listener → upstream,
//! for pimesh and every peer) and `mesh` (client → pimesh outbound, as an
//! explicit proxy → mTLS → pimesh inbound → upstream, with identities from
//! a standalone `pimesh controller`).

use crate::cgroup::{self, Hierarchy, Limits};
use crate::config::{Protocol, Scenario};
use crate::load::Target;
use crate::peer::{self, Peer, Slots};
use crate::process::{self, Launch, Proc};
use crate::upstream::Upstream;
use pimesh_test_support::{eventually, free_port};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A setup could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process")]
    Process(#[from] process::Error),
    #[error("cgroup")]
    Cgroup(#[from] cgroup::Error),
    #[error("peer")]
    Peer(#[from] peer::Error),
    #[error("{0} never became ready (GET /ready on {1}); its log:\n{2}")]
    NotReady(String, SocketAddr, String),
    #[error("peer {0} never accepted connections on {1}; its log:\n{2}")]
    PeerNotUp(String, SocketAddr, String),
    #[error("`pimesh {0}` failed: {1}")]
    Cli(String, String),
    #[error("cannot write {0}")]
    File(PathBuf, #[source] std::io::Error),
}

/// Identity of the mesh scenario's client-side proxy.
pub const CLIENT_ID: &str = "bench/client";
/// Identity of the mesh scenario's server-side proxy.
pub const SERVER_ID: &str = "bench/server";

/// What every setup needs.
pub struct Env<'a> {
    pub proxy_bin: &'a Path,
    /// `None`: no limits (`--no-cgroup`).
    pub cgroups: Option<&'a Hierarchy>,
    pub limits: Limits,
    pub upstream: &'a Upstream,
    /// Scratch space (configs, tokens); removed by the caller.
    pub dir: &'a Path,
    /// Waiting budget for starts (longer under emulation).
    pub wait: Duration,
}

/// A proxy process in a setup and its role (`proxy`, `outbound`, `inbound`).
pub struct RoleProc {
    pub role: &'static str,
    pub proc: Proc,
    /// Admin address (pimesh only), for /metrics.
    pub admin: Option<SocketAddr>,
}

/// A started scenario: where the client sends and what to watch.
pub struct Setup {
    /// `none` (direct), `pimesh`, or a peer's name.
    pub proxy: String,
    pub scenario: Scenario,
    pub protocol: Protocol,
    pub target: Target,
    pub procs: Vec<RoleProc>,
}

/// The standalone controller of the mesh scenario.
pub struct Controller {
    pub proc: Proc,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    bin: PathBuf,
    anchors: PathBuf,
    dir: PathBuf,
}

impl Controller {
    /// Starts `pimesh controller --standalone` with its data in `dir` and
    /// writes the trust anchors there.
    ///
    /// # Errors
    ///
    /// [`Error::Process`] when the controller cannot start, prints no listening
    /// line within `wait` or that line has no address; [`Error::Cli`] when
    /// `pimesh identity trust-anchors` fails; [`Error::File`] when the anchors
    /// cannot be written.
    pub fn start(bin: &Path, dir: &Path, wait: Duration) -> Result<Controller, Error> {
        Controller::start_with(bin, dir, wait, &[])
    }

    /// As [`Controller::start`], with `extra` flags of `pimesh controller`.
    ///
    /// # Errors
    ///
    /// As [`Controller::start`].
    pub fn start_with(
        bin: &Path,
        dir: &Path,
        wait: Duration,
        extra: &[&str],
    ) -> Result<Controller, Error> {
        let mut launch = Launch::new(bin)
            .arg("controller")
            .arg("--standalone")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--proxy-addr")
            .arg("127.0.0.1:0")
            .arg("--admin-addr")
            .arg("127.0.0.1:0");
        for a in extra {
            launch = launch.arg(*a);
        }
        let (proc, line) = Proc::start("controller", &launch, None, Some("listening"), wait)?;
        let c = Controller {
            proxy_addr: process::line_addr(&line, "proxy=")?,
            admin_addr: process::line_addr(&line, "admin=")?,
            proc,
            bin: bin.to_path_buf(),
            anchors: dir.join("anchors.pem"),
            dir: dir.to_path_buf(),
        };
        let pem = c.cli(&["identity", "trust-anchors"])?;
        std::fs::write(&c.anchors, pem).map_err(|e| Error::File(c.anchors.clone(), e))?;
        Ok(c)
    }

    /// Runs `pimesh ARGS --controller http://ADMIN`; returns stdout.
    fn cli(&self, args: &[&str]) -> Result<String, Error> {
        let mut launch = Launch::new(&self.bin);
        for a in args {
            launch = launch.arg(*a);
        }
        let launch = launch
            .arg("--controller")
            .arg(format!("http://{}", self.admin_addr));
        let (out, err) =
            process::output(&launch).map_err(|e| Error::Cli(args.join(" "), e.to_string()))?;
        match out {
            Some(stdout) => Ok(stdout),
            None => Err(Error::Cli(args.join(" "), err)),
        }
    }

    /// A new join token for `identity` (`pimesh token create`).
    ///
    /// # Errors
    ///
    /// [`Error::Cli`] when the command fails or prints no token.
    pub fn token(&self, identity: &str) -> Result<String, Error> {
        let out = self.cli(&["token", "create", "--identity", identity])?;
        out.split_whitespace()
            .find(|w| w.starts_with("pmt_"))
            .map(str::to_string)
            .ok_or_else(|| Error::Cli("token create".into(), format!("no token in {out:?}")))
    }

    /// The trust anchors' PEM file (written at start).
    pub fn anchors_path(&self) -> &Path {
        &self.anchors
    }

    /// A proxy's controller environment for `identity` (a new join token).
    fn proxy_env(&self, identity: &str) -> Result<Vec<(String, String)>, Error> {
        let token = self.token(identity)?;
        let file = self
            .dir
            .join(format!("{}.token", identity.replace('/', "_")));
        std::fs::write(&file, token).map_err(|e| Error::File(file.clone(), e))?;
        Ok(vec![
            (
                "PIMESH_PROXY_CONTROLLER_ADDR".into(),
                self.proxy_addr.to_string(),
            ),
            (
                "PIMESH_PROXY_TRUST_ANCHORS".into(),
                self.anchors.display().to_string(),
            ),
            ("PIMESH_PROXY_TOKEN_FILE".into(), file.display().to_string()),
            ("PIMESH_PROXY_IDENTITY".into(), identity.into()),
        ])
    }
}

/// A pimesh-proxy with its listeners.
struct Pimesh {
    proc: Proc,
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
}

impl Env<'_> {
    fn cgroup(&self, role: &str, limits: Limits) -> Result<Option<cgroup::Cgroup>, Error> {
        Ok(match self.cgroups {
            Some(h) => Some(h.create(role, limits)?),
            None => None,
        })
    }

    /// Starts pimesh-proxy on loopback port-0 listeners with `env`, in a
    /// cgroup with `limits`; with `ready`, waits for `GET /ready` = 200
    /// (a meshed proxy has its certificate).
    fn pimesh(
        &self,
        role: &str,
        env: &[(String, String)],
        limits: Limits,
        ready: bool,
    ) -> Result<Pimesh, Error> {
        let mut launch = Launch::new(self.proxy_bin)
            .env("PIMESH_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0")
            .env("PIMESH_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0")
            .env("PIMESH_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0")
            .env("PIMESH_PROXY_TAP_LISTEN_ADDR", "127.0.0.1:0")
            .env("PIMESH_PROXY_LOG", "warn,pimesh=info");
        for (k, v) in env {
            launch = launch.env(k, v.clone());
        }
        let cg = self.cgroup(role, limits)?;
        let name = format!("pimesh-proxy ({role})");
        let (proc, line) = Proc::start(&name, &launch, cg, Some("listening inbound="), self.wait)?;
        let p = Pimesh {
            inbound: process::line_addr(&line, " inbound=")?,
            outbound: process::line_addr(&line, "outbound=")?,
            admin: process::line_addr(&line, "admin=")?,
            proc,
        };
        if ready && !eventually(self.wait, || http_get(p.admin, "/ready").0 == 200) {
            return Err(Error::NotReady(name, p.admin, p.proc.log()));
        }
        Ok(p)
    }

    /// client → upstream.
    pub fn direct(&self, protocol: Protocol, payload: u64) -> Setup {
        let up = self.upstream.addr(protocol);
        Setup {
            proxy: "none".into(),
            scenario: Scenario::Direct,
            protocol,
            target: Target::new(up, up, protocol, false, payload),
            procs: Vec::new(),
        }
    }

    /// client → pimesh inbound (fixed target: the upstream) → upstream.
    /// `max_conns` raises the proxy's connection limit (idle connections).
    ///
    /// # Errors
    ///
    /// [`Error::Cgroup`] when the proxy's group cannot be made;
    /// [`Error::Process`] or [`Error::NotReady`] when the proxy cannot start or
    /// never answers `/ready`.
    pub fn inbound(
        &self,
        protocol: Protocol,
        payload: u64,
        limits: Limits,
        max_conns: Option<usize>,
    ) -> Result<Setup, Error> {
        let up = self.upstream.addr(protocol);
        let mut env = vec![("PIMESH_PROXY_INBOUND_TARGET".to_string(), up.to_string())];
        if let Some(n) = max_conns {
            env.push(("PIMESH_PROXY_MAX_CONNECTIONS".into(), n.to_string()));
        }
        let p = self.pimesh("inbound", &env, limits, false)?;
        Ok(Setup {
            proxy: "pimesh".into(),
            scenario: Scenario::Inbound,
            protocol,
            target: Target::new(p.inbound, up, protocol, false, payload),
            procs: vec![RoleProc {
                role: "inbound",
                proc: p.proc,
                admin: Some(p.admin),
            }],
        })
    }

    /// client → peer → upstream.
    ///
    /// # Errors
    ///
    /// [`Error::Peer`] when its command cannot be made; [`Error::Cgroup`] for
    /// its group; [`Error::Process`] when it cannot start; [`Error::PeerNotUp`]
    /// with its log when it does not accept on its port within the wait.
    pub fn peer(
        &self,
        peer: &Peer,
        protocol: Protocol,
        payload: u64,
        limits: Limits,
        max_conns: usize,
    ) -> Result<Setup, Error> {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let dir = self
            .dir
            .join(format!("peer-{}-{}", peer.name, listen.port()));
        let slots = Slots {
            listen,
            protocol,
            upstream_h1: self.upstream.h1,
            upstream_h2: self.upstream.h2,
            dir: &dir,
            max_conns,
        };
        let launch = peer.launch(&slots)?;
        let cg = self.cgroup(&peer.name, limits)?;
        let (mut proc, _) = Proc::start(&peer.name, &launch, cg, None, Duration::ZERO)?;
        let up = eventually(self.wait, || {
            proc.exited().is_none() && TcpStream::connect(listen).is_ok()
        });
        if !up {
            return Err(Error::PeerNotUp(peer.name.clone(), listen, proc.log()));
        }
        let upstream = self.upstream.addr(protocol);
        Ok(Setup {
            proxy: peer.name.clone(),
            scenario: Scenario::Inbound,
            protocol,
            target: Target::new(listen, upstream, protocol, false, payload),
            procs: vec![RoleProc {
                role: "proxy",
                proc,
                admin: None,
            }],
        })
    }

    /// client → pimesh outbound (explicit proxy; the upstream is a mesh
    /// destination) → mTLS → pimesh inbound (identity required on the
    /// upstream's port) → upstream.
    ///
    /// # Errors
    ///
    /// As [`Env::inbound`] for each proxy, and [`Error::Cli`] or
    /// [`Error::File`] when a proxy's join token or its file cannot be
    /// made.
    pub fn mesh(
        &self,
        controller: &Controller,
        protocol: Protocol,
        payload: u64,
    ) -> Result<Setup, Error> {
        let up = self.upstream.addr(protocol);
        let mut env = controller.proxy_env(SERVER_ID)?;
        env.push(("PIMESH_PROXY_INBOUND_TARGET".into(), up.to_string()));
        env.push((
            "PIMESH_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY".into(),
            up.port().to_string(),
        ));
        let server = self.pimesh("inbound", &env, self.limits, true)?;
        let mut env = controller.proxy_env(CLIENT_ID)?;
        env.push((
            "PIMESH_PROXY_MESH_DESTINATIONS".into(),
            format!("{up}={SERVER_ID}@{}", server.inbound),
        ));
        let client = self.pimesh("outbound", &env, self.limits, true)?;
        Ok(Setup {
            proxy: "pimesh".into(),
            scenario: Scenario::Mesh,
            protocol,
            target: Target::new(client.outbound, up, protocol, true, payload),
            procs: vec![
                RoleProc {
                    role: "outbound",
                    proc: client.proc,
                    admin: Some(client.admin),
                },
                RoleProc {
                    role: "inbound",
                    proc: server.proc,
                    admin: Some(server.admin),
                },
            ],
        })
    }
}

/// Requests the inbound side of a setup counted over mTLS (`request_total`
/// with `direction="inbound"` and `tls="true"`): proof that the mesh path
/// really was mutual TLS. `None` without a pimesh inbound proxy.
pub fn mtls_requests(setup: &Setup) -> Option<u64> {
    let admin = setup
        .procs
        .iter()
        .find(|p| p.role == "inbound")
        .and_then(|p| p.admin)?;
    let (status, body) = http_get(admin, "/metrics");
    (status == 200).then(|| sum_requests(&body, "tls=\"true\""))
}

/// Sum of inbound `request_total` samples whose labels contain `label`.
fn sum_requests(metrics: &str, label: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("request_total{") && l.contains("direction=\"inbound\""))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A tiny blocking `GET` (HTTP/1.1, `Connection: close`): (status, body);
/// status 0 when the request failed.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let attempt = || -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let status = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((status, body.to_string()))
    };
    attempt().unwrap_or((0, String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inbound_mtls_requests() {
        let m = "# HELP request_total x\n\
request_total{direction=\"inbound\",target_addr=\"127.0.0.1:1\",tls=\"true\",client_id=\"c\",authority=\"a\"} 41\n\
request_total{direction=\"inbound\",target_addr=\"127.0.0.1:1\",tls=\"no_identity\",no_tls_reason=\"x\",authority=\"a\"} 5\n\
request_total{direction=\"outbound\",target_addr=\"127.0.0.1:1\",tls=\"true\",server_id=\"s\",authority=\"a\"} 7\n\
response_total{direction=\"inbound\",tls=\"true\"} 41\n";
        assert_eq!(sum_requests(m, "tls=\"true\""), 41);
    }
}
