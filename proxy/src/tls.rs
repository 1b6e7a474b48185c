//! Mesh TLS: the rustls configurations built from the proxy's current
//! certificate, key and trust anchors (TLS 1.3 only, ring provider), and
//! the peer identity read from a verified certificate's SPIFFE URI SAN.
//! Certificates name identities twice (api `identity`): the DNS SAN is what
//! TLS name verification checks, the URI SAN is the SPIFFE ID.

pub mod sni;

use pimesh_api::identity::{Identity, ALPN_H2};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// ALPN of proxy-to-proxy HTTP/1 connections (upgrades, which cannot ride
/// the multiplexed HTTP/2 connection).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    /// PEM text holds no certificate, or a malformed one.
    #[error("no valid PEM certificate found")]
    NoCertificates,
    /// rustls refused the material (bad key, unusable anchors, ...).
    #[error("TLS configuration refused")]
    Rustls(#[from] rustls::Error),
    /// The verifier could not be built from the anchors.
    #[error("trust anchors unusable: {0}")]
    Verifier(String),
}

/// The certificates of a PEM bundle, in order.
///
/// # Errors
///
/// [`Error::NoCertificates`] when there is none or one is malformed.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        _ => Err(Error::NoCertificates),
    }
}

/// Loads a PEM bundle of trust anchors.
///
/// # Errors
///
/// [`Error::Read`] when the file cannot be read, else those of
/// [`parse_certs`].
pub fn load_anchors(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem =
        std::fs::read_to_string(path).map_err(|e| Error::Read(path.display().to_string(), e))?;
    parse_certs(&pem)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(anchors: &[CertificateDer<'static>]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(anchors.iter().cloned());
    if added == 0 {
        return Err(Error::NoCertificates);
    }
    Ok(roots)
}

/// A client configuration that trusts `anchors` and presents no
/// certificate: the proxy's connection to the controller before it has one.
///
/// # Errors
///
/// No usable certificate among `anchors`, or rustls refuses the TLS 1.3
/// configuration.
pub fn anonymous_client(
    anchors: &[CertificateDer<'static>],
    alpn: &[u8],
) -> Result<Arc<ClientConfig>, Error> {
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(anchors)?)
        .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(c))
}

/// The proxy's certificate and everything built from it. Replaced as a
/// whole on renewal or when the trust anchors change; connections keep the
/// configuration they started with.
pub struct Credentials {
    /// Who this proxy is.
    pub identity: Identity,
    /// The trust domain of every identity it accepts.
    pub trust_domain: String,
    /// When the leaf expires.
    pub not_after: SystemTime,
    /// Inbound mesh TLS: requires a client certificate from the anchors.
    pub server: Arc<ServerConfig>,
    /// Outbound mesh TLS carrying multiplexed HTTP/2 (ALPN `h2`).
    pub client_h2: Arc<ClientConfig>,
    /// Outbound mesh TLS carrying HTTP/1 (ALPN `http/1.1`): upgrades.
    pub client_h1: Arc<ClientConfig>,
    /// Outbound mesh TLS carrying opaque TCP (no ALPN).
    pub client_opaque: Arc<ClientConfig>,
    /// The anchors, for the controller client.
    pub anchors: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Builds the configurations for `chain` (leaf first) and its `key`
    /// (PKCS#8 DER), trusting `anchors`.
    ///
    /// # Errors
    ///
    /// Rustls refuses the key or chain, or no anchor is usable.
    pub fn new(
        identity: Identity,
        trust_domain: String,
        chain: Vec<CertificateDer<'static>>,
        key_pkcs8: &[u8],
        not_after: SystemTime,
        anchors: Vec<CertificateDer<'static>>,
    ) -> Result<Credentials, Error> {
        let key = || {
            PrivateKeyDer::try_from(key_pkcs8.to_vec()).map_err(|e| Error::Verifier(e.to_string()))
        };
        let roots = Arc::new(roots(&anchors)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| Error::Verifier(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key()?)?;
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        let client = |alpn: Option<&[u8]>| -> Result<Arc<ClientConfig>, Error> {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain.clone(), key()?)?;
            c.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
            Ok(Arc::new(c))
        };
        Ok(Credentials {
            server: Arc::new(server),
            client_h2: client(Some(ALPN_H2))?,
            client_h1: client(Some(ALPN_HTTP1))?,
            client_opaque: client(None)?,
            identity,
            trust_domain,
            not_after,
            anchors,
        })
    }

    /// The TLS server name a peer with `identity` must present.
    pub fn server_name(&self, identity: &Identity) -> ServerName<'static> {
        server_name(identity, &self.trust_domain)
    }
}

/// The TLS server name (DNS SAN) of `identity` in `trust_domain`.
pub fn server_name(identity: &Identity, trust_domain: &str) -> ServerName<'static> {
    // Identity labels and trust domains are validated DNS labels.
    ServerName::try_from(identity.dns_name(trust_domain))
        .unwrap_or_else(|_| ServerName::try_from("invalid.identity").expect("static name"))
}

/// The mesh identity in a verified end-entity certificate: its SPIFFE URI
/// SAN in `trust_domain`. `None` for certificates of other trust domains or
/// without one.
pub fn peer_identity(cert: &CertificateDer<'_>, trust_domain: &str) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => {
            Identity::from_spiffe_id(uri, trust_domain)
        }
        _ => None,
    })
}

/// The current credentials, shared by every connection; empty until the
/// first certificate arrives.
#[derive(Debug, Default)]
pub struct CredentialStore {
    current: RwLock<Option<Arc<Credentials>>>,
}

impl CredentialStore {
    /// The current credentials, if any.
    pub fn get(&self) -> Option<Arc<Credentials>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the credentials.
    pub fn set(&self, creds: Credentials) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(creds));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

    /// A CA and a leaf for `identity` in `td`, as the controller issues them.
    pub fn issue(
        identity: &Identity,
        td: &str,
    ) -> (
        Vec<CertificateDer<'static>>,
        Vec<u8>,
        CertificateDer<'static>,
    ) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec![identity.dns_name(td)]).unwrap();
        leaf.subject_alt_names
            .push(SanType::URI(identity.spiffe_id(td).try_into().unwrap()));
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        (
            vec![leaf.der().clone(), ca_cert.der().clone()],
            key.serialize_der(),
            ca_cert.der().clone(),
        )
    }

    #[test]
    fn credentials_and_peer_identity() {
        let id: Identity = "shop/web".parse().unwrap();
        let (chain, key, anchor) = issue(&id, "cluster.local");
        assert_eq!(peer_identity(&chain[0], "cluster.local"), Some(id.clone()));
        assert_eq!(peer_identity(&chain[0], "other.domain"), None);
        let creds = Credentials::new(
            id.clone(),
            "cluster.local".into(),
            chain,
            &key,
            SystemTime::now(),
            vec![anchor],
        )
        .unwrap();
        assert_eq!(
            creds.server_name(&id).to_str(),
            "web.shop.serviceaccount.identity.pimesh.cluster.local"
        );
        assert!(parse_certs("not pem").is_err());
    }
}
