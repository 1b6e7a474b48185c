//! Compact copies of the Kubernetes objects discovery needs: a Service's
//! TCP ports, ClusterIPs and opaque ports; an EndpointSlice's ready
//! addresses, ports and target pods; a Pod's identity, owner and proxy
//! ports. Objects are converted as they arrive and dropped: managedFields,
//! specs and statuses are never kept (memory: the controller is Pi-sized).

use super::wire::{EndpointSlice, Pod, Service};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Label of meshed pods, naming the control plane's namespace (added by
/// the injector, as Linkerd's `linkerd.io/control-plane-ns`).
pub const MESHED_LABEL: &str = "pimesh.io/control-plane-ns";
/// Annotation on a Service (service ports) or a Pod (container ports):
/// ports never protocol-detected, `25,3306,4000-4010` (as Linkerd's
/// `config.linkerd.io/opaque-ports`; port names are not supported).
pub const OPAQUE_PORTS_ANNOTATION: &str = "config.pimesh.io/opaque-ports";
/// Label of an EndpointSlice naming its Service (discovery.k8s.io/v1).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label the Deployment controller puts on its ReplicaSets' pods; the
/// ReplicaSet is named `<deployment>-<hash>`.
const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// A meshed pod's proxy admin port (`/metrics`), Linkerd's.
pub const PROXY_ADMIN_PORT: u16 = 4191;
/// A meshed pod's proxy tap port, Linkerd's.
pub const PROXY_TAP_PORT: u16 = 4190;

/// Inclusive port ranges, e.g. `[(3306, 3306), (4000, 4010)]`.
pub type PortRanges = Vec<(u16, u16)>;

/// `NS/NAME`, the key of services (as the registry's), slices and pods.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// A Service's port clients address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Its name (empty for a Service's single unnamed port); matches the
    /// EndpointSlices' port name.
    pub name: String,
    /// The port number clients address (the record's port).
    pub port: u16,
}

/// What discovery keeps of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLite {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its TCP ports (UDP and SCTP ports are not meshed).
    pub ports: Vec<ServicePort>,
    /// `spec.clusterIPs` (none for headless Services).
    pub cluster_ips: Vec<IpAddr>,
    /// Service ports from [`OPAQUE_PORTS_ANNOTATION`].
    pub opaque: PortRanges,
}

/// A ready address of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// The (first) address.
    pub ip: IpAddr,
    /// The pod behind it (`targetRef` of kind Pod), in the slice's namespace.
    pub pod: Option<String>,
}

/// What discovery keeps of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceLite {
    /// Namespace.
    pub namespace: String,
    /// The Service it belongs to ([`SERVICE_NAME_LABEL`]), if any.
    pub service: Option<String>,
    /// TCP ports: (name, target port).
    pub ports: Vec<(String, u16)>,
    /// Ready endpoints only (`conditions.ready` absent counts as ready).
    pub endpoints: Vec<SliceEndpoint>,
}

impl SliceLite {
    /// The service's registry key `NS/NAME`, if the slice has one.
    pub fn service_key(&self) -> Option<String> {
        self.service.as_ref().map(|s| key(&self.namespace, s))
    }
}

/// What discovery keeps of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLite {
    /// Name (the `pod` label).
    pub name: String,
    /// `spec.serviceAccountName`, `default` when empty.
    pub service_account: String,
    /// Whether it carries [`MESHED_LABEL`] (has a proxy).
    pub meshed: bool,
    /// `status.podIP`.
    pub ip: Option<IpAddr>,
    /// The owner label, e.g. `("deployment", "web")`, see [`owner_label`].
    pub owner: Option<(&'static str, String)>,
    /// Target ports from [`OPAQUE_PORTS_ANNOTATION`].
    pub opaque: PortRanges,
}

/// Parses a comma list of ports and inclusive ranges (`25,4000-4010`);
/// parts that are not a port or a range (names, garbage, zero, reversed
/// ranges) are skipped and returned second, for the caller to log.
pub fn parse_port_ranges(v: &str) -> (PortRanges, Vec<String>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = match part.split_once('-') {
            Some((a, b)) => a
                .trim()
                .parse::<u16>()
                .ok()
                .zip(b.trim().parse::<u16>().ok()),
            None => part.parse::<u16>().ok().map(|p| (p, p)),
        };
        match parsed {
            Some((a, b)) if a >= 1 && a <= b => ok.push((a, b)),
            _ => bad.push(part.to_string()),
        }
    }
    (ok, bad)
}

/// Whether `port` is in `ranges`.
pub fn in_ranges(ranges: &[(u16, u16)], port: u16) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&port))
}

/// The workload label of a pod's controlling owner, as Linkerd's
/// destination gives it: a ReplicaSet named `<deployment>-<pod-template-hash>`
/// → `deployment` (without the suffix), another ReplicaSet → `replicaset`;
/// `statefulset`, `daemonset`, `job`, `replicationcontroller`. `owners` are
/// (kind, name, controller) triples; the controller one wins, else the first.
pub fn owner_label(
    owners: &[(&str, &str, bool)],
    template_hash: Option<&str>,
) -> Option<(&'static str, String)> {
    let (kind, name, _) = owners
        .iter()
        .find(|(_, _, controller)| *controller)
        .or_else(|| owners.first())?;
    let label = match *kind {
        "ReplicaSet" => {
            let suffix = template_hash
                .filter(|h| !h.is_empty())
                .map(|h| format!("-{h}"));
            return Some(match suffix.and_then(|s| name.strip_suffix(s.as_str())) {
                Some(deployment) if !deployment.is_empty() => ("deployment", deployment.into()),
                _ => ("replicaset", name.to_string()),
            });
        }
        "StatefulSet" => "statefulset",
        "DaemonSet" => "daemonset",
        "Job" => "job",
        "ReplicationController" => "replicationcontroller",
        _ => return None,
    };
    Some((label, name.to_string()))
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

fn opaque_annotation(
    annotations: Option<&BTreeMap<String, String>>,
    what: &str,
    key: &str,
) -> PortRanges {
    let Some(v) = annotations.and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION)) else {
        return Vec::new();
    };
    let (ranges, bad) = parse_port_ranges(v);
    if !bad.is_empty() {
        tracing::warn!(%what, object = %key, ignored = ?bad, "{OPAQUE_PORTS_ANNOTATION}: not ports or ranges");
    }
    ranges
}

impl ServiceLite {
    /// The compact copy; `None` for ExternalName Services and objects
    /// without a name or namespace (nothing to discover).
    pub fn from_object(svc: &Service) -> Option<ServiceLite> {
        let namespace = svc.metadata.namespace.clone()?;
        let name = svc.metadata.name.clone()?;
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| is_tcp(p.protocol.as_deref()))
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port).ok().filter(|p| *p > 0)?,
                })
            })
            .collect();
        let mut ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.as_ref());
        }
        let cluster_ips = ips.into_iter().filter_map(|ip| ip.parse().ok()).collect();
        let opaque = opaque_annotation(
            svc.metadata.annotations.as_ref(),
            "Service",
            &key(&namespace, &name),
        );
        Some(ServiceLite {
            namespace,
            name,
            ports,
            cluster_ips,
            opaque,
        })
    }
}

impl SliceLite {
    /// The compact copy; `None` without a namespace. Endpoints that are not
    /// ready or have no parseable address (FQDN slices) are dropped.
    pub fn from_object(slice: &EndpointSlice) -> Option<SliceLite> {
        let namespace = slice.metadata.namespace.clone()?;
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| is_tcp(p.protocol.as_deref()))
            .filter_map(|p| {
                let port = u16::try_from(p.port?).ok().filter(|p| *p > 0)?;
                Some((p.name.clone().unwrap_or_default(), port))
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| {
                let ip = e.addresses.as_ref()?.first()?.parse().ok()?;
                let pod = e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .filter(|r| r.namespace.as_ref().is_none_or(|ns| *ns == namespace))
                    .and_then(|r| r.name.clone());
                Some(SliceEndpoint { ip, pod })
            })
            .collect();
        Some(SliceLite {
            namespace,
            service,
            ports,
            endpoints,
        })
    }
}

impl PodLite {
    /// The compact copy; `None` without a name.
    pub fn from_object(pod: &Pod) -> Option<PodLite> {
        let name = pod.metadata.name.clone()?;
        let labels = pod.metadata.labels.as_ref();
        let owners: Vec<(&str, &str, bool)> = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| (o.kind.as_str(), o.name.as_str(), o.controller == Some(true)))
            .collect();
        let hash = labels
            .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL))
            .map(String::as_str);
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|ip| ip.parse().ok());
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        Some(PodLite {
            meshed: labels.is_some_and(|l| l.contains_key(MESHED_LABEL)),
            owner: owner_label(&owners, hash),
            opaque: opaque_annotation(pod.metadata.annotations.as_ref(), "Pod", &key(ns, &name)),
            name,
            service_account,
            ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn port_ranges() {
        let (ok, bad) = parse_port_ranges(" 25, 4000-4010,mysql,0,9-3,70000, 3306 ");
        assert_eq!(ok, vec![(25, 25), (4000, 4010), (3306, 3306)]);
        assert_eq!(bad, vec!["mysql", "0", "9-3", "70000"]);
        assert!(in_ranges(&ok, 4005) && in_ranges(&ok, 25) && !in_ranges(&ok, 26));
        assert_eq!(parse_port_ranges(""), (vec![], vec![]));
    }

    #[test]
    fn owners_become_linkerd_labels() {
        let rs = [("ReplicaSet", "web-7c9f8d6b5d", true)];
        assert_eq!(
            owner_label(&rs, Some("7c9f8d6b5d")),
            Some(("deployment", "web".into()))
        );
        assert_eq!(
            owner_label(&rs, Some("other")),
            Some(("replicaset", "web-7c9f8d6b5d".into()))
        );
        assert_eq!(
            owner_label(&rs, None),
            Some(("replicaset", "web-7c9f8d6b5d".into()))
        );
        for (kind, label) in [
            ("StatefulSet", "statefulset"),
            ("DaemonSet", "daemonset"),
            ("Job", "job"),
        ] {
            assert_eq!(
                owner_label(&[(kind, "x", true)], None),
                Some((label, "x".into()))
            );
        }
        // The controller reference wins over the first one.
        assert_eq!(
            owner_label(&[("Node", "n", false), ("Job", "j", true)], None),
            Some(("job", "j".into()))
        );
        assert_eq!(owner_label(&[("Node", "n", true)], None), None);
        assert_eq!(owner_label(&[], None), None);
    }

    #[test]
    fn service_keeps_tcp_ports_cluster_ips_and_opaque_ports() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "shop",
                "annotations": {"config.pimesh.io/opaque-ports": "5432"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5", "fd00::5"],
                "ports": [{"name": "pg", "port": 5432, "targetPort": 15432},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))
        .unwrap();
        let lite = ServiceLite::from_object(&svc).unwrap();
        assert_eq!(
            lite,
            ServiceLite {
                namespace: "shop".into(),
                name: "db".into(),
                ports: vec![ServicePort {
                    name: "pg".into(),
                    port: 5432
                }],
                cluster_ips: vec!["10.43.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
                opaque: vec![(5432, 5432)],
            }
        );
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"name": "h", "namespace": "a"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }))
        .unwrap();
        let lite = ServiceLite::from_object(&headless).unwrap();
        assert!(lite.cluster_ips.is_empty());
        assert_eq!(lite.ports[0].name, "");
        let external: Service = serde_json::from_value(json!({
            "metadata": {"name": "e", "namespace": "a"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}
        }))
        .unwrap();
        assert_eq!(ServiceLite::from_object(&external), None);
    }

    #[test]
    fn slice_keeps_ready_endpoints_and_pod_refs() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "q", "port": 9, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.42.0.7"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}},
                {"addresses": ["10.42.0.8"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "name": "web-2", "namespace": "shop"}},
                {"addresses": ["10.42.0.9"]},
                {"addresses": ["not-an-ip"]}
            ]
        }))
        .unwrap();
        let lite = SliceLite::from_object(&slice).unwrap();
        assert_eq!(lite.service_key().as_deref(), Some("shop/web"));
        assert_eq!(lite.ports, vec![("http".to_string(), 8080)]);
        assert_eq!(
            lite.endpoints,
            vec![
                SliceEndpoint {
                    ip: "10.42.0.7".parse().unwrap(),
                    pod: Some("web-1".into())
                },
                SliceEndpoint {
                    ip: "10.42.0.9".parse().unwrap(),
                    pod: None
                },
            ]
        );
    }

    #[test]
    fn pod_keeps_identity_owner_and_ports() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-5d8f-x2", "namespace": "shop",
                "labels": {"pimesh.io/control-plane-ns": "pimesh", "pod-template-hash": "5d8f"},
                "annotations": {"config.pimesh.io/opaque-ports": "6379,7000-7001"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d8f", "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "app"}], "serviceAccountName": "web"},
            "status": {"podIP": "10.42.0.7"}
        }))
        .unwrap();
        assert_eq!(
            PodLite::from_object(&pod).unwrap(),
            PodLite {
                name: "web-5d8f-x2".into(),
                service_account: "web".into(),
                meshed: true,
                ip: Some("10.42.0.7".parse().unwrap()),
                owner: Some(("deployment", "web".into())),
                opaque: vec![(6379, 6379), (7000, 7001)],
            }
        );
        let bare: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "a"},
            "spec": {"containers": [], "serviceAccountName": ""}
        }))
        .unwrap();
        let lite = PodLite::from_object(&bare).unwrap();
        assert_eq!(lite.service_account, "default");
        assert!(!lite.meshed && lite.ip.is_none() && lite.owner.is_none());
    }
}
