//! The registry's records as stored in sled (one JSON record per service,
//! its endpoints inside), and the operator API's JSON shapes
//! (`/v1/services`, `/v1/endpoints`).

use pimesh_api::discovery::{Endpoint, ProtocolHint, Resolution, ServiceName, ServicePolicy};
use pimesh_api::identity::Identity;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// How an endpoint got into the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Registered by a proxy with its join token; kept alive by a lease.
    Registered,
    /// Added by an operator (`pimesh service add`); no lease, stays until removed.
    Operator,
    /// Discovered from a Kubernetes EndpointSlice (Kubernetes mode); in
    /// memory only, never stored.
    Kubernetes,
}

impl Source {
    /// The lowercase name (also a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Registered => "registered",
            Source::Operator => "operator",
            Source::Kubernetes => "kubernetes",
        }
    }
}

/// One endpoint as stored. Lease deadlines are not stored: they live in
/// memory and every lease gets a fresh TTL when the controller starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The service port it serves (`web:8080` → 8080).
    pub port: u16,
    /// The app's address.
    pub addr: SocketAddr,
    /// The peer proxy's inbound address when `addr` is not redirected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_addr: Option<SocketAddr>,
    /// The peer proxy's admin listener (scraped by telemetry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<SocketAddr>,
    /// The peer proxy's tap listener (opened by the tap relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_addr: Option<SocketAddr>,
    /// The identity its proxy presents; `None` outside the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Load-balancing weight.
    pub weight: u32,
    /// What the app speaks.
    #[serde(default)]
    pub protocol: ProtocolHint,
    /// Workload labels as given (the registry adds `namespace` and
    /// `service` when it answers).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Who put it here.
    pub source: Source,
    /// The id of the join token that registered it (audit), if registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

/// One service as stored under the key `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Service name (RFC 1123 label).
    pub name: String,
    /// Namespace (RFC 1123 label).
    pub namespace: String,
    /// Ports the service has: added by registrations and `service add`.
    /// A watch of a port the service does not have sees an unknown destination.
    pub ports: BTreeSet<u16>,
    /// Resilience settings (`pimesh service set`).
    #[serde(default)]
    pub policy: ServicePolicy,
    /// Endpoints, sorted by (port, addr, proxy_addr); at most one per
    /// (port, addr, proxy_addr): replicas on one host share `addr`, each
    /// with its own proxy's inbound address.
    #[serde(default)]
    pub endpoints: Vec<EndpointRecord>,
    /// The Service's ClusterIPs (Kubernetes mode): a `?addr=CLUSTERIP:PORT`
    /// watch resolves to this service's port. Empty in standalone mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<std::net::IpAddr>,
    /// Registry revision of the last change of this record.
    pub revision: u64,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
}

impl ServiceRecord {
    /// An empty service.
    pub fn new(namespace: &str, name: &str, now_unix: u64) -> ServiceRecord {
        ServiceRecord {
            name: name.to_string(),
            namespace: namespace.to_string(),
            ports: BTreeSet::new(),
            policy: ServicePolicy::default(),
            endpoints: Vec::new(),
            cluster_ips: Vec::new(),
            revision: 0,
            created_unix: now_unix,
        }
    }

    /// Its table key, `NAMESPACE/NAME`.
    pub fn key(&self) -> String {
        key(&self.namespace, &self.name)
    }

    /// Inserts or replaces the endpoint at (port, addr, proxy_addr);
    /// whether anything changed.
    pub fn upsert(&mut self, ep: EndpointRecord) -> bool {
        let mut changed = self.ports.insert(ep.port);
        match self.endpoints.binary_search_by(|e| {
            (e.port, e.addr, e.proxy_addr).cmp(&(ep.port, ep.addr, ep.proxy_addr))
        }) {
            Ok(i) if self.endpoints[i] == ep => {}
            Ok(i) => {
                self.endpoints[i] = ep;
                changed = true;
            }
            Err(i) => {
                self.endpoints.insert(i, ep);
                changed = true;
            }
        }
        changed
    }

    /// The endpoint at (port, addr, proxy_addr), if any.
    pub fn endpoint(
        &self,
        port: u16,
        addr: SocketAddr,
        proxy_addr: Option<SocketAddr>,
    ) -> Option<&EndpointRecord> {
        self.endpoints
            .iter()
            .find(|e| (e.port, e.addr, e.proxy_addr) == (port, addr, proxy_addr))
    }

    /// The API view of one endpoint: labels plus `namespace` and `service`.
    pub fn api_endpoint(&self, e: &EndpointRecord) -> Endpoint {
        let mut labels = e.labels.clone();
        labels.insert("namespace".into(), self.namespace.clone());
        labels.insert("service".into(), self.name.clone());
        Endpoint {
            addr: e.addr,
            proxy_addr: e.proxy_addr,
            identity: e.identity.clone(),
            weight: e.weight,
            protocol: e.protocol,
            labels,
            admin_addr: e.admin_addr,
            tap_addr: e.tap_addr,
        }
    }

    /// What a watch of `port` of this service sees.
    pub fn resolution(&self, port: u16, cluster_domain: &str) -> Resolution {
        Resolution {
            exists: true,
            service: Some(self.service_name().fqdn(cluster_domain)),
            port,
            endpoints: self
                .endpoints
                .iter()
                .filter(|e| e.port == port)
                .map(|e| self.api_endpoint(e))
                .collect(),
            policy: self.policy.clone(),
            routes: Vec::new(),
        }
    }

    /// `name.namespace`.
    pub fn service_name(&self) -> ServiceName {
        ServiceName {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

/// The table key of a service, `NAMESPACE/NAME`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// A service as the operator API shows it (`GET /v1/services[/NS/NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `NAME.NS.svc.<cluster domain>`.
    pub fqdn: String,
    /// Its ports.
    pub ports: Vec<u16>,
    /// Registry revision of its last change.
    pub revision: u64,
    /// Resilience settings.
    pub policy: ServicePolicy,
    /// Every endpoint, all ports, sorted by (port, addr, proxy_addr).
    pub endpoints: Vec<EndpointInfo>,
}

/// One endpoint as the operator API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// The service port it serves.
    pub port: u16,
    /// The endpoint as watches carry it (labels include `namespace`, `service`).
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Registered by a proxy or added by an operator.
    pub source: Source,
    /// When its lease runs out, Unix seconds (registered endpoints only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_unix: Option<u64>,
}

/// A live endpoint with its service, for the telemetry role
/// ([`Registry::endpoints`](super::Registry::endpoints)) and `GET /v1/endpoints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEndpoint {
    /// Service name.
    pub service: String,
    /// Namespace.
    pub namespace: String,
    /// The service port it serves.
    pub port: u16,
    /// The endpoint: `identity`, `labels` (with `namespace`, `service`),
    /// `admin_addr` (where its proxy's `/metrics` is, if it registered one).
    pub endpoint: Endpoint,
    /// Registered by a proxy or added by an operator.
    pub source: Source,
}

/// `POST /v1/services/{ns}/{name}/endpoints`: add (or replace) operator
/// endpoints, creating the service and the port if missing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddEndpoints {
    /// The service port (1–65535).
    pub port: u16,
    /// The endpoints' addresses (may be empty: the service and port only).
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// Their identity, when their proxies are meshed; none: plaintext.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// Workload labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the app speaks.
    #[serde(default)]
    pub protocol: ProtocolHint,
    /// Load-balancing weight (default `Endpoint::DEFAULT_WEIGHT`).
    #[serde(default)]
    pub weight: Option<u32>,
}

/// `PUT /v1/services/{ns}/{name}/policy`: the fields given replace the
/// stored ones; with `clear`, everything else is reset first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    /// Reset the policy before applying `policy`.
    #[serde(default)]
    pub clear: bool,
    /// The fields to set.
    #[serde(default)]
    pub policy: ServicePolicy,
}
