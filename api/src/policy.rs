//! Inbound authorization as Linkerd's default policies: who may connect to
//! a meshed pod's ports when no `Server` selects them.
//!
//! The six policies, their names and meanings are Linkerd's
//! (linkerd.io/2/reference/authorization-policy, "Default policies";
//! `LINKERD2_PROXY_INBOUND_DEFAULT_POLICY`): a client is *authenticated*
//! when it presented a mesh identity over mTLS, and *in the cluster* when
//! its source address lies in the cluster networks
//! ([`DEFAULT_CLUSTER_NETWORKS`], Linkerd's `clusterNetworks` default).
//! The controller validates the names (install flag, annotation
//! `config.pimesh.io/default-inbound-policy`); the proxy decides with
//! [`DefaultPolicy::authorizes`]. `inbound`: the per-port policy of
//! `Server`s the controller streams to proxies. No I/O lives here.

pub mod inbound;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Linkerd's default `clusterNetworks`: the private IPv4 ranges, CGNAT and
/// IPv6 unique-local addresses (k3s' pod range 10.42.0.0/16 and service
/// range 10.43.0.0/16 are inside).
pub const DEFAULT_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";

/// A default inbound policy (Linkerd's names; as JSON, the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum DefaultPolicy {
    /// Every client (Linkerd's default).
    #[default]
    AllUnauthenticated,
    /// Clients with a mesh identity, from any network.
    AllAuthenticated,
    /// Any client whose address is in the cluster networks.
    ClusterUnauthenticated,
    /// Clients with a mesh identity whose address is in the cluster networks.
    ClusterAuthenticated,
    /// No client.
    Deny,
    /// Every client, as `all-unauthenticated`; what another policy would
    /// refuse is flagged in logs and metrics instead (Linkerd 2.15).
    Audit,
}

impl DefaultPolicy {
    /// Every policy, in Linkerd's order.
    pub const ALL: [DefaultPolicy; 6] = [
        DefaultPolicy::AllUnauthenticated,
        DefaultPolicy::AllAuthenticated,
        DefaultPolicy::ClusterUnauthenticated,
        DefaultPolicy::ClusterAuthenticated,
        DefaultPolicy::Deny,
        DefaultPolicy::Audit,
    ];

    /// Its name as Linkerd writes it (`all-unauthenticated`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterUnauthenticated => "cluster-unauthenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
            DefaultPolicy::Audit => "audit",
        }
    }

    /// Whether a client is let in: `authenticated` when it presented a
    /// mesh identity over mTLS, `source` its address (IPv4-mapped IPv6
    /// addresses count as IPv4), `cluster` the cluster networks.
    pub fn authorizes(self, authenticated: bool, source: IpAddr, cluster: &Networks) -> bool {
        match self {
            DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => true,
            DefaultPolicy::AllAuthenticated => authenticated,
            DefaultPolicy::ClusterUnauthenticated => cluster.contains(source),
            DefaultPolicy::ClusterAuthenticated => authenticated && cluster.contains(source),
            DefaultPolicy::Deny => false,
        }
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<DefaultPolicy> for &'static str {
    fn from(p: DefaultPolicy) -> Self {
        p.as_str()
    }
}

impl TryFrom<String> for DefaultPolicy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> Self {
        c.to_string()
    }
}

impl FromStr for DefaultPolicy {
    type Err = String;

    /// Errors: a name that is not one of the six, with the six listed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DefaultPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = DefaultPolicy::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown default inbound policy {s:?} (one of {})",
                    names.join(", ")
                )
            })
    }
}

/// An IP network in CIDR notation (RFC 4632; RFC 4291 §2.3 for IPv6):
/// `10.42.0.0/16`, `fd00::/8`; a bare address is a /32 or /128. As JSON,
/// that string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network address (host bits are always clear).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits: 0–32 for IPv4, 0–128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 `ip` as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Errors: not an address, a prefix longer than the address (32, 128)
    /// or not a number, or host bits set below the prefix (`10.0.0.1/8`:
    /// Kubernetes and Linkerd refuse it too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR such as 10.42.0.0/16 or fd00::/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        let cidr = Cidr { addr, prefix };
        let network_only = Cidr {
            addr: cidr.network(),
            prefix,
        };
        if network_only.addr != addr {
            return Err(format!(
                "{s:?} has host bits set below its prefix (the network is {network_only})"
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// The address with the bits below the prefix cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

/// A set of networks, written comma-separated (`10.0.0.0/8,fd00::/8`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Networks(pub Vec<Cidr>);

impl Networks {
    /// Whether any of the networks holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }
}

impl fmt::Display for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

impl FromStr for Networks {
    type Err = String;

    /// Errors: the first entry that is not a CIDR ([`Cidr`]'s errors);
    /// an empty list.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let nets = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, _>>()?;
        if nets.is_empty() {
            return Err("no network given (such as 10.0.0.0/8,fd00::/8)".into());
        }
        Ok(Networks(nets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_listed() {
        for p in DefaultPolicy::ALL {
            assert_eq!(p.as_str().parse::<DefaultPolicy>(), Ok(p));
        }
        let e = "allow".parse::<DefaultPolicy>().unwrap_err();
        assert!(
            e.contains("all-unauthenticated") && e.contains("audit"),
            "{e}"
        );
        assert_eq!(DefaultPolicy::default(), DefaultPolicy::AllUnauthenticated);
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.42.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.42.3.4")));
        assert!(!c.contains(ip("10.43.0.1")));
        assert!(c.contains(ip("::ffff:10.42.0.9")), "IPv4-mapped");
        assert!(!c.contains(ip("fd00::1")));
        let c: Cidr = "fd00::/8".parse().unwrap();
        assert!(c.contains(ip("fd12::1")) && !c.contains(ip("fe80::1")));
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains(ip("203.0.113.9")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
        assert_eq!(
            "192.168.1.7".parse::<Cidr>().unwrap().to_string(),
            "192.168.1.7/32"
        );
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/x",
            "ten/8",
            "",
            "fd00::/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let n: Networks = DEFAULT_CLUSTER_NETWORKS.parse().unwrap();
        assert_eq!(n.to_string(), DEFAULT_CLUSTER_NETWORKS);
        assert!("10.0.0.0/8,oops"
            .parse::<Networks>()
            .unwrap_err()
            .contains("oops"));
        assert!(" , ".parse::<Networks>().is_err());
    }

    /// Linkerd's table: the policies × (meshed or not) × (in the cluster
    /// networks or outside).
    #[test]
    fn linkerds_default_policies() {
        let cluster: Networks = DEFAULT_CLUSTER_NETWORKS.parse().unwrap();
        let inside = ip("10.42.0.7");
        let outside = ip("203.0.113.9");
        use DefaultPolicy::*;
        let table = [
            // (policy, meshed inside, meshed outside, plain inside, plain outside)
            (AllUnauthenticated, true, true, true, true),
            (AllAuthenticated, true, true, false, false),
            (ClusterUnauthenticated, true, false, true, false),
            (ClusterAuthenticated, true, false, false, false),
            (Deny, false, false, false, false),
            (Audit, true, true, true, true),
        ];
        for (p, mi, mo, pi, po) in table {
            assert_eq!(
                p.authorizes(true, inside, &cluster),
                mi,
                "{p} meshed inside"
            );
            assert_eq!(
                p.authorizes(true, outside, &cluster),
                mo,
                "{p} meshed outside"
            );
            assert_eq!(
                p.authorizes(false, inside, &cluster),
                pi,
                "{p} plaintext inside"
            );
            assert_eq!(
                p.authorizes(false, outside, &cluster),
                po,
                "{p} plaintext outside"
            );
        }
    }
}
