//! Scrape targets: the proxies' admin listeners (`/metrics`) and the
//! workload labels known for them. Targets come from sources: the static
//! `--scrape-target ADMIN_ADDR[,label=value...]` flags, and any number of
//! dynamic [`TargetSource`]s (the standalone registry, later Kubernetes
//! pods) plugged in with [`Telemetry::add_source`](super::Telemetry::add_source).

use pimesh_api::discovery::Endpoint;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Labels a target may carry; others given on the command line are refused
/// (typos would silently group workloads wrongly).
pub const TARGET_LABELS: [&str; 5] = ["namespace", "deployment", "pod", "service", "identity"];

/// One proxy to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The proxy's admin listener; `GET /metrics` there.
    pub admin_addr: SocketAddr,
    /// Workload labels (`namespace`, `deployment`, `pod`, `service`) and the
    /// proxy's mesh `identity` (`NS/SA`) when known. They override the
    /// workload labels the proxy puts on its own series.
    pub labels: BTreeMap<String, String>,
}

impl Target {
    /// A target for an endpoint of the discovery registry, if its proxy
    /// registered an admin listener: the hook for the registry, e.g.
    /// `telemetry.add_source(Arc::new(move || registry.endpoints().iter().filter_map(Target::from_endpoint).collect()))`.
    pub fn from_endpoint(e: &Endpoint) -> Option<Target> {
        let admin_addr = e.admin_addr?;
        let mut labels: BTreeMap<String, String> = e
            .labels
            .iter()
            .filter(|(k, _)| TARGET_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(id) = &e.identity {
            labels.insert("identity".into(), id.to_string());
        }
        Some(Target { admin_addr, labels })
    }
}

/// A source of targets, asked before every scrape round. Must be cheap
/// (called on the controller's runtime thread) and must not block.
pub trait TargetSource: Send + Sync {
    /// The targets now.
    fn targets(&self) -> Vec<Target>;
}

impl<F: Fn() -> Vec<Target> + Send + Sync> TargetSource for F {
    fn targets(&self) -> Vec<Target> {
        self()
    }
}

/// Every target of every source, deduplicated by admin address (the first
/// source naming an address wins; static flags come first), at most `max`.
/// Returns the targets and how many were left out over `max`.
pub fn collect(
    statics: &[Target],
    sources: &[Arc<dyn TargetSource>],
    max: usize,
) -> (Vec<Target>, usize) {
    let mut out: Vec<Target> = Vec::new();
    let mut dropped = 0;
    let dynamic = sources.iter().flat_map(|s| s.targets());
    for t in statics.iter().cloned().chain(dynamic) {
        if out.iter().any(|o| o.admin_addr == t.admin_addr) {
            continue;
        }
        if out.len() >= max {
            dropped += 1;
            continue;
        }
        out.push(t);
    }
    (out, dropped)
}

/// Parses one `--scrape-target` value: `ADMIN_ADDR[,label=value...]` with
/// labels among [`TARGET_LABELS`], e.g.
/// `10.0.0.5:4191,namespace=shop,deployment=web`.
///
/// # Errors
///
/// A message naming the part that is not an `IP:PORT` address, not
/// `label=value`, a label not among [`TARGET_LABELS`], or a bad value.
pub fn parse_target(v: &str) -> Result<Target, String> {
    let mut parts = v.split(',').map(str::trim);
    let addr = parts.next().unwrap_or_default();
    let admin_addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP:PORT admin address"))?;
    let mut labels = BTreeMap::new();
    for part in parts {
        let (k, val) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not label=value"))?;
        if !TARGET_LABELS.contains(&k) {
            return Err(format!(
                "unknown label {k:?} (use {})",
                TARGET_LABELS.join(", ")
            ));
        }
        if val.is_empty() || val.len() > 253 || val.contains(['"', '\\', '\n']) {
            return Err(format!("bad value {val:?} for label {k}"));
        }
        labels.insert(k.to_string(), val.to_string());
    }
    Ok(Target { admin_addr, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let t = parse_target("127.0.0.1:4191,namespace=shop,deployment=web").unwrap();
        assert_eq!(t.admin_addr, "127.0.0.1:4191".parse().unwrap());
        assert_eq!(t.labels["namespace"], "shop");
        assert_eq!(t.labels["deployment"], "web");
        assert!(parse_target("[::1]:4191").unwrap().labels.is_empty());
        for bad in [
            "",
            "web:4191",
            "127.0.0.1",
            "127.0.0.1:1,shop",
            "127.0.0.1:1,colour=red",
            "127.0.0.1:1,namespace=",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dedups_and_bounds() {
        let t = |s: &str| parse_target(s).unwrap();
        let statics = vec![t("127.0.0.1:1,pod=a"), t("127.0.0.1:2")];
        let dynamic: Arc<dyn TargetSource> =
            Arc::new(move || vec![t("127.0.0.1:1,pod=b"), t("127.0.0.1:3")]);
        let (all, dropped) = collect(&statics, std::slice::from_ref(&dynamic), 10);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].labels["pod"], "a", "static flags win");
        assert_eq!(dropped, 0);
        let (all, dropped) = collect(&statics, &[dynamic], 2);
        assert_eq!((all.len(), dropped), (2, 1));
    }

    #[test]
    fn from_registry_endpoints() {
        let mut e: Endpoint = serde_json::from_value(serde_json::json!({
            "addr": "10.0.0.5:8080",
            "identity": "shop/web",
            "labels": {"namespace": "shop", "deployment": "web", "zone": "a"},
            "admin_addr": "10.0.0.5:4191"
        }))
        .unwrap();
        let t = Target::from_endpoint(&e).unwrap();
        assert_eq!(t.admin_addr, "10.0.0.5:4191".parse().unwrap());
        assert_eq!(t.labels["identity"], "shop/web");
        assert!(!t.labels.contains_key("zone"));
        e.admin_addr = None;
        assert!(Target::from_endpoint(&e).is_none());
    }
}
