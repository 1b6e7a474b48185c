//! Answers to `authz`: per workload, one row per (server, route,
//! authorization) with the requests (HTTP) or connections (TCP) allowed and
//! denied over a window, from `inbound_{http,tcp}_authz_{allow,deny}_total`,
//! as `linkerd viz authz` shows them (plus the counts behind the rates).

use super::{namespace_of, Filter, Resource};
use crate::telemetry::parse::AuthzKey;
use crate::telemetry::state::Targets;
use crate::telemetry::window::per_second;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One row of `authz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthzRow {
    /// Namespace.
    pub namespace: String,
    /// `deployment`, `service` or `pod`.
    pub kind: Resource,
    /// Workload name.
    pub name: String,
    /// `http` (requests) or `tcp` (opaque connections).
    pub protocol: String,
    /// `route_name` of HTTP rows (`default`: a Server without routes).
    pub route: Option<String>,
    /// `srv_kind`: `server` or `default`.
    pub server_kind: String,
    /// `srv_name`: the Server, or the default policy.
    pub server_name: String,
    /// `authz_kind` (`authorizationpolicy`, `default`, ...); `None` on the
    /// row of denials (no authorization admitted them).
    pub authz_kind: Option<String>,
    /// `authz_name`.
    pub authz_name: Option<String>,
    /// Allowed in the window.
    pub allowed: u64,
    /// Denied in the window.
    pub denied: u64,
    /// Allowed per second (summed per target, each over the time its
    /// points cover).
    pub allowed_rate: Option<f64>,
    /// Denied per second.
    pub denied_rate: Option<f64>,
    /// Seconds the window's points cover (the longest of the targets').
    pub covered_seconds: f64,
}

impl AuthzRow {
    /// The SERVER column as `linkerd viz authz`: the Server's name, or
    /// `default:POLICY` for a default policy.
    pub fn server(&self) -> String {
        if self.server_kind == "default" {
            format!("default:{}", self.server_name)
        } else {
            self.server_name.clone()
        }
    }

    /// The AUTHORIZATION column as `linkerd viz authz`: `KIND/NAME`, empty
    /// on the row of denials.
    pub fn authorization(&self) -> String {
        match (&self.authz_kind, &self.authz_name) {
            (Some(k), Some(n)) => format!("{k}/{n}"),
            (Some(k), None) => k.clone(),
            _ => String::new(),
        }
    }
}

/// `GET /v1/authz` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authz {
    /// The window asked for, seconds.
    pub window_seconds: u64,
    /// Scrape targets of the workloads asked for (0: no such workload).
    pub targets: usize,
    /// One row per workload and (protocol, server, route, authorization),
    /// by namespace, name, server, route, then authorization (denials last).
    pub rows: Vec<AuthzRow>,
}

/// `authz` over `window_ms` ending at `now_ms`: the rows, and how many
/// targets the filter matched.
pub fn authz(
    targets: &Targets,
    resource: Resource,
    filter: &Filter,
    now_ms: u64,
    window_ms: u64,
) -> (Vec<AuthzRow>, usize) {
    #[derive(Default)]
    struct Acc {
        allowed: u64,
        denied: u64,
        allowed_rate: Option<f64>,
        denied_rate: Option<f64>,
        covered_ms: u64,
    }
    let add = |acc: Option<f64>, r: Option<f64>| match (acc, r) {
        (Some(a), Some(r)) => Some(a + r),
        (a, r) => a.or(r),
    };
    let from = now_ms.saturating_sub(window_ms);
    let mut matched = 0;
    // Sorted as the table: server, route, then authorizations with denials
    // (no authorization) last.
    type Order = (String, String, bool, String, bool, Option<String>, AuthzKey);
    let mut groups: BTreeMap<(String, String, Order), Acc> = BTreeMap::new();
    for (addr, t) in targets {
        let Some(name) = resource.name_of(addr, t) else {
            continue;
        };
        let ns = namespace_of(t);
        if !filter.keeps(&ns, &name) || (!t.listed && t.inbound.is_empty()) {
            continue;
        }
        matched += 1;
        for (k, ring) in &t.authz {
            let (allowed, denied, covered) = ring.between(from, now_ms).fold((0, 0, 0), |a, p| {
                (a.0 + p.allowed, a.1 + p.denied, a.2 + p.dt_ms)
            });
            if covered == 0 {
                continue;
            }
            let order = (
                k.srv_name.clone(),
                k.srv_kind.clone(),
                !k.http,
                k.route.clone().unwrap_or_default(),
                k.authz_kind.is_none(),
                k.authz_name.clone(),
                k.clone(),
            );
            let g = groups.entry((ns.clone(), name.clone(), order)).or_default();
            g.allowed += allowed;
            g.denied += denied;
            g.allowed_rate = add(g.allowed_rate, per_second(allowed, covered));
            g.denied_rate = add(g.denied_rate, per_second(denied, covered));
            g.covered_ms = g.covered_ms.max(covered);
        }
    }
    let rows = groups
        .into_iter()
        .map(|((namespace, name, order), g)| {
            let k = order.6;
            AuthzRow {
                namespace,
                kind: resource,
                name,
                protocol: if k.http { "http" } else { "tcp" }.to_string(),
                route: k.route,
                server_kind: k.srv_kind,
                server_name: k.srv_name,
                authz_kind: k.authz_kind,
                authz_name: k.authz_name,
                allowed: g.allowed,
                denied: g.denied,
                allowed_rate: g.allowed_rate,
                denied_rate: g.denied_rate,
                covered_seconds: g.covered_ms as f64 / 1000.0,
            }
        })
        .collect();
    (rows, matched)
}

#[cfg(test)]
mod tests;
