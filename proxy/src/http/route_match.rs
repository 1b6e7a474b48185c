//! Gateway API request matching, shared by outbound `HTTPRoute`s
//! (`outbound::http_route::table`) and inbound per-route policy (`authz`):
//! whether a request meets an `HTTPRouteMatch`, and the matches of a set
//! of routes ordered by Gateway API's precedence (`HTTPRouteRule.matches`):
//! an `Exact` path before a `PathPrefix`, a longer prefix before a
//! shorter, a method match before none, more header matches, then more
//! query parameter matches; ties keep the order given (the routes' oldest
//! first, then rule order). A leaf: no I/O.

use http::{HeaderMap, Method, Uri};
use pimesh_api::discovery::route::{PathMatch, RouteMatch};
use std::cmp::Reverse;

/// Matches in precedence order, each with what it leads to (a rule's or
/// a route's index).
#[derive(Debug)]
pub struct Matches<T> {
    /// Highest precedence first.
    entries: Vec<(RouteMatch, T)>,
}

impl<T> Matches<T> {
    /// `entries` sorted by precedence (stable: ties keep their order).
    pub fn new(entries: impl IntoIterator<Item = (RouteMatch, T)>) -> Matches<T> {
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_by_key(|(m, _)| Reverse(rank(m)));
        Matches { entries }
    }

    /// What the first match of a request leads to, in precedence order.
    pub fn find(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<&T> {
        self.entries
            .iter()
            .find(|(m, _)| matches(m, method, uri, headers))
            .map(|(_, t)| t)
    }
}

/// A match's precedence, larger first: exact path, prefix length,
/// method, header and query parameter counts.
fn rank(m: &RouteMatch) -> (bool, usize, bool, usize, usize) {
    let (exact, len) = match &m.path {
        Some(PathMatch::Exact(p)) => (true, p.len()),
        Some(PathMatch::PathPrefix(p)) => (false, p.len()),
        None => (false, 1),
    };
    (
        exact,
        len,
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    )
}

/// Whether a request meets every condition of `m`.
pub fn matches(m: &RouteMatch, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
    let path = uri.path();
    let path_ok = match &m.path {
        None => true,
        Some(PathMatch::Exact(p)) => path == p,
        Some(PathMatch::PathPrefix(p)) => {
            let p = p.trim_end_matches('/');
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
    };
    let method_ok = m.method.as_deref().is_none_or(|x| x == method.as_str());
    let headers_ok = m.headers.iter().all(|h| {
        headers
            .get_all(h.name.as_str())
            .iter()
            .any(|v| v.as_bytes() == h.value.as_bytes())
    });
    let query_ok = m.query_params.iter().all(|q| {
        uri.query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .any(|(k, v)| k == q.name && v == q.value)
    });
    path_ok && method_ok && headers_ok && query_ok
}
