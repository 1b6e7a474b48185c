//! Workload identities and the certify API.
//!
//! A workload is `NAMESPACE/SERVICEACCOUNT` (Kubernetes names). Its
//! certificate carries the SPIFFE ID `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`
//! as a URI SAN (SPIFFE X.509-SVID) and, so that ordinary TLS name
//! verification applies, the DNS SAN
//! `<sa>.<ns>.serviceaccount.identity.pimesh.<trust-domain>` (the shape of
//! Linkerd's identities).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// `POST` a [`CertifyRequest`], get a [`CertifyResponse`] (proxy port 8086).
pub const CERTIFY_PATH: &str = "/v1/identity/certify";
/// `GET` the trust-anchor bundle, PEM (`application/x-pem-file`), on both ports.
pub const TRUST_ANCHORS_PATH: &str = "/v1/identity/trust-anchors";
/// The controller's own identity, which proxies expect its certificate to carry.
pub const CONTROLLER_IDENTITY: &str = "pimesh/pimesh-controller";
/// Kubernetes mode: the audience of the ServiceAccount tokens proxies
/// certify with (a projected token with this audience; the controller's
/// TokenReview requires it, so tokens for the API server are refused).
pub const KUBERNETES_TOKEN_AUDIENCE: &str = "identity.pimesh.io";
/// ALPN protocol of the proxy ↔ controller API and of proxy ↔ proxy
/// connections that carry HTTP multiplexed over HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// `NAMESPACE/SERVICEACCOUNT`, both RFC 1123 labels (lowercase
/// alphanumerics and `-`, 1–63 characters, alphanumeric at both ends).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identity {
    namespace: String,
    service_account: String,
}

/// A string that is not `NAMESPACE/SERVICEACCOUNT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not NAMESPACE/SERVICEACCOUNT (RFC 1123 labels)")]
pub struct InvalidIdentity(pub String);

impl Identity {
    /// Builds an identity from its two parts.
    ///
    /// # Errors
    ///
    /// Either part is not an RFC 1123 label.
    pub fn new(namespace: &str, service_account: &str) -> Result<Self, InvalidIdentity> {
        if is_label(namespace) && is_label(service_account) {
            Ok(Identity {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
            })
        } else {
            Err(InvalidIdentity(format!("{namespace}/{service_account}")))
        }
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ServiceAccount name.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` (SPIFFE ID, as Linkerd and Istio form it).
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// `<sa>.<ns>.serviceaccount.identity.pimesh.<trust-domain>`, the DNS
    /// SAN that TLS name verification checks.
    pub fn dns_name(&self, trust_domain: &str) -> String {
        format!(
            "{}.{}.serviceaccount.identity.pimesh.{trust_domain}",
            self.service_account, self.namespace
        )
    }

    /// The identity a SPIFFE ID of `trust_domain` names, if it is one.
    pub fn from_spiffe_id(id: &str, trust_domain: &str) -> Option<Identity> {
        let rest = id.strip_prefix("spiffe://")?.strip_prefix(trust_domain)?;
        let rest = rest.strip_prefix("/ns/")?;
        let (ns, sa) = rest.split_once("/sa/")?;
        Identity::new(ns, sa).ok()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

impl FromStr for Identity {
    type Err = InvalidIdentity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ns, sa) = s.split_once('/').ok_or_else(|| InvalidIdentity(s.into()))?;
        Identity::new(ns, sa).map_err(|_| InvalidIdentity(s.into()))
    }
}

impl TryFrom<String> for Identity {
    type Error = InvalidIdentity;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Identity> for String {
    fn from(i: Identity) -> String {
        i.to_string()
    }
}

/// RFC 1123 label, as Kubernetes validates namespace and ServiceAccount names.
fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A proxy asks for a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifyRequest {
    /// The identity the proxy asks to be.
    pub identity: Identity,
    /// Its credential: a join token (standalone) or a ServiceAccount token (k3s).
    pub token: String,
    /// A PKCS#10 certificate signing request, PEM, for a key the proxy
    /// generated in memory (ECDSA P-256).
    pub csr_pem: String,
}

/// The controller's answer to a valid [`CertifyRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifyResponse {
    /// The leaf certificate, then the issuer certificate(s), PEM.
    pub chain_pem: String,
    /// The current trust-anchor bundle, PEM (one or more certificates;
    /// more than one while anchors rotate).
    pub trust_anchors_pem: String,
    /// When the leaf expires, seconds since the Unix epoch.
    pub not_after_unix: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        let id: Identity = "shop/web".parse().unwrap();
        assert_eq!(
            id.spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        assert_eq!(
            id.dns_name("cluster.local"),
            "web.shop.serviceaccount.identity.pimesh.cluster.local"
        );
        assert_eq!(
            Identity::from_spiffe_id("spiffe://cluster.local/ns/shop/sa/web", "cluster.local"),
            Some(id.clone())
        );
        assert_eq!(
            Identity::from_spiffe_id("spiffe://other/ns/shop/sa/web", "cluster.local"),
            None
        );
        for bad in [
            "shop",
            "Shop/web",
            "shop/",
            "/web",
            "shop/web/x",
            "-a/b",
            "a/b-",
            "a b/c",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"shop/web\"");
        assert!(serde_json::from_str::<Identity>("\"Bad/ID\"").is_err());
    }
}
