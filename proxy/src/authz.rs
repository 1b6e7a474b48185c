//! Inbound authorization: by the port's `Server` and its authorizations
//! when the controller's policy stream (`discovery::policy`) selects the
//! port, else by the default policy (`PIMESH_PROXY_INBOUND_DEFAULT_POLICY`,
//! Linkerd's default policies); both decided by
//! [`pimesh_api::policy::inbound::InboundServer::decide`]. Made when the
//! client is known (after mTLS, or as plaintext) and applied per
//! connection to opaque TCP (refused before the app sees a byte) and per
//! request to HTTP (403; gRPC `PERMISSION_DENIED`), where it is made again
//! when the port's policy changed since (as Linkerd checks each request
//! against the current policy). [`InboundPolicies`] holds the ports'
//! policy, each `Server` with its rate limit's buckets (`ratelimit`),
//! checked per HTTP request once the client is admitted
//! ([`Authz::rate_limit`]). A Server with routes (`routes`, per-route
//! policy) decides each HTTP request on the route it matches
//! ([`Authz::route`]): the route's authorizations, then the Server's; a
//! request no route matches is refused. A leaf: it imports nothing of the
//! flow.

pub mod routes;

use crate::ratelimit::{Limited, LocalRateLimit};
use http::{HeaderMap, Method, Uri};
use pimesh_api::policy::inbound::{
    Authorization, Client, InboundPolicy, InboundServer, ServerKind, Verdict,
};
use pimesh_api::policy::{DefaultPolicy, Networks};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One port's policy as connections use it: the streamed (or default)
/// server, with its names shared by the metric labels of every connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Server {
    /// What decides.
    pub spec: InboundServer,
    /// `srv_name`.
    pub name: Arc<str>,
    /// `authz_name` of each of `spec.authorizations`, in order.
    pub authorization_names: Vec<Arc<str>>,
    /// The buckets of `spec.rate_limit`, kept across policy updates that
    /// leave it unchanged.
    pub rate_limit: Option<Arc<LocalRateLimit>>,
    /// `spec.routes` ready to match; `None` without routes (Linkerd's
    /// default route: nothing to look up per request).
    pub routes: Option<routes::Routes>,
}

impl Server {
    /// Wraps `spec`, with new buckets.
    pub fn new(spec: InboundServer) -> Server {
        Server::keeping(spec, None)
    }

    /// Wraps `spec`, keeping the buckets of `old` when its rate limit is
    /// the same.
    fn keeping(spec: InboundServer, old: Option<&Server>) -> Server {
        let rate_limit =
            spec.rate_limit
                .clone()
                .map(|rl| match old.and_then(|o| o.rate_limit.as_ref()) {
                    Some(kept) if *kept.spec() == rl => kept.clone(),
                    _ => Arc::new(LocalRateLimit::new(rl)),
                });
        let authorization_names: Vec<Arc<str>> = spec
            .authorizations
            .iter()
            .map(|a| a.name.as_str().into())
            .collect();
        Server {
            name: spec.name.as_str().into(),
            routes: routes::Routes::new(&spec, &authorization_names),
            authorization_names,
            rate_limit,
            spec,
        }
    }

    /// The server of a port no `Server` selects (Linkerd's default server).
    pub fn default_policy(policy: DefaultPolicy) -> Server {
        Server::new(InboundServer::default_policy(policy))
    }
}

/// The policy of every inbound port, as connections read it.
#[derive(Debug)]
pub struct InboundPolicies {
    /// The server of ports the streamed policy does not select.
    default: Arc<Server>,
    /// The streamed servers by port; `None` until the controller answers.
    ports: RwLock<Option<HashMap<u16, Arc<Server>>>>,
    /// Bumped by every [`InboundPolicies::replace`]: a verdict made at an
    /// older generation is made again.
    generation: AtomicU64,
}

impl InboundPolicies {
    /// Every port under the default `policy` until a policy is streamed.
    pub fn new(policy: DefaultPolicy) -> InboundPolicies {
        InboundPolicies {
            default: Arc::new(Server::default_policy(policy)),
            ports: RwLock::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// The server of inbound `port`.
    pub fn server(&self, port: u16) -> Arc<Server> {
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        ports
            .as_ref()
            .and_then(|p| p.get(&port).cloned())
            .unwrap_or_else(|| self.default.clone())
    }

    /// Whether a policy was ever streamed.
    pub fn streamed(&self) -> bool {
        self.ports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Replaces the streamed policy; a server whose policy did not change
    /// keeps its `Arc`.
    pub fn replace(&self, policy: InboundPolicy) {
        let mut ports = self.ports.write().unwrap_or_else(|e| e.into_inner());
        let old = ports.take().unwrap_or_default();
        let new = policy
            .servers
            .into_iter()
            .map(|(port, spec)| {
                let srv = match old.get(&port) {
                    Some(s) if s.spec == spec => s.clone(),
                    o => Arc::new(Server::keeping(spec, o.map(|s| &**s))),
                };
                (port, srv)
            })
            .collect();
        *ports = Some(new);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Where a request goes by its server's routes.
#[derive(Debug)]
pub enum Routed {
    /// The server has no routes: the connection's verdict holds.
    Default,
    /// The verdict on the route the request matched.
    Route(Authz),
    /// The server has routes and none matches (linkerd2-proxy:
    /// `HttpRouteNotFound`).
    NotFound,
}

/// Who connected, kept to decide again when the policy changes.
#[derive(Debug)]
struct Peer {
    port: u16,
    identity: Option<Box<str>>,
    source: IpAddr,
}

/// The verdict on one inbound connection (or request).
#[derive(Debug, Clone)]
pub struct Authz {
    /// The port's server: the `srv_*` labels.
    pub server: Arc<Server>,
    /// The route of the server the request took (an index into
    /// `server.spec.routes`); `None`: the default route (a connection's
    /// verdict, or a server without routes).
    pub route: Option<usize>,
    /// The authorization that admitted the client: an index into
    /// `server.spec.authorizations`, or with a `route` into that route's
    /// authorizations followed by the server's; `None` when the access
    /// policy decided (`authz_kind="default"`).
    pub authorization: Option<usize>,
    /// Whether the client may reach the app.
    pub allowed: bool,
    /// The [`InboundPolicies`] generation decided at.
    generation: u64,
    peer: Arc<Peer>,
}

impl Authz {
    /// Decides for a client of inbound `port` that presented the mesh
    /// `identity` over mTLS (its DNS-style name) or none, connecting from
    /// `source`; `cluster` are the networks of the `cluster-*` policies.
    pub fn decide(
        policies: &InboundPolicies,
        port: u16,
        cluster: &Networks,
        identity: Option<&str>,
        source: IpAddr,
    ) -> Authz {
        let peer = Arc::new(Peer {
            port,
            identity: identity.map(Into::into),
            source,
        });
        Authz::decide_for(policies, cluster, peer)
    }

    fn decide_for(policies: &InboundPolicies, cluster: &Networks, peer: Arc<Peer>) -> Authz {
        let generation = policies.generation();
        let server = policies.server(peer.port);
        Authz::decide_on(server, None, generation, cluster, peer)
    }

    /// Decides on `server`'s `route` (`None`: the server alone).
    fn decide_on(
        server: Arc<Server>,
        route: Option<usize>,
        generation: u64,
        cluster: &Networks,
        peer: Arc<Peer>,
    ) -> Authz {
        let client = Client {
            identity: peer.identity.as_deref(),
            source: peer.source,
        };
        let on_route: &[Authorization] = route
            .and_then(|i| server.spec.routes.get(i))
            .map_or(&[], |r| &r.authorizations);
        let (authorization, allowed) = match server.spec.decide_route(on_route, client, cluster) {
            Verdict::Authorized(a) => {
                let mut all = on_route.iter().chain(&server.spec.authorizations);
                (all.position(|x| std::ptr::eq(x, a)), true)
            }
            Verdict::AccessPolicy => (None, true),
            Verdict::Denied => (None, false),
        };
        if allowed && authorization.is_none() && server.spec.access_policy == DefaultPolicy::Audit {
            // Audit lets everything in and says so, as Linkerd's.
            tracing::info!(source = %peer.source, authenticated = peer.identity.is_some(), server = %server.name, "connection allowed by the audit policy");
        }
        Authz {
            server,
            route,
            authorization,
            allowed,
            generation,
            peer,
        }
    }

    /// The verdict on a request by its server's routes (this verdict made
    /// at the current policy generation, [`Authz::current`]): without
    /// routes, this one; else the route the request matches, decided on
    /// its authorizations then the server's, or none. No allocation.
    pub fn route(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        cluster: &Networks,
    ) -> Routed {
        let Some(routes) = &self.server.routes else {
            return Routed::Default;
        };
        match routes.find(method, uri, headers) {
            None => Routed::NotFound,
            Some(i) => Routed::Route(Authz::decide_on(
                self.server.clone(),
                Some(i),
                self.generation,
                cluster,
                self.peer.clone(),
            )),
        }
    }

    /// The `authz_name` of each authorization [`Authz::authorization`]
    /// indexes.
    pub fn authorization_names(&self) -> &[Arc<str>] {
        match self.route_names() {
            Some(r) => &r.authorization_names,
            None => &self.server.authorization_names,
        }
    }

    /// The names of the route the request took; `None`: the default route.
    pub fn route_names(&self) -> Option<&routes::Route> {
        let i = self.route?;
        self.server.routes.as_ref()?.routes.get(i)
    }

    /// The verdict now: `None` when the policy did not change since this
    /// one was made (one atomic load), else the new verdict.
    pub fn current(&self, policies: &InboundPolicies, cluster: &Networks) -> Option<Authz> {
        if policies.generation() == self.generation {
            return None;
        }
        Some(Authz::decide_for(policies, cluster, self.peer.clone()))
    }

    /// Whether `other` is counted in the same series (same server, route
    /// and authorization, same outcome).
    pub fn same_series(&self, other: &Authz) -> bool {
        Arc::ptr_eq(&self.server, &other.server)
            && self.route == other.route
            && self.authorization == other.authorization
            && self.allowed == other.allowed
    }

    /// Takes a token of the server's rate limit for this client (none
    /// without a limit): checked after the verdict admitted it, as
    /// linkerd2-proxy's `check_rate_limit`.
    ///
    /// # Errors
    ///
    /// [`Limited`]: the request is over a limit.
    pub fn rate_limit(&self) -> Result<(), Limited> {
        match &self.server.rate_limit {
            Some(rl) => rl.check(self.peer.identity.as_deref()),
            None => Ok(()),
        }
    }

    /// What a refusal names: `server NAME`, or `default policy NAME`.
    pub fn describe(&self) -> String {
        match self.server.spec.kind {
            ServerKind::Server => format!("server {}", self.server.name),
            ServerKind::Default => format!("default policy {}", self.server.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pimesh_api::policy::inbound::{Authentication, Authorization};

    fn server(name: &str) -> InboundServer {
        InboundServer {
            name: name.into(),
            kind: ServerKind::Server,
            protocol: Default::default(),
            authorizations: vec![],
            access_policy: DefaultPolicy::Deny,
            rate_limit: None,
            routes: vec![],
        }
    }

    #[test]
    fn ports_get_the_streamed_server_or_the_default() {
        let p = InboundPolicies::new(DefaultPolicy::AllAuthenticated);
        assert!(!p.streamed());
        assert_eq!(&*p.server(80).name, "all-authenticated");
        let mut policy = InboundPolicy::default();
        policy.servers.insert(80, server("web"));
        policy.servers.insert(81, server("admin"));
        p.replace(policy.clone());
        assert!(p.streamed());
        let web = p.server(80);
        assert_eq!(&*web.name, "web");
        assert_eq!(web.spec.kind, ServerKind::Server);
        assert_eq!(&*p.server(82).name, "all-authenticated");
        // An unchanged server keeps its Arc; a changed one is new.
        policy.servers.insert(81, server("admin2"));
        p.replace(policy);
        assert!(Arc::ptr_eq(&web, &p.server(80)));
        assert_eq!(&*p.server(81).name, "admin2");
        p.replace(InboundPolicy::default());
        assert_eq!(&*p.server(80).name, "all-authenticated");
    }

    #[test]
    fn a_policy_change_keeps_the_buckets_of_an_unchanged_rate_limit() {
        use pimesh_api::policy::inbound::RateLimit;
        let p = InboundPolicies::new(DefaultPolicy::AllUnauthenticated);
        let rl = |total| RateLimit {
            name: "rl".into(),
            total: Some(total),
            identity: None,
            overrides: vec![],
        };
        let mut policy = InboundPolicy::default();
        policy.servers.insert(80, server("web"));
        policy.servers.get_mut(&80).unwrap().rate_limit = Some(rl(2));
        p.replace(policy.clone());
        let cluster: Networks = "10.0.0.0/8".parse().unwrap();
        let a = Authz::decide(&p, 80, &cluster, None, "10.0.0.1".parse().unwrap());
        assert!(!a.allowed, "the limit is checked only for admitted clients");
        let buckets = p.server(80).rate_limit.clone().unwrap();
        // The Server's authorizations change, its rate limit does not.
        let srv = policy.servers.get_mut(&80).unwrap();
        srv.access_policy = DefaultPolicy::AllUnauthenticated;
        p.replace(policy.clone());
        let a = a.current(&p, &cluster).unwrap();
        assert!(a.allowed);
        assert!(Arc::ptr_eq(&buckets, a.server.rate_limit.as_ref().unwrap()));
        assert_eq!((a.rate_limit(), a.rate_limit()), (Ok(()), Ok(())));
        assert_eq!(a.rate_limit(), Err(Limited::Total(2)));
        // A new limit: new, full buckets.
        policy.servers.get_mut(&80).unwrap().rate_limit = Some(rl(3));
        p.replace(policy.clone());
        let a = a.current(&p, &cluster).unwrap();
        assert!(!Arc::ptr_eq(
            &buckets,
            a.server.rate_limit.as_ref().unwrap()
        ));
        assert_eq!(a.rate_limit(), Ok(()));
        // No limit.
        policy.servers.get_mut(&80).unwrap().rate_limit = None;
        p.replace(policy);
        let a = a.current(&p, &cluster).unwrap();
        assert!(a.server.rate_limit.is_none() && a.rate_limit().is_ok());
    }

    #[test]
    fn a_verdict_is_made_again_when_the_policy_changes() {
        let web = "web.shop.serviceaccount.identity.pimesh.cluster.local";
        let cluster: Networks = "10.0.0.0/8".parse().unwrap();
        let p = InboundPolicies::new(DefaultPolicy::AllUnauthenticated);
        let a = Authz::decide(&p, 80, &cluster, Some(web), "10.0.0.1".parse().unwrap());
        assert!(a.allowed);
        assert_eq!(&*a.server.name, "all-unauthenticated");
        assert!(a.current(&p, &cluster).is_none(), "unchanged");
        let mut policy = InboundPolicy::default();
        policy.servers.insert(80, server("web"));
        p.replace(policy.clone());
        let denied = a.current(&p, &cluster).unwrap();
        assert!(!denied.allowed && !denied.same_series(&a));
        assert_eq!(denied.describe(), "server web");
        policy.servers.get_mut(&80).unwrap().authorizations = vec![Authorization {
            name: "web-only".into(),
            authentications: vec![Authentication::MeshTls {
                identities: vec![web.into()],
            }],
        }];
        p.replace(policy);
        let allowed = denied.current(&p, &cluster).unwrap();
        assert!(allowed.allowed);
        assert_eq!(allowed.authorization, Some(0));
        assert_eq!(&*allowed.server.authorization_names[0], "web-only");
        assert!(allowed.current(&p, &cluster).is_none());
    }

    #[test]
    fn a_server_with_routes_decides_each_request_on_its_route() {
        use pimesh_api::discovery::route::{PathMatch, RouteMatch};
        use pimesh_api::policy::inbound::{InboundRoute, RouteKind};
        let web = "web.shop.serviceaccount.identity.pimesh.cluster.local";
        let cluster: Networks = "10.0.0.0/8".parse().unwrap();
        let p = InboundPolicies::new(DefaultPolicy::AllUnauthenticated);
        let mut policy = InboundPolicy::default();
        let mut srv = server("api");
        srv.routes = vec![InboundRoute {
            name: "admin".into(),
            kind: RouteKind::Http,
            matches: vec![RouteMatch {
                path: Some(PathMatch::PathPrefix("/admin".into())),
                ..Default::default()
            }],
            authorizations: vec![Authorization {
                name: "admin-web".into(),
                authentications: vec![Authentication::MeshTls {
                    identities: vec![web.into()],
                }],
            }],
        }];
        policy.servers.insert(80, srv);
        p.replace(policy);
        let src = "10.0.0.1".parse().unwrap();
        let req = |a: &Authz, path: &str| {
            a.route(
                &Method::GET,
                &path.parse().unwrap(),
                &HeaderMap::new(),
                &cluster,
            )
        };
        let conn = Authz::decide(&p, 80, &cluster, Some(web), src);
        assert!(!conn.allowed, "the Server alone admits nobody");
        let Routed::Route(a) = req(&conn, "/admin/x") else {
            panic!("no route")
        };
        assert!(a.allowed && a.route == Some(0));
        assert_eq!(
            &*a.authorization_names()[a.authorization.unwrap()],
            "admin-web"
        );
        assert_eq!(&*a.route_names().unwrap().name, "admin");
        assert!(!a.same_series(&conn));
        assert!(matches!(req(&conn, "/public"), Routed::NotFound));
        let other = Authz::decide(&p, 80, &cluster, None, src);
        let Routed::Route(denied) = req(&other, "/admin") else {
            panic!("no route")
        };
        assert!(!denied.allowed && denied.authorization.is_none());
        let open = Authz::decide(&p, 81, &cluster, None, src);
        assert!(matches!(req(&open, "/admin"), Routed::Default));
    }
}
