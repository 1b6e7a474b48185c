//! A Server's routes as requests use them (per-route policy): their
//! matches in Gateway API's precedence (`http::route_match`, the same
//! order as outbound routes), and per route the metric names of its
//! authorizations followed by the Server's. Built once per policy update,
//! not per request. A leaf: no I/O.

use crate::http::route_match::Matches;
use http::{HeaderMap, Method, Uri};
use pimesh_api::discovery::route::RouteMatch;
use pimesh_api::policy::inbound::{InboundServer, RouteKind};
use std::sync::Arc;

/// The routes of one Server; built only when it has some.
#[derive(Debug)]
pub struct Routes {
    /// Every route's matches, highest precedence first, with its index.
    matches: Matches<usize>,
    /// The routes, in the Server's order (oldest first).
    pub routes: Vec<Route>,
}

/// One route's names, shared by the metric labels of its requests.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    /// `route_name`.
    pub name: Arc<str>,
    /// `route_kind` (`route_group` is Gateway API's).
    pub kind: RouteKind,
    /// `authz_name` of the route's authorizations, then of the Server's,
    /// in the order they are checked.
    pub authorization_names: Vec<Arc<str>>,
}

impl Routes {
    /// The routes of `spec`, whose Server's authorizations are named
    /// `server_names`; `None` when it has none (Linkerd's default route).
    pub fn new(spec: &InboundServer, server_names: &[Arc<str>]) -> Option<Routes> {
        if spec.routes.is_empty() {
            return None;
        }
        let mut matches = Vec::new();
        for (i, r) in spec.routes.iter().enumerate() {
            if r.matches.is_empty() {
                matches.push((RouteMatch::default(), i));
            }
            matches.extend(r.matches.iter().map(|m| (m.clone(), i)));
        }
        let routes = spec
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.as_str().into(),
                kind: r.kind,
                authorization_names: r
                    .authorizations
                    .iter()
                    .map(|a| Arc::from(a.name.as_str()))
                    .chain(server_names.iter().cloned())
                    .collect(),
            })
            .collect();
        Some(Routes {
            matches: Matches::new(matches),
            routes,
        })
    }

    /// The index of the route a request takes, `None` when no route
    /// matches it.
    pub fn find(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<usize> {
        self.matches.find(method, uri, headers).copied()
    }
}

impl PartialEq for Routes {
    /// Equal when the routes are (the matches follow from the spec, which
    /// [`super::Server`] compares).
    fn eq(&self, other: &Routes) -> bool {
        self.routes == other.routes
    }
}

impl Eq for Routes {}

#[cfg(test)]
mod tests {
    use super::*;
    use pimesh_api::discovery::route::PathMatch;
    use pimesh_api::policy::inbound::{Authorization, InboundRoute};
    use pimesh_api::policy::DefaultPolicy;

    fn route(name: &str, prefix: Option<&str>, authz: &[&str]) -> InboundRoute {
        InboundRoute {
            name: name.into(),
            kind: RouteKind::Http,
            matches: prefix
                .map(|p| RouteMatch {
                    path: Some(PathMatch::PathPrefix(p.into())),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            authorizations: authz
                .iter()
                .map(|n| Authorization {
                    name: (*n).into(),
                    authentications: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn routes_match_by_precedence_and_name_their_authorizations() {
        let mut spec = InboundServer::default_policy(DefaultPolicy::Deny);
        assert!(Routes::new(&spec, &[]).is_none(), "no routes: the default");
        spec.routes = vec![
            route("public", Some("/public"), &[]),
            route("admin", Some("/admin"), &["admin-web"]),
        ];
        let r = Routes::new(&spec, &["srv-authz".into()]).unwrap();
        let find = |p: &str| {
            r.find(&Method::GET, &p.parse().unwrap(), &HeaderMap::new())
                .map(|i| &*r.routes[i].name)
        };
        assert_eq!(find("/public/x"), Some("public"));
        assert_eq!(find("/admin"), Some("admin"));
        assert_eq!(find("/other"), None);
        assert_eq!(find("/publicity"), None, "whole segments");
        let names: Vec<&str> = r.routes[1]
            .authorization_names
            .iter()
            .map(|n| &**n)
            .collect();
        assert_eq!(names, ["admin-web", "srv-authz"]);
        // A route without matches takes what no other route does.
        spec.routes.push(route("rest", None, &[]));
        let r = Routes::new(&spec, &[]).unwrap();
        let i = r.find(&Method::GET, &"/other".parse().unwrap(), &HeaderMap::new());
        assert_eq!(i, Some(2));
    }
}
