//! One policy resource of any of the seven kinds, from a YAML/JSON document:
//! [`Resource::parse`] checks the API group and kind, deserialises (a type
//! error names its field's path, through `serde_path_to_error`) and
//! [`validate`]s.

use super::authn::{MeshTLSAuthentication, NetworkAuthentication};
use super::authz::AuthorizationPolicy;
use super::grpcroute::{self, GRPCRoute};
use super::httproute::{self, HTTPRoute, GATEWAY_VERSION};
use super::ratelimit::HTTPLocalRateLimitPolicy;
use super::refs::{GATEWAY_GROUP, GROUP, LINKERD_GROUP, VERSION};
use super::server::Server;
use super::validate::{self as rules, dns_label, dns_subdomain, invalid, Invalid};
use serde::de::DeserializeOwned;
use std::fmt;

/// One policy resource, of any of the seven kinds.
#[derive(Debug, Clone)]
pub enum Resource {
    /// A `Server`.
    Server(Server),
    /// An `AuthorizationPolicy`.
    AuthorizationPolicy(AuthorizationPolicy),
    /// A `MeshTLSAuthentication`.
    MeshTLSAuthentication(MeshTLSAuthentication),
    /// A `NetworkAuthentication`.
    NetworkAuthentication(NetworkAuthentication),
    /// An `HTTPLocalRateLimitPolicy`.
    HTTPLocalRateLimitPolicy(HTTPLocalRateLimitPolicy),
    /// A Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`).
    HTTPRoute(HTTPRoute),
    /// A Gateway API `GRPCRoute` (`gateway.networking.k8s.io/v1`).
    GRPCRoute(GRPCRoute),
}

/// The kinds [`Resource::parse`] takes.
pub const KINDS: [&str; 7] = [
    "Server",
    "AuthorizationPolicy",
    "MeshTLSAuthentication",
    "NetworkAuthentication",
    "HTTPLocalRateLimitPolicy",
    "HTTPRoute",
    "GRPCRoute",
];

impl Resource {
    /// A resource from one YAML/JSON document, checked by [`validate`].
    ///
    /// # Errors
    ///
    /// [`Invalid`] naming `apiVersion` (not `policy.pimesh.io/v1alpha1`,
    /// or `gateway.networking.k8s.io/v1` for an `HTTPRoute` or a
    /// `GRPCRoute`; Linkerd's
    /// group is named as such), `kind` (not one of [`KINDS`]),
    /// `metadata.name` (missing or not a DNS subdomain), the field of a
    /// type error (`spec.proxyProtocol: unknown variant …`), or the first
    /// rule [`validate`] finds broken.
    pub fn parse(doc: serde_json::Value) -> Result<Resource, Invalid> {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let expected = match doc["kind"].as_str() {
            Some("HTTPRoute" | "GRPCRoute") => format!("{GATEWAY_GROUP}/{GATEWAY_VERSION}"),
            _ => format!("{GROUP}/{VERSION}"),
        };
        if api_version != expected {
            let reason = if api_version.starts_with(LINKERD_GROUP) {
                format!("{api_version:?} is Linkerd's group; pimesh's is {expected}")
            } else {
                format!("{api_version:?}: must be {expected}")
            };
            return Err(invalid("apiVersion", reason));
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        if !dns_subdomain(name) {
            return Err(invalid(
                "metadata.name",
                format!("{name:?} is not a DNS subdomain (a-z, 0-9, '-', '.', at most 253)"),
            ));
        }
        if let Some(ns) = doc["metadata"].get("namespace") {
            if !ns.as_str().is_some_and(dns_label) {
                return Err(invalid(
                    "metadata.namespace",
                    format!("{ns} is not a namespace name"),
                ));
            }
        }
        let r = match doc["kind"].as_str().unwrap_or_default() {
            "Server" => Resource::Server(typed(doc)?),
            "AuthorizationPolicy" => Resource::AuthorizationPolicy(typed(doc)?),
            "MeshTLSAuthentication" => Resource::MeshTLSAuthentication(typed(doc)?),
            "NetworkAuthentication" => Resource::NetworkAuthentication(typed(doc)?),
            "HTTPLocalRateLimitPolicy" => Resource::HTTPLocalRateLimitPolicy(typed(doc)?),
            "HTTPRoute" => Resource::HTTPRoute(typed(doc)?),
            "GRPCRoute" => Resource::GRPCRoute(typed(doc)?),
            other => {
                return Err(invalid(
                    "kind",
                    format!("{other:?} is not one of {}", KINDS.join(", ")),
                ))
            }
        };
        validate(&r)?;
        Ok(r)
    }

    /// The resource's kind, one of [`KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Server(_) => KINDS[0],
            Resource::AuthorizationPolicy(_) => KINDS[1],
            Resource::MeshTLSAuthentication(_) => KINDS[2],
            Resource::NetworkAuthentication(_) => KINDS[3],
            Resource::HTTPLocalRateLimitPolicy(_) => KINDS[4],
            Resource::HTTPRoute(_) => KINDS[5],
            Resource::GRPCRoute(_) => KINDS[6],
        }
    }

    /// Its `metadata` (name, namespace, generation, resourceVersion, …).
    pub fn metadata(&self) -> &kube::core::ObjectMeta {
        match self {
            Resource::Server(r) => &r.metadata,
            Resource::AuthorizationPolicy(r) => &r.metadata,
            Resource::MeshTLSAuthentication(r) => &r.metadata,
            Resource::NetworkAuthentication(r) => &r.metadata,
            Resource::HTTPLocalRateLimitPolicy(r) => &r.metadata,
            Resource::HTTPRoute(r) => &r.metadata,
            Resource::GRPCRoute(r) => &r.metadata,
        }
    }

    /// `metadata.namespace`, when set.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// `metadata.name` ([`Resource::parse`] checked it is there).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The resource as a JSON object (its `apiVersion`, `kind`, `metadata`
    /// and `spec`, with the schema's defaults filled in).
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Resource::Server(r) => serde_json::to_value(r),
            Resource::AuthorizationPolicy(r) => serde_json::to_value(r),
            Resource::MeshTLSAuthentication(r) => serde_json::to_value(r),
            Resource::NetworkAuthentication(r) => serde_json::to_value(r),
            Resource::HTTPLocalRateLimitPolicy(r) => serde_json::to_value(r),
            Resource::HTTPRoute(r) => serde_json::to_value(r),
            Resource::GRPCRoute(r) => serde_json::to_value(r),
        };
        // These types serialise to JSON without fail (string keys only).
        v.unwrap_or_default()
    }
}

/// The document as `T`, a type error naming its field's path.
fn typed<T: DeserializeOwned>(doc: serde_json::Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = e.path().to_string();
        invalid(field, e.into_inner().to_string())
    })
}

/// Checks one resource against the rules its schema cannot express.
///
/// # Errors
///
/// [`Invalid`] naming the first field that breaks a rule.
pub fn validate(r: &Resource) -> Result<(), Invalid> {
    match r {
        Resource::Server(s) => rules::server(&s.spec),
        Resource::AuthorizationPolicy(a) => rules::authorization(&a.spec, r.namespace()),
        Resource::MeshTLSAuthentication(m) => rules::mesh_tls(&m.spec),
        Resource::NetworkAuthentication(n) => rules::network(&n.spec),
        Resource::HTTPLocalRateLimitPolicy(l) => rules::rate_limit(&l.spec),
        Resource::HTTPRoute(h) => httproute::validate::http_route(h),
        Resource::GRPCRoute(g) => grpcroute::validate(g),
    }
}

impl fmt::Display for Resource {
    /// `Kind NAMESPACE/NAME` (or `Kind NAME` without a namespace).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace() {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind(), self.name()),
            None => write!(f, "{} {}", self.kind(), self.name()),
        }
    }
}
