//! Generation of CA material: ECDSA P-256 keys, a self-signed trust
//! anchor, an issuer signed by it (path length 0), random serials. A
//! leaf: it answers PEM and keys, and `ca` wraps them in its own types
//! (and [`Failed`] in `ca::Error::Generate`).

use crate::crypto;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use std::time::Duration;
use time::OffsetDateTime;

/// How far a generated CA's `notBefore` lies in the past (seconds).
const CA_BACKDATE_SECS: u64 = 3600;

/// rcgen refused to generate a key or certificate.
#[derive(Debug)]
pub(super) struct Failed {
    /// What was being created.
    pub what: &'static str,
    /// rcgen's reason.
    pub source: rcgen::Error,
}

/// A self-signed P-256 anchor valid for `lifetime`: its certificate PEM
/// and its key (to sign issuers).
pub(super) fn generate_anchor(now: u64, lifetime: Duration) -> Result<(String, KeyPair), Failed> {
    let key = new_key("a trust anchor key")?;
    let params = ca_params("pimesh trust anchor", now, lifetime, None);
    let cert = params.self_signed(&key).map_err(|source| Failed {
        what: "a trust anchor",
        source,
    })?;
    Ok((cert.pem(), key))
}

/// A P-256 issuer signed by the anchor `anchor_pem` with `key` (path
/// length 0: it signs only leaves), valid for `lifetime`: its certificate
/// PEM and key PEM.
pub(super) fn generate_issuer(
    anchor_pem: &str,
    key: &KeyPair,
    now: u64,
    lifetime: Duration,
) -> Result<(String, String), Failed> {
    let failed = |source| Failed {
        what: "an issuer",
        source,
    };
    let anchor_key = KeyPair::from_pem(&key.serialize_pem()).map_err(failed)?;
    let parent = Issuer::from_ca_cert_pem(anchor_pem, anchor_key).map_err(failed)?;
    let issuer_key = new_key("an issuer key")?;
    let mut params = ca_params("pimesh issuer", now, lifetime, Some(0));
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&issuer_key, &parent).map_err(failed)?;
    Ok((cert.pem(), issuer_key.serialize_pem()))
}

fn new_key(what: &'static str) -> Result<KeyPair, Failed> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| Failed { what, source })
}

/// CA parameters; `CN = "<name> <8 random hex>"` keeps the subjects of
/// successive generations apart.
fn ca_params(name: &str, now: u64, lifetime: Duration, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "pimesh");
    p.distinguished_name.push(
        DnType::CommonName,
        format!("{name} {}", crypto::hex(&crypto::random_bytes::<4>())),
    );
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = datetime(now.saturating_sub(CA_BACKDATE_SECS));
    p.not_after = datetime(now.saturating_add(lifetime.as_secs()));
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    p
}

/// 16 random bytes with the top bit clear and a non-zero first byte: a
/// positive DER INTEGER of exactly these bytes (RFC 5280 §4.1.2.2: ≤ 20 octets).
pub(super) fn random_serial() -> [u8; 16] {
    let mut s = crypto::random_bytes::<16>();
    s[0] &= 0x7f;
    if s[0] == 0 {
        s[0] = 1;
    }
    s
}

pub(super) fn datetime(unix: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
