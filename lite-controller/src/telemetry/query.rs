//! Answers to `stat` and `edges`: targets grouped into workloads
//! (deployments, services, pods) and their windows summed, in the shape of
//! `linkerd viz stat -o json` and `linkerd viz edges -o json` (plus the
//! counts behind the rates); `authz` answers `linkerd viz authz`'s question.

pub mod authz;

use super::state::{EdgeKey, TargetState, Targets};
use super::window::{per_second, Sum};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Namespace of a target without a `namespace` label (Kubernetes' default).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The kinds of workload `stat` and `edges` group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// By `namespace` + `deployment` (else the pod, else the target address).
    Deployment,
    /// By `namespace` + `service`; targets without a service label are left out.
    Service,
    /// By `namespace` + `pod` (else the target address).
    Pod,
}

impl Resource {
    /// `deploy`, `deployment(s)`, `svc`, `service(s)`, `po`, `pod(s)`
    /// (kubectl's and linkerd's spellings); `None` for anything else.
    pub fn parse(s: &str) -> Option<Resource> {
        Some(match s {
            "deploy" | "deployment" | "deployments" => Resource::Deployment,
            "svc" | "service" | "services" => Resource::Service,
            "po" | "pod" | "pods" => Resource::Pod,
            _ => return None,
        })
    }

    /// The name of `t`'s workload of this kind.
    pub fn name_of(self, addr: &SocketAddr, t: &TargetState) -> Option<String> {
        match self {
            Resource::Deployment => Some(
                t.label("deployment")
                    .or_else(|| t.label("pod"))
                    .map_or_else(|| addr.to_string(), str::to_string),
            ),
            Resource::Service => t.label("service").map(str::to_string),
            Resource::Pod => Some(
                t.label("pod")
                    .map_or_else(|| addr.to_string(), str::to_string),
            ),
        }
    }
}

/// The namespace of `t`.
pub fn namespace_of(t: &TargetState) -> String {
    t.label("namespace")
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string()
}

/// One row of `stat`, as `linkerd viz stat -o json`, plus counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatRow {
    /// Namespace.
    pub namespace: String,
    /// `deployment`, `service` or `pod`.
    pub kind: Resource,
    /// Workload name.
    pub name: String,
    /// `UP/TOTAL`: targets whose last scrape worked, of those known.
    pub meshed: String,
    /// Successful share of responses in the window, 0–1.
    pub success: Option<f64>,
    /// Requests per second over the window.
    pub rps: Option<f64>,
    /// Latency quantiles, milliseconds.
    pub latency_ms_p50: Option<f64>,
    /// 95th percentile.
    pub latency_ms_p95: Option<f64>,
    /// 99th percentile.
    pub latency_ms_p99: Option<f64>,
    /// Open inbound client connections at the latest scrape.
    pub tcp_open_connections: u64,
    /// Bytes per second read from clients.
    pub read_bytes_per_sec: Option<f64>,
    /// Bytes per second written to clients.
    pub write_bytes_per_sec: Option<f64>,
    /// Requests in the window.
    pub requests: u64,
    /// Responses classified successful in the window.
    pub successes: u64,
    /// Responses classified failed in the window.
    pub failures: u64,
    /// Seconds the window's points cover (the rates' denominator, per target).
    pub covered_seconds: f64,
}

/// `GET /v1/stat` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// The window asked for, seconds.
    pub window_seconds: u64,
    /// One row per workload, by namespace then name.
    pub rows: Vec<StatRow>,
}

/// Filters of a query.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Only this workload name.
    pub name: Option<String>,
}

impl Filter {
    fn keeps(&self, ns: &str, name: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == ns)
            && self.name.as_deref().is_none_or(|n| n == name)
    }
}

/// `stat` over `window_ms` ending at `now_ms`.
pub fn stat(
    targets: &Targets,
    resource: Resource,
    filter: &Filter,
    now_ms: u64,
    window_ms: u64,
) -> Vec<StatRow> {
    struct Group {
        up: usize,
        total: usize,
        sum: Sum,
        rps: Option<f64>,
        read: Option<f64>,
        write: Option<f64>,
        covered_ms: u64,
    }
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let from = now_ms.saturating_sub(window_ms);
    for (addr, t) in targets {
        let Some(name) = resource.name_of(addr, t) else {
            continue;
        };
        let ns = namespace_of(t);
        if !filter.keeps(&ns, &name) || (!t.listed && t.inbound.is_empty()) {
            continue;
        }
        let g = groups.entry((ns, name)).or_insert(Group {
            up: 0,
            total: 0,
            sum: Sum::default(),
            rps: None,
            read: None,
            write: None,
            covered_ms: 0,
        });
        if t.listed {
            g.total += 1;
            g.up += usize::from(t.up);
        }
        let mut s = Sum::default();
        for p in t.inbound.between(from, now_ms) {
            s.add(&p);
        }
        // Rates per target (each over the time its own points cover), summed.
        let add = |acc: Option<f64>, r: Option<f64>| match (acc, r) {
            (None, r) => r,
            (a, None) => a,
            (Some(a), Some(r)) => Some(a + r),
        };
        g.rps = add(g.rps, s.rps());
        g.read = add(g.read, per_second(s.read_bytes, s.covered_ms));
        g.write = add(g.write, per_second(s.write_bytes, s.covered_ms));
        g.covered_ms = g.covered_ms.max(s.covered_ms);
        let total = &mut g.sum;
        total.requests += s.requests;
        total.successes += s.successes;
        total.failures += s.failures;
        total.read_bytes += s.read_bytes;
        total.write_bytes += s.write_bytes;
        for (a, b) in total.buckets.iter_mut().zip(s.buckets.iter()) {
            *a += b;
        }
        if t.up {
            total.tcp_open += t.inbound.last().map_or(0, |p| p.tcp_open);
        }
    }
    groups
        .into_iter()
        .map(|((namespace, name), g)| StatRow {
            namespace,
            kind: resource,
            name,
            meshed: format!("{}/{}", g.up, g.total),
            success: g.sum.success_rate(),
            rps: g.rps,
            latency_ms_p50: g.sum.quantile_ms(0.5),
            latency_ms_p95: g.sum.quantile_ms(0.95),
            latency_ms_p99: g.sum.quantile_ms(0.99),
            tcp_open_connections: g.sum.tcp_open,
            read_bytes_per_sec: g.read,
            write_bytes_per_sec: g.write,
            requests: g.sum.requests,
            successes: g.sum.successes,
            failures: g.sum.failures,
            covered_seconds: g.covered_ms as f64 / 1000.0,
        })
        .collect()
}

/// One row of `edges`, as `linkerd viz edges -o json`, plus traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeRow {
    /// Source workload.
    pub src: String,
    /// Its namespace.
    pub src_namespace: String,
    /// Destination workload.
    pub dst: String,
    /// Its namespace.
    pub dst_namespace: String,
    /// The client's identity name, `-` when unknown.
    pub client_id: String,
    /// The server's identity name, `-` when unknown.
    pub server_id: String,
    /// mTLS between the two proxies (`tls="true"`).
    pub secured: bool,
    /// Requests per second over the window.
    pub rps: Option<f64>,
    /// Success rate over the window.
    pub success: Option<f64>,
    /// Requests in the window.
    pub requests: u64,
}

/// `GET /v1/edges` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edges {
    /// The window asked for, seconds.
    pub window_seconds: u64,
    /// One row per source → destination pair.
    pub rows: Vec<EdgeRow>,
}

/// `edges` over `window_ms` ending at `now_ms`. An edge seen from both
/// ends (the client's outbound and the server's inbound series) is shown
/// once, with the server's counts. Inbound traffic without a client
/// identity (plaintext) has no known source and is not an edge.
pub fn edges(
    targets: &Targets,
    resource: Resource,
    filter: &Filter,
    trust_domain: &str,
    now_ms: u64,
    window_ms: u64,
) -> Vec<EdgeRow> {
    let from = now_ms.saturating_sub(window_ms);
    // Identity name → workload, from the targets' `identity` labels.
    let mut by_identity: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (addr, t) in targets {
        if let (Some(id), Some(name)) = (t.label("identity"), resource.name_of(addr, t)) {
            if let Ok(id) = id.parse::<pimesh_api::identity::Identity>() {
                by_identity.insert(id.dns_name(trust_domain), (namespace_of(t), name));
            }
        }
    }
    let resolve = |id: &str| -> (String, String) {
        if let Some(w) = by_identity.get(id) {
            return w.clone();
        }
        // `<sa>.<ns>.serviceaccount.identity...`: the ServiceAccount names
        // the workload, as it does in most Kubernetes deployments.
        let mut parts = id.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(sa), Some(ns), Some("serviceaccount")) => (ns.to_string(), sa.to_string()),
            _ => (DEFAULT_NAMESPACE.to_string(), id.to_string()),
        }
    };
    // (src ns, src, dst ns, dst) → (row, seen from the server side).
    let mut rows: BTreeMap<(String, String, String, String), (EdgeRow, bool)> = BTreeMap::new();
    for (addr, t) in targets {
        let Some(me) = resource.name_of(addr, t) else {
            continue;
        };
        let my_ns = namespace_of(t);
        let my_id = t
            .label("identity")
            .and_then(|i| i.parse::<pimesh_api::identity::Identity>().ok())
            .map(|i| i.dns_name(trust_domain));
        for (k, ring) in &t.edges {
            let (requests, ok, failed, covered) =
                ring.between(from, now_ms).fold((0, 0, 0, 0), |a, p| {
                    (
                        a.0 + p.requests,
                        a.1 + p.successes,
                        a.2 + p.failures,
                        a.3 + p.dt_ms,
                    )
                });
            if requests == 0 && ok + failed == 0 {
                continue;
            }
            let (src_ns, src, dst_ns, dst, client_id, server_id) = match k {
                EdgeKey {
                    inbound: true,
                    peer_id: Some(id),
                    ..
                } => {
                    let (ns, name) = resolve(id);
                    (
                        ns,
                        name,
                        my_ns.clone(),
                        me.clone(),
                        Some(id.clone()),
                        my_id.clone(),
                    )
                }
                EdgeKey {
                    inbound: false,
                    peer_id,
                    dst,
                    ..
                } => {
                    let named = dst.as_ref().and_then(|d| {
                        let name = match resource {
                            Resource::Deployment => d.deployment.clone().or(d.pod.clone()),
                            Resource::Service => d.service.clone(),
                            Resource::Pod => d.pod.clone(),
                        }?;
                        Some((d.namespace.clone().unwrap_or_else(|| my_ns.clone()), name))
                    });
                    let Some((ns, name)) = named.or_else(|| peer_id.as_deref().map(resolve)) else {
                        continue;
                    };
                    (
                        my_ns.clone(),
                        me.clone(),
                        ns,
                        name,
                        my_id.clone(),
                        peer_id.clone(),
                    )
                }
                _ => continue,
            };
            if !filter.keeps(&src_ns, &src) && !filter.keeps(&dst_ns, &dst) {
                continue;
            }
            let row = EdgeRow {
                src,
                src_namespace: src_ns,
                dst,
                dst_namespace: dst_ns,
                client_id: client_id.unwrap_or_else(|| "-".into()),
                server_id: server_id.unwrap_or_else(|| "-".into()),
                secured: k.tls,
                rps: per_second(requests, covered),
                success: (ok + failed > 0).then(|| ok as f64 / (ok + failed) as f64),
                requests,
            };
            let key = (
                row.src_namespace.clone(),
                row.src.clone(),
                row.dst_namespace.clone(),
                row.dst.clone(),
            );
            match rows.get_mut(&key) {
                None => {
                    rows.insert(key, (row, k.inbound));
                }
                Some((old, server_side)) => match (k.inbound, *server_side) {
                    (true, false) => {
                        // The server's view wins; keep what only the client knew.
                        let client_view = std::mem::replace(old, row);
                        fill_ids(old, &client_view);
                        *server_side = true;
                    }
                    (false, true) => fill_ids(old, &row),
                    _ => {
                        // Two pods of one workload: add up.
                        old.requests += row.requests;
                        old.rps = match (old.rps, row.rps) {
                            (Some(a), Some(b)) => Some(a + b),
                            (a, b) => a.or(b),
                        };
                        old.secured &= row.secured;
                    }
                },
            }
        }
    }
    rows.into_values().map(|(r, _)| r).collect()
}

/// Fills `row`'s unknown identities from `other` (the other end's view).
fn fill_ids(row: &mut EdgeRow, other: &EdgeRow) {
    if row.server_id == "-" {
        row.server_id = other.server_id.clone();
    }
    if row.client_id == "-" {
        row.client_id = other.client_id.clone();
    }
}

#[cfg(test)]
mod tests;
