//! Servers' named ports (`port: http`), resolved for one proxy against its
//! pod's container ports by name (`PIMESH_PROXY_POD_PORTS`, set by the
//! injector from `spec.containers[*].ports`), as Linkerd's policy
//! controller resolves a Server's named port against the pod's
//! `containerPort`s. A name the pod does not have selects nothing. No I/O.

use super::resource::Resource;
use super::server::Port;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `all` with the named ports of `namespace`'s Servers replaced by the
/// numbers `ports` gives them (`all` itself, shared, when none is named).
pub fn resolve_named(
    all: &Arc<Vec<Resource>>,
    namespace: &str,
    ports: &BTreeMap<String, u16>,
) -> Arc<Vec<Resource>> {
    let named = |r: &Resource| match r {
        Resource::Server(s) => {
            r.namespace() == Some(namespace) && matches!(s.spec.port, Port::Name(_))
        }
        _ => false,
    };
    if ports.is_empty() || !all.iter().any(named) {
        return all.clone();
    }
    Arc::new(
        all.iter()
            .map(|r| match r {
                Resource::Server(s) if named(r) => {
                    let mut s = s.clone();
                    if let Port::Name(n) = &s.spec.port {
                        if let Some(p) = ports.get(n) {
                            s.spec.port = Port::Number(i64::from(*p));
                        }
                    }
                    Resource::Server(s)
                }
                _ => r.clone(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::inbound::{inbound_policy, Workload};
    use serde_json::json;

    fn server(name: &str, ns: &str, port: serde_json::Value) -> Resource {
        Resource::parse(json!({
            "apiVersion": "policy.pimesh.io/v1alpha1",
            "kind": "Server",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "port": port},
        }))
        .unwrap()
    }

    #[test]
    fn a_named_port_selects_the_container_port_of_that_name() {
        let all = Arc::new(vec![
            server("api-http", "shop", json!("http")),
            server("api-admin", "shop", json!("admin")),
            server("other-http", "other", json!("http")),
        ]);
        let ports: BTreeMap<String, u16> = [("http".to_string(), 8080)].into();
        let labels: BTreeMap<String, String> = [("app".to_string(), "api".to_string())].into();
        let w = Workload {
            namespace: "shop",
            labels: &labels,
        };
        // Unresolved, no port is selected; resolved, 8080 is api-http's;
        // `admin` is not a port of this pod.
        assert!(inbound_policy(&all, &w, "cluster.local").servers.is_empty());
        let resolved = resolve_named(&all, "shop", &ports);
        let p = inbound_policy(&resolved, &w, "cluster.local");
        assert_eq!(p.servers.keys().collect::<Vec<_>>(), [&8080]);
        assert_eq!(p.servers[&8080].name, "api-http");
        // Another namespace's Server is left as it was.
        assert!(matches!(
            &resolved[2],
            Resource::Server(s) if s.spec.port == Port::Name("http".into())
        ));
        // Nothing named, or no ports: the same list, shared.
        assert!(Arc::ptr_eq(
            &resolve_named(&all, "shop", &BTreeMap::new()),
            &all
        ));
        let numbered = Arc::new(vec![server("n", "shop", json!(80))]);
        assert!(Arc::ptr_eq(
            &resolve_named(&numbered, "shop", &ports),
            &numbered
        ));
    }
}
