//! The watched objects as they are decoded: only the fields discovery
//! reads (serde skips the rest — specs' containers and volumes, statuses'
//! conditions — while decoding), instead of `k8s-openapi`'s complete Pod,
//! Service and EndpointSlice types. A list page therefore never holds full
//! objects, and their (large) decoders are not in the binary. Each type
//! implements `k8s_openapi::Resource` and `Metadata`, so `kube` watches it
//! as it watches the generated types (same paths: `/api/v1/pods`, ...).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

macro_rules! resource {
    ($ty:ident, $api_version:literal, $group:literal, $kind:literal, $version:literal, $plural:literal) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = $api_version;
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// core/v1 Pod: ServiceAccount and IP.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pod {
    /// Name, namespace, labels, annotations, ownerReferences.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `spec.serviceAccountName`.
    #[serde(default)]
    pub spec: Option<PodSpec>,
    /// `status.podIP`.
    #[serde(default)]
    pub status: Option<PodStatus>,
}
resource!(Pod, "v1", "", "Pod", "v1", "pods");

/// The part of `spec` kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The pod's ServiceAccount (empty or absent: `default`).
    #[serde(default)]
    pub service_account_name: Option<String>,
}

/// The part of `status` kept.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodStatus {
    /// The pod's (first) IP.
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
}

/// core/v1 Service: type, ports, ClusterIPs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Service {
    /// Name, namespace, annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Type, ports, ClusterIPs.
    #[serde(default)]
    pub spec: Option<ServiceSpec>,
}
resource!(Service, "v1", "", "Service", "v1", "services");

/// The part of a Service's `spec` kept.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceSpec {
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// The ports.
    #[serde(default)]
    pub ports: Option<Vec<ServicePort>>,
    /// `clusterIP` (`None` for headless Services).
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// `clusterIPs` (dual-stack).
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
}

/// A Service port.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServicePort {
    /// Its name (matches the EndpointSlices' port names).
    #[serde(default)]
    pub name: Option<String>,
    /// The port clients address.
    #[serde(default)]
    pub port: i32,
    /// `TCP` (absent), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// discovery.k8s.io/v1 EndpointSlice: endpoints and ports.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndpointSlice {
    /// Name, namespace, the `kubernetes.io/service-name` label.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Option<Vec<Endpoint>>,
    /// The (target) ports.
    #[serde(default)]
    pub ports: Option<Vec<EndpointPort>>,
}
resource!(
    EndpointSlice,
    "discovery.k8s.io/v1",
    "discovery.k8s.io",
    "EndpointSlice",
    "v1",
    "endpointslices"
);

/// One endpoint of a slice.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Its addresses (one, for IPv4 and IPv6 slices).
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    /// `ready` (absent: ready).
    #[serde(default)]
    pub conditions: Option<EndpointConditions>,
    /// The pod behind it.
    #[serde(default)]
    pub target_ref: Option<TargetRef>,
}

/// An endpoint's conditions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndpointConditions {
    /// Ready to receive traffic (absent: ready).
    #[serde(default)]
    pub ready: Option<bool>,
}

/// An endpoint's `targetRef`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TargetRef {
    /// `Pod` for pods.
    #[serde(default)]
    pub kind: Option<String>,
    /// The pod's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The pod's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A slice port.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndpointPort {
    /// Its name (the Service port's).
    #[serde(default)]
    pub name: Option<String>,
    /// The target port.
    #[serde(default)]
    pub port: Option<i32>,
    /// `TCP` (absent), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Option<String>,
}
