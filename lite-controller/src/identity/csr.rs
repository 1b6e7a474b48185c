//! Certificate signing requests from proxies: PKCS#10 (RFC 2986), PEM,
//! for an ECDSA P-256 key. Only the public key is used: the names and
//! extensions a CSR asks for are ignored, since the controller decides
//! what a leaf says from the token-checked identity.

use rcgen::{PublicKeyData, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

/// Why a CSR was refused (`bad_csr`, HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a PEM block labelled `CERTIFICATE REQUEST`.
    #[error("csr_pem is not a PEM \"CERTIFICATE REQUEST\"")]
    NotPem,
    /// The DER inside is not a PKCS#10 request.
    #[error("csr_pem is not a PKCS#10 certificate signing request")]
    NotPkcs10,
    /// The request is not signed by the key it carries.
    #[error("the CSR's signature does not verify with its own public key")]
    BadSignature,
    /// The key is not ECDSA P-256.
    #[error("the CSR's key must be ECDSA P-256")]
    UnsupportedKey,
}

/// The verified public key of a CSR, ready to be certified by rcgen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrKey {
    /// The uncompressed P-256 point (65 bytes, SEC 1 §2.3.3).
    point: Vec<u8>,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Parses `pem`, checks that the request is signed by its own key (proof
/// of possession) and that the key is ECDSA P-256.
///
/// # Errors
///
/// [`Error`]: not PEM of a `CERTIFICATE REQUEST`, not PKCS#10, a signature that
/// does not verify, a key that is not ECDSA P-256.
pub fn parse(pem: &str) -> Result<CsrKey, Error> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.trim_start().as_bytes()).map_err(|_| Error::NotPem)?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err(Error::NotPem);
    }
    let (rest, csr) =
        X509CertificationRequest::from_der(&block.contents).map_err(|_| Error::NotPkcs10)?;
    if !rest.is_empty() {
        return Err(Error::NotPkcs10);
    }
    let spki = &csr.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(Error::UnsupportedKey);
    }
    let point = spki.subject_public_key.data.to_vec();
    if point.len() != 65 || point[0] != 0x04 {
        return Err(Error::UnsupportedKey);
    }
    csr.verify_signature().map_err(|_| Error::BadSignature)?;
    Ok(CsrKey { point })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P384_SHA384};

    /// A CSR for a fresh key of `alg`, asking for `names` (which the CA ignores).
    pub fn csr_pem(alg: &'static SignatureAlgorithm, names: &[&str]) -> (KeyPair, String) {
        let key = KeyPair::generate_for(alg).unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let csr = CertificateParams::new(names)
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        (key, csr)
    }

    #[test]
    fn accepts_a_p256_csr_and_keeps_its_key() {
        let (key, pem) = csr_pem(&PKCS_ECDSA_P256_SHA256, &["evil.example"]);
        let parsed = parse(&pem).unwrap();
        assert_eq!(parsed.der_bytes(), key.public_key_raw());
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(parse(""), Err(Error::NotPem));
        assert_eq!(parse("not pem at all"), Err(Error::NotPem));
        let (_, p384) = csr_pem(&PKCS_ECDSA_P384_SHA384, &[]);
        assert_eq!(parse(&p384), Err(Error::UnsupportedKey));
        let cert = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        assert_eq!(parse(&cert.cert.pem()), Err(Error::NotPem));
        let garbage =
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        assert_eq!(parse(garbage), Err(Error::NotPkcs10));
    }

    #[test]
    fn refuses_a_tampered_signature() {
        let (_, pem) = csr_pem(&PKCS_ECDSA_P256_SHA256, &["a.example"]);
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let mut der = block.contents.clone();
        // The last byte is inside the ECDSA signature's `s` integer.
        *der.last_mut().unwrap() ^= 0x01;
        assert_eq!(
            parse(&crate::identity::pem::pem_block(
                "CERTIFICATE REQUEST",
                &der
            )),
            Err(Error::BadSignature)
        );
        // The untouched request round-trips through the test encoder.
        assert!(parse(&crate::identity::pem::pem_block(
            "CERTIFICATE REQUEST",
            &block.contents
        ))
        .is_ok());
    }
}
