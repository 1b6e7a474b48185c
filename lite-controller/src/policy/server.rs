//! `Server`: a port on a set of pods, its protocol and the access policy
//! for traffic no authorization covers (Linkerd's `Server`,
//! `policy.linkerd.io/v1beta3`: `podSelector`, `port`, `proxyProtocol`,
//! `accessPolicy`).

use super::refs::LabelSelector;
use kube::CustomResource;
use pimesh_api::policy::DefaultPolicy;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// A port on the pods its `podSelector` selects. Once a Server selects a
/// port, only the traffic an `AuthorizationPolicy` admits reaches it; the
/// rest gets `accessPolicy` (`deny` unless set).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.pimesh.io",
    version = "v1alpha1",
    kind = "Server",
    status = "super::condition::Status",
    doc = "A Server selects a port on a set of pods in the same namespace (as Linkerd's Server).",
    plural = "servers",
    singular = "server",
    shortname = "srv",
    namespaced,
    printcolumn = r#"{"name":"Port","type":"string","description":"The port the server is listening on","jsonPath":".spec.port"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","description":"The protocol of the server","jsonPath":".spec.proxyProtocol"}"#,
    printcolumn = r#"{"name":"Access Policy","type":"string","description":"The access policy for traffic no authorization covers","jsonPath":".spec.accessPolicy"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Selects pods in the same namespace. The result of matchLabels and
    /// matchExpressions are ANDed. Selects all if empty.
    pub pod_selector: LabelSelector,
    /// A port name or number. Must exist in a pod spec.
    pub port: Port,
    /// Configures protocol discovery for inbound connections. Supersedes
    /// the `config.pimesh.io/opaque-ports` annotation.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Default access policy to apply when the traffic doesn't match any of
    /// the policy rules.
    #[serde(default)]
    pub access_policy: AccessPolicy,
}

/// A container port by number (1–65535) or by name (IANA service name, at
/// most 15 characters), as Kubernetes' `IntOrString`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Port {
    /// A port number; [`super::validate`] checks the range.
    Number(i64),
    /// A `containerPort`'s `name`.
    Name(String),
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Name(n) => f.write_str(n),
        }
    }
}

impl JsonSchema for Port {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// Kubernetes' int-or-string, with the range and name length as a CEL
    /// rule (a number 1–65535 or a name of 1–15 characters).
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A port name or number. Must exist in a pod spec.",
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "type(self) == int ? self >= 1 && self <= 65535 : size(self) >= 1 && size(self) <= 15",
                "message": "a port number from 1 to 65535 or a port name of at most 15 characters"
            }]
        })
    }
}

/// How the proxy reads inbound connections to the port (Linkerd's
/// `proxyProtocol` values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProxyProtocol {
    /// Detect HTTP/1, HTTP/2 and TLS from the first bytes.
    #[default]
    #[serde(rename = "unknown")]
    Unknown,
    /// HTTP/1.x, no detection.
    #[serde(rename = "HTTP/1")]
    Http1,
    /// HTTP/2 (prior knowledge), no detection.
    #[serde(rename = "HTTP/2")]
    Http2,
    /// gRPC over HTTP/2.
    #[serde(rename = "gRPC")]
    Grpc,
    /// Opaque TCP: never detected, forwarded as bytes.
    #[serde(rename = "opaque")]
    Opaque,
    /// The app's own TLS, passed through.
    #[serde(rename = "TLS")]
    Tls,
}

/// The policy for traffic to a Server that no authorization admits:
/// Linkerd's default policy names ([`DefaultPolicy`]), `deny` unless set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AccessPolicy {
    /// Refuse it (Linkerd's default for a Server).
    #[default]
    Deny,
    /// Admit it, logged and counted as an audit.
    Audit,
    /// Admit every client.
    AllUnauthenticated,
    /// Admit clients with a mesh identity.
    AllAuthenticated,
    /// Admit clients from the cluster networks.
    ClusterUnauthenticated,
    /// Admit clients with a mesh identity from the cluster networks.
    ClusterAuthenticated,
}

impl From<AccessPolicy> for DefaultPolicy {
    fn from(p: AccessPolicy) -> Self {
        match p {
            AccessPolicy::Deny => DefaultPolicy::Deny,
            AccessPolicy::Audit => DefaultPolicy::Audit,
            AccessPolicy::AllUnauthenticated => DefaultPolicy::AllUnauthenticated,
            AccessPolicy::AllAuthenticated => DefaultPolicy::AllAuthenticated,
            AccessPolicy::ClusterUnauthenticated => DefaultPolicy::ClusterUnauthenticated,
            AccessPolicy::ClusterAuthenticated => DefaultPolicy::ClusterAuthenticated,
        }
    }
}
