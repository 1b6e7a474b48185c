//! The inbound policy the controller streams to a proxy (as Linkerd's
//! `InboundServer` of `linkerd2-proxy-api` `inbound.proto`): per port, the
//! `Server` that selects it, its protocol, the authorizations that
//! admit clients to it, resolved to what the proxy checks (mesh identity
//! patterns, source networks), and its routes ([`InboundRoute`]: per-route
//! policy). A port no `Server` selects gets the
//! proxy's default policy ([`InboundServer::default_policy`]).
//!
//! Wire: `GET` [`INBOUND_POLICY_PATH`]`?labels=K%3DV,…` (percent-encoded) on the
//! proxy port (client certificate required; the namespace is the
//! certificate's), answered by an `application/x-ndjson` stream of
//! [`PolicyEvent`]s: the whole [`InboundPolicy`] first and after every
//! change, a `BOOKMARK` at least every
//! [`crate::discovery::BOOKMARK_INTERVAL_SECS`] otherwise.

use super::{Cidr, DefaultPolicy, Networks};
use crate::discovery::route::RouteMatch;
use crate::discovery::EventType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The inbound-policy watch (see the module doc).
pub const INBOUND_POLICY_PATH: &str = "/v1/policy/inbound";

/// The `srv_group`/`authz_group` label of resources of pimesh's policy API.
pub const POLICY_GROUP: &str = "policy.pimesh.io";

/// The `route_group` label of Gateway API routes (`HTTPRoute`, `GRPCRoute`).
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// One line of the inbound-policy stream (the shape of a discovery
/// [`crate::discovery::WatchEvent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEvent {
    /// `ADDED` (first state), `MODIFIED` (a new state) or `BOOKMARK`
    /// (nothing changed; a keep-alive).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The controller's policy revision (monotonic while it runs).
    pub revision: u64,
    /// The whole policy; absent on `BOOKMARK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<InboundPolicy>,
}

/// Every port of one proxy that a `Server` selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundPolicy {
    /// The selected ports, by port number; other ports get the default
    /// policy.
    pub servers: BTreeMap<u16, InboundServer>,
}

/// What selected a port: a `Server`, or the default policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// A `Server` resource (`srv_kind="server"`).
    Server,
    /// No Server: the default policy (`srv_kind="default"`, as Linkerd's
    /// default servers).
    Default,
}

/// How the proxy reads connections to the port (a `Server`'s
/// `proxyProtocol`, Linkerd's values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// Detect HTTP/1, HTTP/2 and TLS.
    #[default]
    #[serde(rename = "unknown")]
    Unknown,
    /// HTTP/1.x.
    #[serde(rename = "HTTP/1")]
    Http1,
    /// HTTP/2.
    #[serde(rename = "HTTP/2")]
    Http2,
    /// gRPC over HTTP/2.
    #[serde(rename = "gRPC")]
    Grpc,
    /// Opaque TCP, forwarded as bytes.
    #[serde(rename = "opaque")]
    Opaque,
    /// The app's own TLS.
    #[serde(rename = "TLS")]
    Tls,
}

/// The policy of one port (Linkerd's `InboundServer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundServer {
    /// The Server's name (`srv_name`), or the default policy's name.
    pub name: String,
    /// What selected the port (`srv_kind`).
    pub kind: ServerKind,
    /// How connections to the port are read.
    #[serde(default)]
    pub protocol: Protocol,
    /// The authorizations, in order: a client that passes one is admitted
    /// under its name.
    #[serde(default)]
    pub authorizations: Vec<Authorization>,
    /// Who is admitted when no authorization admits (a Server's
    /// `accessPolicy`, `deny` unless set; the default policy itself for a
    /// port no Server selects).
    pub access_policy: DefaultPolicy,
    /// The Server's local rate limit (its `HTTPLocalRateLimitPolicy`),
    /// checked per HTTP request after authorization; absent for no limit
    /// (and from controllers that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The Server's routes (`HTTPRoute`s and `GRPCRoute`s whose parentRef
    /// is the Server), oldest first (`creationTimestamp`, then name: the
    /// tie-break of equal matches). Empty: Linkerd's default route, every
    /// request decided by the Server alone; otherwise a request no route
    /// matches is refused (404) and a matching one is decided by its
    /// route's authorizations, then the Server's (as linkerd2-proxy's
    /// inbound `HttpRoute`s, which carry the Server's authorizations too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<InboundRoute>,
}

/// A route of a Server (Linkerd's inbound `HttpRoute` of
/// `linkerd2-proxy-api` `inbound.proto`): which requests, and who else
/// may send them. Backends, timeouts and retries of an inbound route are
/// not used (Linkerd ignores them too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundRoute {
    /// The route's name (`route_name`; the Server's namespace).
    pub name: String,
    /// Its kind (`route_kind`).
    pub kind: RouteKind,
    /// Requests matching any of these take the route (every rule's
    /// matches, a `GRPCRoute`'s as request paths); empty: every request
    /// (a route without rules, Gateway API's default match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// The AuthorizationPolicies targeting the route, resolved, by name;
    /// checked before the Server's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorizations: Vec<Authorization>,
}

/// The kind of an inbound route (`route_kind`, with `route_group`
/// [`GATEWAY_GROUP`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteKind {
    /// A Gateway API `HTTPRoute`.
    #[serde(rename = "HTTPRoute")]
    Http,
    /// A Gateway API `GRPCRoute`.
    #[serde(rename = "GRPCRoute")]
    Grpc,
}

impl RouteKind {
    /// The `route_kind` label: `HTTPRoute` or `GRPCRoute`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }
}

/// A Server's local rate limit, resolved (Linkerd's
/// `HttpLocalRateLimit` of `linkerd2-proxy-api` `inbound.proto`): rates
/// in requests per second, each also the burst a fresh bucket admits at
/// once (GCRA, as linkerd2-proxy's `governor::Quota::per_second`). A rate
/// of 0 means no limit (as linkerd2-proxy reads a zero
/// `requests_per_second`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// The HTTPLocalRateLimitPolicy's name (`ratelimit_name`).
    pub name: String,
    /// The limit of all requests to the Server together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// The limit of each client identity; clients without one share one
    /// bucket (as linkerd2-proxy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<u32>,
    /// Limits replacing `identity` for the clients they name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RateLimitOverride>,
}

/// The limit of chosen clients (an `overrides` entry, its `clientRefs`
/// resolved to mesh identities).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitOverride {
    /// Requests per second, shared by the clients.
    pub requests_per_second: u32,
    /// The clients' mesh identities (DNS-style names).
    pub identities: Vec<String>,
}

/// One authorization of a Server (an `AuthorizationPolicy`, resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// The AuthorizationPolicy's name (`authz_name`).
    pub name: String,
    /// Every one must admit the client (the policy's
    /// `requiredAuthenticationRefs`, resolved); none admits every client.
    pub authentications: Vec<Authentication>,
}

/// One required authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Authentication {
    /// The client presented a mesh identity over mTLS matching one of the
    /// patterns (a `MeshTLSAuthentication`, or a `ServiceAccount`):
    /// `sa.ns.serviceaccount.identity.pimesh.TRUST_DOMAIN` exactly,
    /// `*.SUFFIX` for every identity ending in `.SUFFIX`, or `*` for any.
    MeshTls {
        /// The identity patterns.
        identities: Vec<String>,
    },
    /// The client's address is in one of the networks (a
    /// `NetworkAuthentication`).
    Network {
        /// The networks.
        networks: Vec<NetworkMatch>,
    },
}

/// A network less its exceptions (a `NetworkAuthentication` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMatch {
    /// The network, CIDR notation.
    pub cidr: Cidr,
    /// Networks inside it that do not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Cidr>,
}

/// The client of one inbound connection, as policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// Its mesh identity's DNS-style name
    /// (`sa.ns.serviceaccount.identity.pimesh.TRUST_DOMAIN`), when it
    /// presented one over mTLS.
    pub identity: Option<&'a str>,
    /// Its address.
    pub source: IpAddr,
}

/// The decision on a client: which authorization admitted it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// An authorization admitted it.
    Authorized(&'a Authorization),
    /// No authorization did; the access policy did.
    AccessPolicy,
    /// Refused.
    Denied,
}

impl InboundServer {
    /// The server of a port no `Server` selects: named and decided by the
    /// default `policy` (as Linkerd's default servers).
    pub fn default_policy(policy: DefaultPolicy) -> InboundServer {
        InboundServer {
            name: policy.as_str().to_string(),
            kind: ServerKind::Default,
            protocol: Protocol::Unknown,
            authorizations: Vec::new(),
            access_policy: policy,
            rate_limit: None,
            routes: Vec::new(),
        }
    }

    /// Decides for `client`: the first authorization all of whose
    /// authentications admit it, else the access policy (`cluster` the
    /// cluster networks of the `cluster-*` policies).
    pub fn decide(&self, client: Client<'_>, cluster: &Networks) -> Verdict<'_> {
        self.decide_route(&[], client, cluster)
    }

    /// Decides for `client` on a route whose own authorizations are
    /// `route`: those first, then the Server's, then the access policy.
    pub fn decide_route<'a>(
        &'a self,
        route: &'a [Authorization],
        client: Client<'_>,
        cluster: &Networks,
    ) -> Verdict<'a> {
        let mut all = route.iter().chain(&self.authorizations);
        if let Some(a) = all.find(|a| a.admits(client)) {
            return Verdict::Authorized(a);
        }
        if self
            .access_policy
            .authorizes(client.identity.is_some(), client.source, cluster)
        {
            Verdict::AccessPolicy
        } else {
            Verdict::Denied
        }
    }
}

impl Authorization {
    /// Whether every authentication admits `client`.
    pub fn admits(&self, client: Client<'_>) -> bool {
        self.authentications.iter().all(|a| a.admits(client))
    }
}

impl Authentication {
    /// Whether `client` passes.
    pub fn admits(&self, client: Client<'_>) -> bool {
        match self {
            Authentication::MeshTls { identities } => client
                .identity
                .is_some_and(|id| identities.iter().any(|p| identity_matches(p, id))),
            Authentication::Network { networks } => {
                networks.iter().any(|n| n.contains(client.source))
            }
        }
    }
}

impl NetworkMatch {
    /// Whether `ip` is in the network and in none of its exceptions.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// Whether the mesh identity `id` matches `pattern`: `*` matches any,
/// `*.SUFFIX` any identity ending in `.SUFFIX` (Linkerd's
/// `MeshTLSAuthentication` identities), anything else only itself.
pub fn identity_matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) if suffix.starts_with('.') => id.len() > suffix.len() && id.ends_with(suffix),
        _ => pattern == id,
    }
}

/// `K=V,K=V` (label values need no escaping: Kubernetes label keys and
/// values hold no `,` or `=`), for the `labels` query parameter.
pub fn labels_to_string(labels: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

/// Parses `K=V,K=V` (spaces around entries ignored, empty entries skipped).
///
/// # Errors
///
/// The first entry without `=` or with an empty key, or a key given twice.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (k, v) = entry
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| format!("{entry:?} is not KEY=VALUE"))?;
        if out
            .insert(k.trim().to_string(), v.trim().to_string())
            .is_some()
        {
            return Err(format!("label {:?} given twice", k.trim()));
        }
    }
    Ok(out)
}

/// Parses a pod's named ports, `NAME=PORT,…` (`http=8080,grpc=9090`):
/// the `containerPort`s by `name` that a Server's named `port` selects, as
/// Linkerd's policy controller resolves them (`PIMESH_PROXY_POD_PORTS`,
/// the stream's `ports` parameter).
///
/// # Errors
///
/// As [`parse_labels`], and a port that is not 1–65535.
pub fn parse_ports(s: &str) -> Result<BTreeMap<String, u16>, String> {
    parse_labels(s)?
        .into_iter()
        .map(|(name, port)| match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok((name, p)),
            _ => Err(format!("{name}={port}: not a port (1-65535)")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports() {
        let p = parse_ports("http=8080, grpc=9090").unwrap();
        assert_eq!(p.get("http"), Some(&8080));
        assert_eq!(p.get("grpc"), Some(&9090));
        assert!(parse_ports("").unwrap().is_empty());
        assert!(parse_ports("http=0").is_err());
        assert!(parse_ports("http=65536").is_err());
        assert!(parse_ports("http").is_err());
        assert!(parse_ports("http=1,http=2").is_err());
    }

    const WEB: &str = "web.shop.serviceaccount.identity.pimesh.cluster.local";
    const DB: &str = "db.shop.serviceaccount.identity.pimesh.cluster.local";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn identity_patterns() {
        assert!(identity_matches(WEB, WEB));
        assert!(!identity_matches(WEB, DB));
        assert!(identity_matches("*", DB));
        let ns = "*.shop.serviceaccount.identity.pimesh.cluster.local";
        assert!(identity_matches(ns, WEB) && identity_matches(ns, DB));
        assert!(!identity_matches(
            ns,
            "web.other.serviceaccount.identity.pimesh.cluster.local"
        ));
        assert!(!identity_matches(ns, &ns[2..]), "the suffix alone");
        assert!(!identity_matches("*web", "xweb"), "'*' only as a label");
    }

    #[test]
    fn a_server_admits_by_authorization_then_access_policy() {
        let cluster: Networks = super::super::DEFAULT_CLUSTER_NETWORKS.parse().unwrap();
        let srv = InboundServer {
            name: "web-http".into(),
            kind: ServerKind::Server,
            protocol: Protocol::Http1,
            authorizations: vec![Authorization {
                name: "web-only".into(),
                authentications: vec![
                    Authentication::MeshTls {
                        identities: vec![WEB.into()],
                    },
                    Authentication::Network {
                        networks: vec![NetworkMatch {
                            cidr: "10.0.0.0/8".parse().unwrap(),
                            except: vec!["10.9.0.0/16".parse().unwrap()],
                        }],
                    },
                ],
            }],
            access_policy: DefaultPolicy::Deny,
            rate_limit: None,
            routes: vec![],
        };
        let c = |identity, source: &str| Client {
            identity,
            source: ip(source),
        };
        assert!(matches!(
            srv.decide(c(Some(WEB), "10.1.2.3"), &cluster),
            Verdict::Authorized(a) if a.name == "web-only"
        ));
        for (client, why) in [
            (c(Some(DB), "10.1.2.3"), "other identity"),
            (c(None, "10.1.2.3"), "no identity"),
            (c(Some(WEB), "10.9.0.1"), "an excepted network"),
            (c(Some(WEB), "192.0.2.1"), "outside the network"),
        ] {
            assert_eq!(srv.decide(client, &cluster), Verdict::Denied, "{why}");
        }
        let audit = InboundServer {
            access_policy: DefaultPolicy::AllAuthenticated,
            ..srv.clone()
        };
        assert_eq!(
            audit.decide(c(Some(DB), "10.1.2.3"), &cluster),
            Verdict::AccessPolicy
        );
        let open = InboundServer::default_policy(DefaultPolicy::ClusterUnauthenticated);
        assert_eq!(
            open.decide(c(None, "10.1.2.3"), &cluster),
            Verdict::AccessPolicy
        );
        assert_eq!(open.decide(c(None, "192.0.2.1"), &cluster), Verdict::Denied);
        assert_eq!(open.name, "cluster-unauthenticated");
        // A route's authorizations come first, then the Server's.
        let route = [Authorization {
            name: "db-on-route".into(),
            authentications: vec![Authentication::MeshTls {
                identities: vec![DB.into()],
            }],
        }];
        assert!(matches!(
            srv.decide_route(&route, c(Some(DB), "10.1.2.3"), &cluster),
            Verdict::Authorized(a) if a.name == "db-on-route"
        ));
        assert!(matches!(
            srv.decide_route(&route, c(Some(WEB), "10.1.2.3"), &cluster),
            Verdict::Authorized(a) if a.name == "web-only"
        ));
        assert_eq!(
            srv.decide_route(&route, c(None, "10.1.2.3"), &cluster),
            Verdict::Denied
        );
    }

    #[test]
    fn events_round_trip_as_json() {
        let mut policy = InboundPolicy::default();
        policy.servers.insert(
            8080,
            InboundServer {
                name: "web".into(),
                kind: ServerKind::Server,
                protocol: Protocol::Opaque,
                authorizations: vec![Authorization {
                    name: "a".into(),
                    authentications: vec![Authentication::Network {
                        networks: vec![NetworkMatch {
                            cidr: "fd00::/8".parse().unwrap(),
                            except: vec![],
                        }],
                    }],
                }],
                access_policy: DefaultPolicy::Deny,
                rate_limit: Some(RateLimit {
                    name: "api-rl".into(),
                    total: Some(10),
                    identity: None,
                    overrides: vec![RateLimitOverride {
                        requests_per_second: 5,
                        identities: vec![WEB.into()],
                    }],
                }),
                routes: vec![InboundRoute {
                    name: "admin".into(),
                    kind: RouteKind::Grpc,
                    matches: vec![RouteMatch {
                        path: Some(crate::discovery::route::PathMatch::PathPrefix(
                            "/admin".into(),
                        )),
                        ..Default::default()
                    }],
                    authorizations: vec![],
                }],
            },
        );
        let ev = PolicyEvent {
            kind: EventType::Added,
            revision: 3,
            object: Some(policy),
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains("\"protocol\":\"opaque\""), "{json}");
        assert!(json.contains("\"access_policy\":\"deny\""), "{json}");
        assert!(json.contains("\"cidr\":\"fd00::/8\""), "{json}");
        assert!(json.contains("\"kind\":\"GRPCRoute\""), "{json}");
        assert_eq!(serde_json::from_str::<PolicyEvent>(&json).unwrap(), ev);
        // Without a rate limit the field is left out: old proxies and
        // controllers read each other's events.
        let mut plain = ev.clone();
        if let Some(p) = plain.object.as_mut() {
            p.servers.values_mut().for_each(|s| {
                s.rate_limit = None;
                s.routes.clear();
            });
        }
        let plain_json = serde_json::to_string(&plain).unwrap();
        assert!(!plain_json.contains("rate_limit"), "{plain_json}");
        assert!(!plain_json.contains("routes"), "{plain_json}");
        assert_eq!(
            serde_json::from_str::<PolicyEvent>(&plain_json).unwrap(),
            plain
        );
        let bad = json.replace("fd00::/8", "fd00::1/8");
        assert!(serde_json::from_str::<PolicyEvent>(&bad).is_err());
    }

    #[test]
    fn labels() {
        let l = parse_labels(" app=web, tier=front ,").unwrap();
        assert_eq!(labels_to_string(&l), "app=web,tier=front");
        assert!(parse_labels("app").is_err());
        assert!(parse_labels("=web").is_err());
        assert!(parse_labels("a=1,a=2").is_err());
        assert_eq!(parse_labels("").unwrap().len(), 0);
    }
}
