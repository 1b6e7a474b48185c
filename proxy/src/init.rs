//! `pimesh-proxy init`: programs the current network namespace so that
//! inbound TCP goes to the proxy's inbound port and outbound TCP to its
//! outbound port — except the proxy's own traffic (by uid), loopback, and
//! the configured ports and subnets — as Linkerd's proxy-init does. Works
//! with both iptables backends found on Pi clusters (legacy x_tables and
//! nf_tables), picks the one the node uses, is idempotent, and `--remove`
//! undoes it. The same rules go to ip6tables whenever the namespace has
//! IPv6 (a pod with an IPv6 address but no rules would bypass the mesh),
//! unless `--ipv6=false`. Needs `iptables-{legacy,nft}-save` and `-restore`
//! (and `ip6tables-…` with IPv6) on PATH (Debian's `iptables` package or
//! k3s's bundled binaries) and NET_ADMIN.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// Chain holding the inbound (PREROUTING) rules.
pub const INBOUND_CHAIN: &str = "PIMESH_INBOUND";
/// Chain holding the outbound (OUTPUT) rules.
pub const OUTBOUND_CHAIN: &str = "PIMESH_OUTBOUND";

/// What `init` programs (flags with `PIMESH_INIT_*` fallbacks; Linkerd's
/// proxy-init names).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct InitConfig {
    /// Undo: remove pimesh's chains and the jumps to them.
    #[arg(long)]
    pub remove: bool,
    /// The proxy's user id: its own connections are never redirected.
    #[arg(long, env = "PIMESH_INIT_PROXY_UID", default_value_t = 2102)]
    pub proxy_uid: u32,
    /// Where inbound TCP is redirected (the proxy's inbound listener).
    #[arg(long, env = "PIMESH_INIT_INCOMING_PROXY_PORT", default_value_t = 4143)]
    pub incoming_proxy_port: u16,
    /// Where outbound TCP is redirected (the proxy's outbound listener).
    #[arg(long, env = "PIMESH_INIT_OUTGOING_PROXY_PORT", default_value_t = 4140)]
    pub outgoing_proxy_port: u16,
    /// Inbound ports left alone: list and ranges (`4190,4191,9000-9010`).
    #[arg(long, env = "PIMESH_INIT_INBOUND_PORTS_TO_IGNORE", default_value = "4190,4191", value_parser = parse_port_list)]
    pub inbound_ports_to_ignore: PortList,
    /// Outbound destination ports left alone (e.g. the controller's 8086
    /// when it runs unmeshed).
    #[arg(long, env = "PIMESH_INIT_OUTBOUND_PORTS_TO_IGNORE", default_value = "", value_parser = parse_port_list)]
    pub outbound_ports_to_ignore: PortList,
    /// Outbound destination subnets left alone, IPv4 or IPv6 CIDRs
    /// (`10.0.0.0/8,192.168.1.10/32,fd00::/64`); each goes to its family's rules.
    #[arg(long, env = "PIMESH_INIT_SUBNETS_TO_IGNORE", default_value = "", value_parser = parse_subnets)]
    pub subnets_to_ignore: SubnetList,
    /// Also program ip6tables (same chains and rules) when the namespace
    /// has IPv6; `--ipv6=false` leaves IPv6 alone (Linkerd's `--ipv6`).
    #[arg(long, env = "PIMESH_INIT_IPV6", default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub ipv6: bool,
    /// Which iptables backend: `auto` uses the one that already holds the
    /// node's rules (nft when neither does), as k3s's iptables wrapper does.
    #[arg(long, visible_alias = "backend", env = "PIMESH_INIT_IPTABLES_MODE", default_value = "auto", value_parser = ["auto", "legacy", "nft"])]
    pub iptables_mode: String,
}

/// Ports and port ranges, as iptables `multiport` writes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortList(pub Vec<(u16, u16)>);

/// IPv4 and IPv6 networks `addr/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetList(pub Vec<(IpAddr, u8)>);

fn parse_port_list(v: &str) -> Result<PortList, String> {
    let port = |s: &str| match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port (1-65535)")),
    };
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let range = match item.split_once('-') {
            Some((lo, hi)) => (port(lo)?, port(hi)?),
            None => (port(item)?, port(item)?),
        };
        if range.0 > range.1 {
            return Err(format!("range {item:?} is reversed"));
        }
        out.push(range);
    }
    Ok(PortList(out))
}

fn parse_subnets(v: &str) -> Result<SubnetList, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, prefix) = match item.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (item, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{item:?} is not an IPv4 or IPv6 CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix.map(str::parse) {
            None => max,
            Some(Ok(p)) if p <= max => p,
            _ => return Err(format!("{item:?} has a bad prefix length")),
        };
        out.push((addr, prefix));
    }
    Ok(SubnetList(out))
}

impl PortList {
    /// `multiport` syntax, at most 15 ports per rule (its limit; a range
    /// counts as two).
    fn chunks(&self) -> Vec<String> {
        let mut chunks = Vec::new();
        let (mut cur, mut used) = (Vec::new(), 0);
        for &(lo, hi) in &self.0 {
            let cost = if lo == hi { 1 } else { 2 };
            if used + cost > 15 {
                chunks.push(cur.join(","));
                (cur, used) = (Vec::new(), 0);
            }
            cur.push(if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}:{hi}")
            });
            used += cost;
        }
        if !cur.is_empty() {
            chunks.push(cur.join(","));
        }
        chunks
    }
}

/// Why `init` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `iptables-legacy-*` nor `iptables-nft-*` works here.
    #[error("no usable iptables backend: neither iptables-legacy-save nor iptables-nft-save runs (install iptables, or use k3s's bundled binaries on PATH)")]
    NoBackend,
    /// The requested backend does not work here.
    #[error("iptables backend {0} is not usable here")]
    Backend(&'static str, #[source] std::io::Error),
    /// `iptables-*-restore` refused the rules.
    #[error("{0} failed: {1}")]
    Restore(String, String),
    /// The namespace has IPv6 but the backend's ip6tables does not work.
    #[error("this namespace has IPv6 but ip6tables-{0}-save does not run (install ip6tables, or pass --ipv6=false to leave IPv6 traffic unmeshed)")]
    Ipv6(&'static str, #[source] std::io::Error),
}

/// An IP family: which of iptables / ip6tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `iptables-*`.
    V4,
    /// `ip6tables-*`.
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// Whether this network namespace has IPv6 (`/proc/net/if_inet6` is
/// per-namespace and absent when the kernel runs without IPv6).
pub fn has_ipv6() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

/// An iptables backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// x_tables (`iptables-legacy`): older Raspberry Pi OS, k3s on some nodes.
    Legacy,
    /// nf_tables (`iptables-nft`): Debian 11+, Ubuntu 21+, Raspberry Pi OS bookworm.
    Nft,
}

impl Backend {
    /// The backend's name, as in its binaries.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }

    fn save(self, family: Family, table: Option<&str>) -> std::io::Result<String> {
        let mut c = Command::new(format!("{}-{}-save", family.tool(), self.name()));
        if let Some(t) = table {
            c.args(["-t", t]);
        }
        let out = c.stderr(Stdio::piped()).output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn restore(self, family: Family, rules: &str) -> Result<(), Error> {
        use std::io::Write;
        let bin = format!("{}-{}-restore", family.tool(), self.name());
        let mut child = Command::new(&bin)
            .args(["--noflush", "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Restore(bin.clone(), e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| Error::Restore(bin.clone(), e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Restore(bin.clone(), e.to_string()))?;
        if !out.status.success() {
            return Err(Error::Restore(
                bin,
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }
}

/// Picks the backend: the requested one if it works; for `auto`, the one
/// holding more rules (the node's kube-proxy/flannel/CNI wrote them), nft
/// on a tie.
///
/// # Errors
///
/// [`Error::NoBackend`] when neither backend's `*-save` runs,
/// [`Error::Backend`] when the requested one does not.
pub fn backend(mode: &str) -> Result<Backend, Error> {
    let usable = |b: Backend| {
        b.save(Family::V4, None)
            .map(|rules| rules.lines().filter(|l| l.starts_with("-A")).count())
    };
    match mode {
        "legacy" => usable(Backend::Legacy)
            .map(|_| Backend::Legacy)
            .map_err(|e| Error::Backend("legacy", e)),
        "nft" => usable(Backend::Nft)
            .map(|_| Backend::Nft)
            .map_err(|e| Error::Backend("nft", e)),
        _ => match (usable(Backend::Legacy), usable(Backend::Nft)) {
            (Ok(legacy), Ok(nft)) if legacy > nft => Ok(Backend::Legacy),
            (_, Ok(_)) => Ok(Backend::Nft),
            (Ok(_), Err(_)) => Ok(Backend::Legacy),
            (Err(_), Err(_)) => Err(Error::NoBackend),
        },
    }
}

/// The `iptables-restore --noflush` input (`ip6tables-restore` for
/// [`Family::V6`]) that installs the rules. Declared chains are flushed by
/// restore, so running it again yields the same rules once; the jumps are
/// added only when `nat` (the current `-t nat` save output) does not have
/// them yet. Subnets of the other family are left out.
pub fn install_rules(cfg: &InitConfig, family: Family, nat: &str) -> String {
    let mut r = String::from("*nat\n");
    let _ = writeln!(r, ":{INBOUND_CHAIN} - [0:0]");
    let _ = writeln!(r, ":{OUTBOUND_CHAIN} - [0:0]");
    for ports in cfg.inbound_ports_to_ignore.chunks() {
        let _ = writeln!(r, "-A {INBOUND_CHAIN} -p tcp -m multiport --dports {ports} -m comment --comment \"pimesh-init/ignore-inbound-ports\" -j RETURN");
    }
    let _ = writeln!(r, "-A {INBOUND_CHAIN} -p tcp -m comment --comment \"pimesh-init/redirect-inbound\" -j REDIRECT --to-ports {}", cfg.incoming_proxy_port);
    let _ = writeln!(r, "-A {OUTBOUND_CHAIN} -m owner --uid-owner {} -m comment --comment \"pimesh-init/ignore-proxy-uid\" -j RETURN", cfg.proxy_uid);
    let _ = writeln!(
        r,
        "-A {OUTBOUND_CHAIN} -o lo -m comment --comment \"pimesh-init/ignore-loopback\" -j RETURN"
    );
    for ports in cfg.outbound_ports_to_ignore.chunks() {
        let _ = writeln!(r, "-A {OUTBOUND_CHAIN} -p tcp -m multiport --dports {ports} -m comment --comment \"pimesh-init/ignore-outbound-ports\" -j RETURN");
    }
    let ours = |net: &IpAddr| net.is_ipv4() == (family == Family::V4);
    for (net, prefix) in cfg.subnets_to_ignore.0.iter().filter(|(n, _)| ours(n)) {
        let _ = writeln!(r, "-A {OUTBOUND_CHAIN} -d {net}/{prefix} -m comment --comment \"pimesh-init/ignore-subnets\" -j RETURN");
    }
    let _ = writeln!(r, "-A {OUTBOUND_CHAIN} -p tcp -m comment --comment \"pimesh-init/redirect-outbound\" -j REDIRECT --to-ports {}", cfg.outgoing_proxy_port);
    if !has_jump(nat, "PREROUTING", INBOUND_CHAIN) {
        let _ = writeln!(
            r,
            "-A PREROUTING -m comment --comment \"pimesh-init/inbound\" -j {INBOUND_CHAIN}"
        );
    }
    if !has_jump(nat, "OUTPUT", OUTBOUND_CHAIN) {
        let _ = writeln!(
            r,
            "-A OUTPUT -m comment --comment \"pimesh-init/outbound\" -j {OUTBOUND_CHAIN}"
        );
    }
    r.push_str("COMMIT\n");
    r
}

/// The restore input that removes every jump to pimesh's chains and the
/// chains themselves; `None` when there is nothing to remove.
pub fn remove_rules(nat: &str) -> Option<String> {
    let mut r = String::from("*nat\n");
    for line in nat.lines() {
        let jumps = line.ends_with(&format!("-j {INBOUND_CHAIN}"))
            || line.ends_with(&format!("-j {OUTBOUND_CHAIN}"));
        if let (Some(rule), true) = (line.strip_prefix("-A "), jumps) {
            let _ = writeln!(r, "-D {rule}");
        }
    }
    let mut any = r.len() > "*nat\n".len();
    for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
        if nat.lines().any(|l| l.starts_with(&format!(":{chain} "))) {
            let _ = writeln!(r, "-F {chain}\n-X {chain}");
            any = true;
        }
    }
    r.push_str("COMMIT\n");
    any.then_some(r)
}

fn has_jump(nat: &str, from: &str, chain: &str) -> bool {
    nat.lines()
        .any(|l| l.starts_with(&format!("-A {from} ")) && l.ends_with(&format!("-j {chain}")))
}

/// Installs (or with `--remove` removes) the rules, IPv4 then IPv6 (see
/// [`InitConfig::ipv6`]); returns a one-line summary.
///
/// # Errors
///
/// No usable backend (see [`backend`]), [`Error::Ipv6`] when the namespace
/// has IPv6 but ip6tables does not run, [`Error::Restore`] when
/// `*-restore` refuses the rules.
pub fn run(cfg: &InitConfig) -> Result<String, Error> {
    let backend = backend(&cfg.iptables_mode)?;
    let name = backend.name();
    let mut families = vec![Family::V4];
    if cfg.ipv6 && has_ipv6() {
        // Checked before touching anything: all or nothing.
        backend
            .save(Family::V6, Some("nat"))
            .map_err(|e| Error::Ipv6(name, e))?;
        families.push(Family::V6);
    }
    let tools = families
        .iter()
        .map(|f| format!("{}-{name}", f.tool()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut removed = false;
    for &family in &families {
        let nat = backend
            .save(family, Some("nat"))
            .map_err(|e| Error::Backend(name, e))?;
        if cfg.remove {
            if let Some(rules) = remove_rules(&nat) {
                backend.restore(family, &rules)?;
                removed = true;
            }
        } else {
            backend.restore(family, &install_rules(cfg, family, &nat))?;
        }
    }
    if cfg.remove {
        return Ok(if removed {
            format!("removed pimesh's rules ({tools})")
        } else {
            format!("no pimesh rules to remove ({tools})")
        });
    }
    Ok(format!(
        "installed pimesh's rules ({tools}): inbound → :{}, outbound → :{}, proxy uid {} excluded",
        cfg.incoming_proxy_port, cfg.outgoing_proxy_port, cfg.proxy_uid
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> InitConfig {
        InitConfig {
            remove: false,
            proxy_uid: 2102,
            incoming_proxy_port: 4143,
            outgoing_proxy_port: 4140,
            inbound_ports_to_ignore: parse_port_list("4190,4191").unwrap(),
            outbound_ports_to_ignore: parse_port_list("8086,9000-9010").unwrap(),
            subnets_to_ignore: parse_subnets("10.43.0.0/16,fd00:10:43::/112").unwrap(),
            iptables_mode: "auto".into(),
            ipv6: true,
        }
    }

    #[test]
    fn lists_parse_and_refuse_bad_values() {
        assert_eq!(
            parse_port_list("80, 8000-8010").unwrap().chunks(),
            ["80,8000:8010"]
        );
        assert!(parse_port_list("80,abc").is_err());
        assert!(parse_port_list("0").is_err());
        assert!(parse_port_list("9-1").is_err());
        assert!(parse_subnets("10.0.0.0/33").is_err());
        assert!(parse_subnets("fe80::/129").is_err());
        assert!(parse_subnets("10.0.0.0/x").is_err());
        assert!(parse_subnets("fe80::zz/64").is_err());
        assert_eq!(
            parse_subnets("10.0.0.1, fd00::/64").unwrap().0,
            [
                ("10.0.0.1".parse().unwrap(), 32),
                ("fd00::".parse().unwrap(), 64)
            ]
        );
        let many = parse_port_list(
            &(1..=20)
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .unwrap();
        assert_eq!(many.chunks().len(), 2, "multiport takes 15 ports per rule");
    }

    #[test]
    fn install_adds_jumps_once() {
        let fresh = install_rules(
            &cfg(),
            Family::V4,
            "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n",
        );
        assert!(fresh.contains(
            "-A PREROUTING -m comment --comment \"pimesh-init/inbound\" -j PIMESH_INBOUND"
        ));
        assert!(fresh.contains("--dports 8086,9000:9010"));
        assert!(fresh.contains("-d 10.43.0.0/16"));
        assert!(!fresh.contains("fd00"), "IPv6 subnets stay out of iptables");
        let v6 = install_rules(&cfg(), Family::V6, "");
        assert!(v6.contains("-d fd00:10:43::/112") && !v6.contains("10.43.0.0"));
        assert!(v6.contains("-o lo ") && v6.contains("--to-ports 4140"));
        let again = install_rules(
            &cfg(),
            Family::V4,
            "-A PREROUTING -m comment --comment \"pimesh-init/inbound\" -j PIMESH_INBOUND\n-A OUTPUT -m comment --comment \"pimesh-init/outbound\" -j PIMESH_OUTBOUND\n",
        );
        assert!(!again.contains("-A PREROUTING"));
        assert!(!again.contains("-A OUTPUT "));
    }

    #[test]
    fn remove_deletes_jumps_and_chains() {
        let nat = ":PIMESH_INBOUND - [0:0]\n:PIMESH_OUTBOUND - [0:0]\n-A PREROUTING -m comment --comment \"pimesh-init/inbound\" -j PIMESH_INBOUND\n-A OUTPUT -j PIMESH_OUTBOUND\n-A OUTPUT -j KUBE-SERVICES\n";
        let r = remove_rules(nat).unwrap();
        assert!(r.contains(
            "-D PREROUTING -m comment --comment \"pimesh-init/inbound\" -j PIMESH_INBOUND"
        ));
        assert!(r.contains("-D OUTPUT -j PIMESH_OUTBOUND"));
        assert!(!r.contains("KUBE-SERVICES"));
        assert!(r.contains("-X PIMESH_INBOUND"));
        assert_eq!(remove_rules(":PREROUTING ACCEPT [0:0]\n"), None);
    }
}
