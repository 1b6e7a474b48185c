//! The proxy's one `Config`, parsed once at start-up from `PIMESH_PROXY_*`
//! environment variables (names: DESIGN.md "Interfaces"), read through the
//! [`Env`] trait so tests pass a map instead of touching the process env.

use pimesh_api::policy::{DefaultPolicy, Networks, DEFAULT_CLUSTER_NETWORKS};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

mod identity;
mod outbound;
mod parse;
#[cfg(test)]
mod tests;

use identity::{identity_config, parse_destinations};
pub use identity::{
    IdentityConfig, MeshDestination, DEFAULT_IDENTITY, DEFAULT_TAP_LISTEN_ADDR,
    DEFAULT_TRUST_ANCHORS_REFRESH,
};
pub use outbound::{Defaults, OutboundConfig, TcpUpstream};
use parse::{parse_addr, Parser};
pub use parse::{parse_duration, parse_grpc_codes, parse_http_classes, Env, Error, OsEnv};

/// Inbound listener: traffic redirected to the pod's own ports.
pub const DEFAULT_INBOUND_LISTEN_ADDR: &str = "0.0.0.0:4143";
/// Outbound listener: transparent target and explicit HTTP proxy.
pub const DEFAULT_OUTBOUND_LISTEN_ADDR: &str = "127.0.0.1:4140";
/// Admin listener: `/metrics`, `/ready`, `/live`, `/shutdown`, log level.
pub const DEFAULT_ADMIN_LISTEN_ADDR: &str = "0.0.0.0:4191";
/// Ports never protocol-detected, as linkerd2-proxy's default
/// (SMTP, MySQL, Galera, PostgreSQL, Redis, Elasticsearch, memcached).
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";
/// Protocol detection timeout, as Linkerd's (then the connection is opaque TCP).
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read to detect the protocol; a longer HTTP/1 request line is opaque.
pub const DEFAULT_DETECT_BUFFER_BYTES: usize = 4096;
/// Limit on an HTTP/1 request head / HTTP/2 header list, in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Limit on open connections per listener (inbound, outbound).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Close a connection that moved no byte for this long (Envoy's HTTP default).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Time a client has to send a whole HTTP/1 request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to establish a TCP connection to the target (linkerd2-proxy's outbound default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time given to open connections to finish after a shutdown request
/// (linkerd2-proxy's `LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD`).
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(120);
/// Data-plane runtime threads.
pub const DEFAULT_THREADS: usize = 1;
/// Log filter, `RUST_LOG` syntax.
pub const DEFAULT_LOG: &str = "warn,pimesh=info";

/// Everything the proxy needs to start, parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `PIMESH_PROXY_INBOUND_LISTEN_ADDR`: where redirected inbound traffic arrives.
    pub inbound_addr: SocketAddr,
    /// `PIMESH_PROXY_OUTBOUND_LISTEN_ADDR`: where the app's outbound traffic arrives.
    pub outbound_addr: SocketAddr,
    /// `PIMESH_PROXY_ADMIN_LISTEN_ADDR`: metrics, probes, shutdown, log level.
    pub admin_addr: SocketAddr,
    /// `PIMESH_PROXY_INBOUND_TARGET`: the app's address when inbound
    /// connections carry no `SO_ORIGINAL_DST` (installs without iptables).
    pub inbound_target: Option<SocketAddr>,
    /// `PIMESH_PROXY_WORKLOAD_LABELS`: constant labels on every metric, so
    /// that series from many pods can be told apart.
    pub workload_labels: Vec<(String, String)>,
    /// `PIMESH_PROXY_OPAQUE_PORTS`: target ports forwarded as TCP without
    /// detection (server-speaks-first protocols would stall detection).
    pub opaque_ports: Vec<u16>,
    /// `PIMESH_PROXY_DETECT_TIMEOUT`: how long to wait for the first bytes.
    pub detect_timeout: Duration,
    /// `PIMESH_PROXY_DETECT_BUFFER_SIZE`: bytes buffered for detection (bytes).
    pub detect_buffer_bytes: usize,
    /// `PIMESH_PROXY_MAX_HEADER_BYTES`: HTTP head limit (bytes); over it
    /// HTTP/1 gets 431 and HTTP/2 a stream reset.
    pub max_header_bytes: usize,
    /// `PIMESH_PROXY_MAX_CONNECTIONS`: open connections per listener; more
    /// are accepted and closed at once, and counted.
    pub max_connections: usize,
    /// `PIMESH_PROXY_IDLE_TIMEOUT`: a connection without traffic is closed.
    pub idle_timeout: Duration,
    /// `PIMESH_PROXY_HEADER_READ_TIMEOUT`: time to receive an HTTP/1 head.
    pub header_read_timeout: Duration,
    /// `PIMESH_PROXY_CONNECT_TIMEOUT`: time to connect to a target.
    pub connect_timeout: Duration,
    /// `PIMESH_PROXY_SHUTDOWN_GRACE_PERIOD`: drain time on shutdown.
    pub shutdown_grace_period: Duration,
    /// `PIMESH_PROXY_THREADS`: data-plane runtime threads (memory first: 1).
    pub threads: usize,
    /// `PIMESH_PROXY_LOG`: log filter, `RUST_LOG` syntax.
    pub log: String,
    /// The mesh identity settings; `None` without a controller (plain
    /// proxy, no mTLS).
    pub identity: Option<IdentityConfig>,
    /// `PIMESH_PROXY_MESH_DESTINATIONS`: destinations reached over mTLS and
    /// the identity each must present, until discovery provides them.
    pub mesh_destinations: Vec<MeshDestination>,
    /// `PIMESH_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY`: inbound ports that
    /// refuse connections without a mesh identity (Linkerd's
    /// `LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY`).
    pub inbound_ports_require_identity: Vec<u16>,
    /// `PIMESH_PROXY_INBOUND_DEFAULT_POLICY`: who may connect to the pod's
    /// ports (Linkerd's default policies and
    /// `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`): `all-unauthenticated`
    /// (default), `all-authenticated`, `cluster-authenticated`,
    /// `cluster-unauthenticated`, `deny`, `audit`.
    pub inbound_default_policy: DefaultPolicy,
    /// `PIMESH_PROXY_POLICY_CLUSTER_NETWORKS`: the networks the `cluster-*`
    /// policies admit (Linkerd's `clusterNetworks`).
    pub cluster_networks: Networks,
    /// `PIMESH_PROXY_POD_LABELS`: the labels of the workload this proxy
    /// fronts (`app=web,tier=front`), which `Server`s' `podSelector`s
    /// match; sent to the controller with the inbound-policy stream.
    pub pod_labels: BTreeMap<String, String>,
    /// `PIMESH_PROXY_POD_PORTS`: the pod's named container ports
    /// (`http=8080,grpc=9090`), which `Server`s naming their port select;
    /// sent to the controller with the inbound-policy stream.
    pub pod_ports: BTreeMap<String, u16>,
    /// Registration, discovery, upstream listeners and resilience defaults.
    pub outbound: OutboundConfig,
}

impl Config {
    /// Parses and validates every `PIMESH_PROXY_*` variable; the first bad
    /// value is returned as an [`Error`] naming the variable.
    ///
    /// # Errors
    ///
    /// The first variable whose value does not parse or is out of range,
    /// or an incomplete identity configuration.
    pub fn from_env(env: &dyn Env) -> Result<Self, Error> {
        let p = Parser { env };
        let identity = identity_config(&p)?;
        let outbound = outbound::outbound_config(&p, identity.as_ref())?;
        Ok(Config {
            inbound_addr: p.parse(
                "PIMESH_PROXY_INBOUND_LISTEN_ADDR",
                DEFAULT_INBOUND_LISTEN_ADDR,
                parse_addr,
            )?,
            outbound_addr: p.parse(
                "PIMESH_PROXY_OUTBOUND_LISTEN_ADDR",
                DEFAULT_OUTBOUND_LISTEN_ADDR,
                parse_addr,
            )?,
            admin_addr: p.parse(
                "PIMESH_PROXY_ADMIN_LISTEN_ADDR",
                DEFAULT_ADMIN_LISTEN_ADDR,
                parse_addr,
            )?,
            inbound_target: p.parse_opt("PIMESH_PROXY_INBOUND_TARGET", parse_addr)?,
            workload_labels: p
                .parse_opt("PIMESH_PROXY_WORKLOAD_LABELS", parse_labels)?
                .unwrap_or_default(),
            opaque_ports: p.parse(
                "PIMESH_PROXY_OPAQUE_PORTS",
                DEFAULT_OPAQUE_PORTS,
                parse_ports,
            )?,
            detect_timeout: p.duration("PIMESH_PROXY_DETECT_TIMEOUT", DEFAULT_DETECT_TIMEOUT)?,
            detect_buffer_bytes: p.number(
                "PIMESH_PROXY_DETECT_BUFFER_SIZE",
                DEFAULT_DETECT_BUFFER_BYTES,
                64..=65536,
            )?,
            max_header_bytes: p.number(
                "PIMESH_PROXY_MAX_HEADER_BYTES",
                DEFAULT_MAX_HEADER_BYTES,
                // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
                8192..=1024 * 1024,
            )?,
            max_connections: p.number(
                "PIMESH_PROXY_MAX_CONNECTIONS",
                DEFAULT_MAX_CONNECTIONS,
                1..=1_000_000,
            )?,
            idle_timeout: p.duration("PIMESH_PROXY_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT)?,
            header_read_timeout: p.duration(
                "PIMESH_PROXY_HEADER_READ_TIMEOUT",
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            connect_timeout: p.duration("PIMESH_PROXY_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)?,
            shutdown_grace_period: p.duration(
                "PIMESH_PROXY_SHUTDOWN_GRACE_PERIOD",
                DEFAULT_SHUTDOWN_GRACE_PERIOD,
            )?,
            threads: p.number("PIMESH_PROXY_THREADS", DEFAULT_THREADS, 1..=64)?,
            log: p.parse("PIMESH_PROXY_LOG", DEFAULT_LOG, |v| {
                tracing_subscriber::EnvFilter::try_new(v)
                    .map(|_| v.to_string())
                    .map_err(|e| e.to_string())
            })?,
            identity,
            outbound,
            mesh_destinations: p
                .parse_opt("PIMESH_PROXY_MESH_DESTINATIONS", parse_destinations)?
                .unwrap_or_default(),
            inbound_ports_require_identity: p
                .parse_opt("PIMESH_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY", parse_ports)?
                .unwrap_or_default(),
            inbound_default_policy: p.parse(
                "PIMESH_PROXY_INBOUND_DEFAULT_POLICY",
                DefaultPolicy::default().as_str(),
                str::parse,
            )?,
            cluster_networks: p.parse(
                "PIMESH_PROXY_POLICY_CLUSTER_NETWORKS",
                DEFAULT_CLUSTER_NETWORKS,
                str::parse,
            )?,
            pod_labels: p
                .parse_opt(
                    "PIMESH_PROXY_POD_LABELS",
                    pimesh_api::policy::inbound::parse_labels,
                )?
                .unwrap_or_default(),
            pod_ports: p
                .parse_opt(
                    "PIMESH_PROXY_POD_PORTS",
                    pimesh_api::policy::inbound::parse_ports,
                )?
                .unwrap_or_default(),
        })
        .and_then(|c| {
            let needs_identity =
                !c.mesh_destinations.is_empty() || !c.inbound_ports_require_identity.is_empty();
            if needs_identity && c.identity.is_none() {
                let (name, value) = if c.mesh_destinations.is_empty() {
                    ("PIMESH_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY", "")
                } else {
                    ("PIMESH_PROXY_MESH_DESTINATIONS", "")
                };
                return Err(Error {
                    name,
                    value: env.get(name).unwrap_or_else(|| value.into()),
                    reason: "needs PIMESH_PROXY_CONTROLLER_ADDR (mTLS needs an identity)".into(),
                });
            }
            Ok(c)
        })
    }

    /// Whether inbound connections to `port` must carry a mesh identity.
    pub fn requires_identity(&self, port: u16) -> bool {
        self.inbound_ports_require_identity
            .binary_search(&port)
            .is_ok()
    }

    /// The mTLS settings of `addr`, if it is a mesh destination.
    pub fn mesh_destination(&self, addr: SocketAddr) -> Option<&MeshDestination> {
        self.mesh_destinations.iter().find(|d| d.addr == addr)
    }

    /// Whether connections to `port` skip protocol detection.
    pub fn is_opaque_port(&self, port: u16) -> bool {
        self.opaque_ports.binary_search(&port).is_ok()
    }
}

impl fmt::Display for Config {
    /// One line for the start-up log: the effective configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inbound={} outbound={} admin={} inbound_target={} opaque_ports={:?} \
             detect_timeout={:?} detect_buffer={}B max_header={}B max_connections={} \
             idle_timeout={:?} header_read_timeout={:?} connect_timeout={:?} \
             shutdown_grace_period={:?} threads={} workload_labels={:?} \
             inbound_default_policy={} cluster_networks={} pod_labels={:?} pod_ports={:?}",
            self.inbound_addr,
            self.outbound_addr,
            self.admin_addr,
            self.inbound_target
                .map_or_else(|| "original-destination".into(), |a| a.to_string()),
            self.opaque_ports,
            self.detect_timeout,
            self.detect_buffer_bytes,
            self.max_header_bytes,
            self.max_connections,
            self.idle_timeout,
            self.header_read_timeout,
            self.connect_timeout,
            self.shutdown_grace_period,
            self.threads,
            self.workload_labels,
            self.inbound_default_policy,
            self.cluster_networks,
            self.pod_labels,
            self.pod_ports,
        )?;
        if let Some(id) = &self.identity {
            write!(
                f,
                " identity={} trust_domain={} controller={} ({}) mesh_destinations={} inbound_ports_require_identity={:?}",
                id.identity,
                id.trust_domain,
                id.controller_addr,
                id.controller_identity,
                self.mesh_destinations.len(),
                self.inbound_ports_require_identity,
            )?;
            let o = &self.outbound;
            write!(
                f,
                " service={:?} advertise_ip={:?} tcp_upstreams={} discovery_wait={:?} \
                 retry_limit={} timeout={:?} per_try_timeout={:?} failure_accrual={}",
                o.service,
                o.advertise_ip,
                o.tcp_upstreams.len(),
                o.discovery_wait,
                o.defaults.retry_limit,
                o.defaults.timeout,
                o.defaults.per_try_timeout,
                o.defaults.failure_accrual_consecutive,
            )?;
        }
        Ok(())
    }
}

/// `25,587,3306` and ranges `8000-8010` (as Linkerd's opaque-ports
/// annotation); sorted and deduplicated.
fn parse_ports(v: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let port = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(format!("{s:?} is not a port (1-65535)")),
            }
        };
        match item.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("range {item:?} is reversed"));
                }
                ports.extend(lo..=hi);
            }
            None => ports.push(port(item)?),
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// `namespace=shop,deployment=web,pod=web-5f7c` → label pairs. Names follow
/// Prometheus' `[a-zA-Z_][a-zA-Z0-9_]*`; values may not hold `"`, `\` or
/// newlines (they go into the exposition format as they are).
fn parse_labels(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels: Vec<(String, String)> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not name=value"))?;
        let (name, value) = (name.trim(), value.trim());
        let valid_name = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if name.is_empty() || !valid_name {
            return Err(format!("{name:?} is not a Prometheus label name"));
        }
        if value.contains(['"', '\\', '\n']) {
            return Err(format!(
                "value of {name:?} holds a quote, backslash or newline"
            ));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name:?} given twice"));
        }
        labels.push((name.to_string(), value.to_string()));
    }
    Ok(labels)
}
