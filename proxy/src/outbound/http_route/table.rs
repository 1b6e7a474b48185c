//! A service's routes ready to match (built with its `Dst`): every
//! rule's matches in Gateway API's precedence (`http::route_match`), the
//! weighted backend pick
//! and the rule's timeouts and retries over the backend's policy. A leaf:
//! no I/O.

use super::super::policy::Policy;
use crate::config::{parse_grpc_codes, parse_http_classes};
use crate::http::route_match::Matches;
use http::{HeaderMap, Method, Uri};
use pimesh_api::discovery::route::{Backend, HttpRoute, RouteMatch, RouteRetry};
use std::borrow::Cow;
use std::time::Duration;

/// A service's routes, their matches in precedence order.
#[derive(Debug)]
pub struct RouteTable {
    /// Every match of every rule, highest precedence first, with its rule.
    matches: Matches<usize>,
    /// The rules, routes' order then rule order.
    rules: Vec<Rule>,
    /// The parent's service port: backends without one use it.
    pub port: u16,
}

/// One rule, ready to use.
#[derive(Debug)]
pub struct Rule {
    /// `NAMESPACE/NAME` of its HTTPRoute, for logs.
    pub route: String,
    /// Its backends; empty: the parent service.
    backends: Vec<Backend>,
    /// The sum of the backends' weights.
    total_weight: u64,
    /// Whole request, `timeouts.request`.
    timeout: Option<Duration>,
    /// Each try: the shorter of `timeouts.backendRequest` and the retry
    /// annotation's timeout.
    per_try_timeout: Option<Duration>,
    /// Retries from the annotations: the limit and the retried HTTP
    /// statuses and gRPC codes, parsed.
    retry: Option<Retry>,
}

/// A rule's retries: the limit, the retried HTTP status ranges and gRPC
/// codes.
#[derive(Debug)]
struct Retry {
    limit: u32,
    http: Vec<(u16, u16)>,
    grpc: Vec<u32>,
}

/// What a rule's backend pick gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    /// The rule has no backends: the parent service.
    Parent,
    /// This backend.
    Backend(&'a Backend),
    /// Every backend has weight 0.
    None,
}

impl RouteTable {
    /// The table of `routes` of a service on `port`; `None` when there
    /// are none (requests go to the service itself).
    pub fn new(routes: &[HttpRoute], port: u16) -> Option<RouteTable> {
        if routes.is_empty() {
            return None;
        }
        let mut matches = Vec::new();
        let mut rules = Vec::new();
        for route in routes {
            for r in &route.rules {
                let i = rules.len();
                if r.matches.is_empty() {
                    matches.push((RouteMatch::default(), i));
                }
                matches.extend(r.matches.iter().map(|m| (m.clone(), i)));
                rules.push(Rule::new(&route.name, r));
            }
        }
        Some(RouteTable {
            matches: Matches::new(matches),
            rules,
            port,
        })
    }

    /// The rule of the first match of a request, in precedence order.
    pub fn find(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<&Rule> {
        self.matches
            .find(method, uri, headers)
            .and_then(|i| self.rules.get(*i))
    }
}

impl Rule {
    fn new(route: &str, r: &pimesh_api::discovery::route::RouteRule) -> Rule {
        let ms = |v: Option<u64>| v.filter(|ms| *ms > 0).map(Duration::from_millis);
        let retry_timeout = r.retry.as_ref().and_then(|x| ms(x.timeout_ms));
        let per_try_timeout = match (ms(r.backend_timeout_ms), retry_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Rule {
            route: route.to_string(),
            backends: r.backends.clone(),
            total_weight: r.backends.iter().map(|b| u64::from(b.weight)).sum(),
            timeout: ms(r.timeout_ms),
            per_try_timeout,
            retry: r.retry.as_ref().map(retry),
        }
    }

    /// A backend by weight, `rand` a uniformly random number: backend `i`
    /// with probability `weight[i] / Σ weight`.
    pub fn pick(&self, rand: u64) -> Pick<'_> {
        if self.backends.is_empty() {
            return Pick::Parent;
        }
        if self.total_weight == 0 {
            return Pick::None;
        }
        let mut at = rand % self.total_weight;
        for b in &self.backends {
            if at < u64::from(b.weight) {
                return Pick::Backend(b);
            }
            at -= u64::from(b.weight);
        }
        Pick::None
    }

    /// `base` (the backend service's policy) with the rule's timeouts and
    /// retries in place of its own.
    pub fn policy<'a>(&self, base: &'a Policy) -> Cow<'a, Policy> {
        if self.timeout.is_none() && self.per_try_timeout.is_none() && self.retry.is_none() {
            return Cow::Borrowed(base);
        }
        let mut p = base.clone();
        p.timeout = self.timeout.or(p.timeout);
        p.per_try_timeout = self.per_try_timeout.or(p.per_try_timeout);
        if let Some(r) = &self.retry {
            p.retry_limit = r.limit;
            p.retry_http.clone_from(&r.http);
            p.retry_grpc.clone_from(&r.grpc);
        }
        Cow::Owned(p)
    }
}

/// The annotations' retries, parsed (the controller checked them; what
/// does not parse is dropped).
fn retry(r: &RouteRetry) -> Retry {
    Retry {
        limit: r.limit.min(10),
        http: parse_http_classes(&r.http).unwrap_or_default(),
        grpc: parse_grpc_codes(&r.grpc).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
