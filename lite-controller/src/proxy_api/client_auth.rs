//! Optional client certificates on the proxy port: a proxy that has its
//! certificate presents it (the watch API needs it), one that is still
//! certifying has none (rustls `WebPkiClientVerifier` with
//! `allow_unauthenticated`). Which routes need one is checked per request
//! from the connection's [`peer_identity`].
//!
//! The trust anchors follow CA rotation: [`ClientAuth::set`] swaps the
//! verifier in place for the next handshakes.

use crate::identity::pem::certs_from_pem;
use pimesh_api::identity::Identity;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::{Arc, RwLock};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Verifies client certificates against the current trust anchors.
pub struct ClientAuth(RwLock<Arc<dyn ClientCertVerifier>>);

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientAuth")
    }
}

impl ClientAuth {
    /// A verifier for `anchors_pem` (the bundle, one or more certificates).
    ///
    /// # Errors
    ///
    /// The bundle is not usable as trust anchors.
    pub fn new(anchors_pem: &str) -> Result<ClientAuth, rustls::Error> {
        Ok(ClientAuth(RwLock::new(build(anchors_pem)?)))
    }

    /// Verifies against `anchors_pem` from the next handshake on.
    ///
    /// # Errors
    ///
    /// As [`ClientAuth::new`]; the verifier keeps the anchors it had.
    pub fn set(&self, anchors_pem: &str) -> Result<(), rustls::Error> {
        let v = build(anchors_pem)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = v;
        Ok(())
    }

    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn build(anchors_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
    let ders = certs_from_pem(anchors_pem, "trust anchors")
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for der in ders {
        roots.add(CertificateDer::from(der))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Optional in TLS 1.3 (RFC 8446 §4.2.4); proxies have one certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

/// The identity in a verified client certificate: its SPIFFE ID URI SAN
/// of `trust_domain`. `None` without a certificate or without such a SAN.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>, trust_domain: &str) -> Option<Identity> {
    let leaf = certs?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => Identity::from_spiffe_id(uri, trust_domain),
        _ => None,
    })
}
