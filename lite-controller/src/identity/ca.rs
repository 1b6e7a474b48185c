//! CA material: the trust anchors, the issuer that signs leaves, and the
//! trust-anchor rotation. Generation (ECDSA P-256, rcgen), import of an
//! operator's own CA, validation, and leaf issuance. No I/O: the caller
//! stores [`CaState`] and passes the time in (Unix seconds).
//!
//! Rotation, persisted in [`CaState::rotation`] (see [`Stage`]):
//! `stable` → [`CaState::start_rotation`] → `pending` (bundle = old + new
//! anchors, the old issuer still signs) → at `activate_unix` → `active`
//! (the new issuer signs) → [`CaState::finish_rotation`] → `stable` with
//! only the new anchor and issuer.

use super::pem::{certs_from_pem, parse_cert, pem_encode};
use crate::crypto;
use generate::{datetime, generate_anchor, generate_issuer, random_serial};
use pimesh_api::identity::Identity;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Validity of a generated trust anchor (operators rotate yearly).
pub const ANCHOR_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Validity of a generated issuer.
pub const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// CA material is never generated while the clock reads earlier than this
/// (2024-01-01, Unix seconds): a board without RTC that booted before NTP
/// would otherwise make anchors that expired decades ago.
pub const EARLIEST_PLAUSIBLE_UNIX: u64 = 1_704_067_200;
/// How far a leaf's `notBefore` lies in the past at most, for clock skew
/// between boards without RTC (seconds; never more than the lifetime).
pub const LEAF_BACKDATE_SECS: u64 = 60;

/// CA material that cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused to generate a key or certificate.
    #[error("cannot create {what}")]
    Generate {
        /// What was being created.
        what: &'static str,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// Given or stored material is unusable.
    #[error("{what}: {reason}")]
    Invalid {
        /// Which material (e.g. `--issuer-pem`, `stored issuer`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The issuer's certificate has expired (or expires this second).
    #[error("the issuer expired at {not_after_unix} (Unix time); rotate the CA")]
    IssuerExpired {
        /// The issuer's `notAfter`.
        not_after_unix: u64,
    },
    /// `rotate` while a rotation is under way.
    #[error("a rotation is already in progress (new issuer active from {activate_unix}); finish it first")]
    RotationInProgress {
        /// When the pending issuer starts (or started) signing.
        activate_unix: u64,
    },
    /// The system clock is not plausible (not synchronised yet?).
    #[error("the system clock reads {now_unix} (Unix time), before 2024: refusing to create CA material until it is set (NTP)")]
    ClockNotSet {
        /// What the clock read.
        now_unix: u64,
    },
    /// `finish` without a rotation.
    #[error("no rotation is in progress")]
    NoRotation,
    /// `finish` before the new issuer signs.
    #[error("the new issuer only signs from {activate_unix} (Unix time); finishing now would drop the anchor of the issuer that still signs")]
    NotActiveYet {
        /// When the new issuer starts signing.
        activate_unix: u64,
    },
    /// `finish` while leaves of the old issuer are still valid.
    #[error("{count} certificate(s) issued by the old issuer are valid until {until_unix} (Unix time); finish after that, or force")]
    OldLeavesValid {
        /// How many.
        count: usize,
        /// When the last of them expires.
        until_unix: u64,
    },
}

/// A trust anchor as stored: its certificate and, when the controller
/// generated it, its key (imported anchors come without one).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The self-signed CA certificate, PEM.
    pub cert_pem: String,
    /// Its PKCS#8 private key, PEM; `None` for an imported anchor.
    pub key_pem: Option<String>,
}

/// An issuer as stored: the intermediate CA that signs leaves.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerPem {
    /// Its certificate, PEM, signed by an anchor.
    pub cert_pem: String,
    /// Its PKCS#8 private key, PEM.
    pub key_pem: String,
}

/// A rotation under way: the new anchor is in the bundle from the start;
/// the new issuer signs from `activate_unix` on.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The new trust anchor.
    pub anchor: Anchor,
    /// The new issuer, signed by `anchor`.
    pub issuer: IssuerPem,
    /// When the rotation started (Unix seconds).
    pub started_unix: u64,
    /// From when the new issuer signs (Unix seconds): until then every proxy
    /// has time to fetch the bundle that trusts it.
    pub activate_unix: u64,
}

/// Everything the CA is, as stored in the database (one record).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// The anchors in the bundle besides a rotation's new one (one when
    /// generated; an imported bundle may hold several).
    pub anchors: Vec<Anchor>,
    /// The issuer that signs leaves outside a rotation's `active` stage.
    pub issuer: IssuerPem,
    /// A rotation under way.
    pub rotation: Option<Rotation>,
    /// When this CA was first created or imported (Unix seconds).
    pub created_unix: u64,
}

impl fmt::Debug for CaState {
    /// Subjects only: never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaState")
            .field("anchors", &self.anchors.len())
            .field("rotation", &self.rotation.as_ref().map(|r| r.activate_unix))
            .field("created_unix", &self.created_unix)
            .finish_non_exhaustive()
    }
}

/// Where a rotation stands (DESIGN "identity"; the `stage` of `/v1/identity/ca`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// One generation of anchor and issuer.
    Stable,
    /// Old and new anchors in the bundle; the old issuer still signs.
    Pending,
    /// Old and new anchors in the bundle; the new issuer signs.
    Active,
}

impl CaState {
    /// A new self-signed anchor and an issuer signed by it.
    ///
    /// # Errors
    ///
    /// [`Error::ClockNotSet`] before 2024; [`Error::Generate`] when rcgen
    /// fails.
    pub fn generate(now: u64) -> Result<CaState, Error> {
        check_clock(now)?;
        let (anchor, issuer) = new_anchor_and_issuer(now)?;
        Ok(CaState {
            anchors: vec![anchor],
            issuer,
            rotation: None,
            created_unix: now,
        })
    }

    /// The operator's own CA: `anchors_pem` (one or more certificates),
    /// the issuer certificate and its key. The issuer must be a CA, valid
    /// now, signed by one of the anchors, and match its key.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when a file is not PEM certificates or a key, the
    /// issuer is not a CA signed by an anchor or does not match its key, or it
    /// has expired.
    pub fn import(
        anchors_pem: &str,
        issuer_pem: &str,
        issuer_key_pem: &str,
        now: u64,
    ) -> Result<CaState, Error> {
        let anchors = certs_from_pem(anchors_pem, "--trust-anchor-pem")?
            .into_iter()
            .map(|der| Anchor {
                cert_pem: pem_encode(&der),
                key_pem: None,
            })
            .collect();
        let state = CaState {
            anchors,
            issuer: IssuerPem {
                cert_pem: issuer_pem.to_string(),
                key_pem: issuer_key_pem.to_string(),
            },
            rotation: None,
            created_unix: now,
        };
        let ca = Ca::load(&state)?;
        if ca.current.info.not_after_unix <= now {
            return Err(invalid("--issuer-pem", "the certificate has expired"));
        }
        Ok(state)
    }

    /// Starts a rotation: a new anchor (in the bundle at once) and a new
    /// issuer signed by it, which signs from `now + activate_after` on.
    ///
    /// # Errors
    ///
    /// [`Error::RotationInProgress`], [`Error::ClockNotSet`],
    /// [`Error::Generate`].
    pub fn start_rotation(&self, now: u64, activate_after: Duration) -> Result<CaState, Error> {
        if let Some(r) = &self.rotation {
            return Err(Error::RotationInProgress {
                activate_unix: r.activate_unix,
            });
        }
        check_clock(now)?;
        let (anchor, issuer) = new_anchor_and_issuer(now)?;
        Ok(CaState {
            rotation: Some(Rotation {
                anchor,
                issuer,
                started_unix: now,
                activate_unix: now.saturating_add(activate_after.as_secs()),
            }),
            ..self.clone()
        })
    }

    /// Ends a rotation: only the new anchor and issuer remain. Refused
    /// before the new issuer signs, or while `old_leaves` (count, last
    /// `notAfter`) of the old issuer are valid, unless `force`.
    ///
    /// # Errors
    ///
    /// [`Error::NoRotation`]; unless `force`, [`Error::NotActiveYet`] and
    /// [`Error::OldLeavesValid`].
    pub fn finish_rotation(
        &self,
        now: u64,
        old_leaves: Option<(usize, u64)>,
        force: bool,
    ) -> Result<CaState, Error> {
        let r = self.rotation.as_ref().ok_or(Error::NoRotation)?;
        if !force {
            if now < r.activate_unix {
                return Err(Error::NotActiveYet {
                    activate_unix: r.activate_unix,
                });
            }
            if let Some((count, until_unix)) = old_leaves.filter(|(n, _)| *n > 0) {
                return Err(Error::OldLeavesValid { count, until_unix });
            }
        }
        Ok(CaState {
            anchors: vec![r.anchor.clone()],
            issuer: r.issuer.clone(),
            rotation: None,
            created_unix: self.created_unix,
        })
    }

    /// The rotation stage at `now`.
    pub fn stage(&self, now: u64) -> Stage {
        match &self.rotation {
            None => Stage::Stable,
            Some(r) if now < r.activate_unix => Stage::Pending,
            Some(_) => Stage::Active,
        }
    }
}

/// A certificate's public facts, for status output and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// The subject, RFC 4514 style.
    pub subject: String,
    /// SHA-256 of the DER, lowercase hex: how the CLI and logs name it.
    pub sha256: String,
    /// `notBefore`, Unix seconds.
    pub not_before_unix: u64,
    /// `notAfter`, Unix seconds.
    pub not_after_unix: u64,
}

impl CertInfo {
    fn of(der: &[u8], x509: &X509Certificate<'_>) -> CertInfo {
        CertInfo {
            subject: x509.subject().to_string(),
            sha256: crypto::hex(&crypto::sha256(der)),
            not_before_unix: x509.validity().not_before.timestamp().max(0) as u64,
            not_after_unix: x509.validity().not_after.timestamp().max(0) as u64,
        }
    }
}

/// An issuer ready to sign.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM (the second part of every chain it signs).
    pub cert_pem: String,
    /// Its public facts.
    pub info: CertInfo,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("info", &self.info).finish()
    }
}

/// A leaf certificate just signed.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// The serial, lowercase hex (32 digits, the DER INTEGER's bytes).
    pub serial: String,
    /// `notAfter`, Unix seconds.
    pub not_after_unix: u64,
}

impl Signer {
    /// Signs a leaf for `identity` with `key`: URI SAN = its SPIFFE ID, DNS
    /// SAN = its DNS name, not a CA, digitalSignature, serverAuth +
    /// clientAuth, a random 127-bit serial, valid from `now` minus up to
    /// [`LEAF_BACKDATE_SECS`] for `lifetime` (at least 1 s, and never past
    /// the issuer's own `notAfter`).
    ///
    /// # Errors
    ///
    /// [`Error::IssuerExpired`]; [`Error::Generate`] for a name that is not
    /// IA5 (ASCII), or when rcgen cannot sign.
    pub fn issue(
        &self,
        key: &impl PublicKeyData,
        identity: &Identity,
        trust_domain: &str,
        lifetime: Duration,
        now: u64,
    ) -> Result<Leaf, Error> {
        let dns = identity.dns_name(trust_domain);
        let uri = identity.spiffe_id(trust_domain);
        let sans = vec![SanType::URI(ia5(uri)?), SanType::DnsName(ia5(dns.clone())?)];
        self.sign(key, &dns, sans, lifetime, now)
    }

    /// Signs a server leaf for plain DNS names and IP addresses (no SPIFFE
    /// ID), e.g. the proxy injector's `pimesh-controller.NS.svc`: the first
    /// name is the CommonName; otherwise as [`Signer::issue`].
    ///
    /// # Errors
    ///
    /// As [`Signer::issue`].
    pub fn issue_server(
        &self,
        key: &impl PublicKeyData,
        dns_names: &[String],
        ips: &[std::net::IpAddr],
        lifetime: Duration,
        now: u64,
    ) -> Result<Leaf, Error> {
        let mut sans = Vec::new();
        for n in dns_names {
            sans.push(SanType::DnsName(ia5(n.clone())?));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let cn = dns_names.first().cloned().unwrap_or_default();
        self.sign(key, &cn, sans, lifetime, now)
    }

    fn sign(
        &self,
        key: &impl PublicKeyData,
        cn: &str,
        sans: Vec<SanType>,
        lifetime: Duration,
        now: u64,
    ) -> Result<Leaf, Error> {
        if self.info.not_after_unix <= now {
            return Err(Error::IssuerExpired {
                not_after_unix: self.info.not_after_unix,
            });
        }
        let lifetime = lifetime.as_secs().max(1);
        let not_after = now.saturating_add(lifetime).min(self.info.not_after_unix);
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "pimesh");
        if !cn.is_empty() && cn.len() <= 64 {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = datetime(now.saturating_sub(LEAF_BACKDATE_SECS.min(lifetime)));
        p.not_after = datetime(not_after);
        let serial = random_serial();
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(key, &self.issuer)
            .map_err(|source| Error::Generate {
                what: "a leaf certificate",
                source,
            })?;
        Ok(Leaf {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            serial: crypto::hex(&serial),
            not_after_unix: not_after,
        })
    }
}

/// An IA5 string (a SAN), or why not.
fn ia5(s: String) -> Result<rcgen::string::Ia5String, Error> {
    s.try_into().map_err(|e: rcgen::Error| Error::Generate {
        what: "a leaf's names",
        source: e,
    })
}

/// A [`CaState`] parsed and checked: the bundle and the issuers, ready to sign.
#[derive(Debug)]
pub struct Ca {
    /// What is stored.
    pub state: CaState,
    /// The trust-anchor bundle, PEM: the anchors, then a rotation's new one.
    pub bundle_pem: String,
    /// The bundle's certificates, same order.
    pub anchors: Vec<CertInfo>,
    /// `state.issuer`.
    pub current: Signer,
    /// A rotation's new issuer.
    pub next: Option<Signer>,
}

impl Ca {
    /// Parses and checks `state`: every anchor is a CA; each issuer is a
    /// CA signed by its anchors and matches its key.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the anchor or issuer that does not parse, is
    /// not a CA, is not signed by the bundle, or does not match its key.
    pub fn load(state: &CaState) -> Result<Ca, Error> {
        let mut bundle: Vec<Vec<u8>> = Vec::new();
        for (i, a) in state.anchors.iter().enumerate() {
            bundle.extend(certs_from_pem(&a.cert_pem, &format!("trust anchor {i}"))?);
        }
        let current = signer(&state.issuer, &bundle, "issuer")?;
        let mut next = None;
        if let Some(r) = &state.rotation {
            let new = certs_from_pem(&r.anchor.cert_pem, "new trust anchor")?;
            next = Some(signer(&r.issuer, &new, "new issuer")?);
            bundle.extend(new);
        }
        let mut anchors = Vec::with_capacity(bundle.len());
        for (i, der) in bundle.iter().enumerate() {
            let x509 = parse_cert(der, &format!("trust anchor {i}"))?;
            if !x509.is_ca() {
                return Err(invalid(format!("trust anchor {i}"), "not a CA certificate"));
            }
            anchors.push(CertInfo::of(der, &x509));
        }
        Ok(Ca {
            bundle_pem: bundle.iter().map(|d| pem_encode(d)).collect(),
            anchors,
            current,
            next,
            state: state.clone(),
        })
    }

    /// The issuer that signs at `now`.
    pub fn signer(&self, now: u64) -> &Signer {
        match (&self.state.rotation, &self.next) {
            (Some(r), Some(next)) if now >= r.activate_unix => next,
            _ => &self.current,
        }
    }
}

/// Parses an issuer and checks it against the anchors that may have signed it.
fn signer(pem: &IssuerPem, anchors: &[Vec<u8>], what: &str) -> Result<Signer, Error> {
    let ders = certs_from_pem(&pem.cert_pem, what)?;
    let der = &ders[0];
    let x509 = parse_cert(der, what)?;
    if !x509.is_ca() {
        return Err(invalid(what, "not a CA certificate"));
    }
    let signed = anchors.iter().any(|a| {
        X509Certificate::from_der(a)
            .is_ok_and(|(_, anchor)| x509.verify_signature(Some(anchor.public_key())).is_ok())
    });
    if !signed {
        return Err(invalid(what, "not signed by the trust anchor(s)"));
    }
    let key = KeyPair::from_pem(&pem.key_pem)
        .map_err(|_| invalid(format!("{what} key"), "not a PKCS#8 private key PEM"))?;
    if key.public_key_raw() != &*x509.public_key().subject_public_key.data {
        return Err(invalid(
            format!("{what} key"),
            "does not match the issuer certificate",
        ));
    }
    let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key)
        .map_err(|_| invalid(what, "rcgen cannot sign with this certificate"))?;
    Ok(Signer {
        issuer,
        cert_pem: pem_encode(der),
        info: CertInfo::of(der, &x509),
    })
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::invalid(what, reason)
}

/// A new anchor (with its key) and an issuer signed by it (see `generate`).
fn new_anchor_and_issuer(now: u64) -> Result<(Anchor, IssuerPem), Error> {
    let (cert_pem, key) = generate_anchor(now, ANCHOR_LIFETIME)?;
    let (issuer_pem, issuer_key_pem) = generate_issuer(&cert_pem, &key, now, ISSUER_LIFETIME)?;
    let anchor = Anchor {
        cert_pem,
        key_pem: Some(key.serialize_pem()),
    };
    let issuer = IssuerPem {
        cert_pem: issuer_pem,
        key_pem: issuer_key_pem,
    };
    Ok((anchor, issuer))
}

impl From<generate::Failed> for Error {
    fn from(e: generate::Failed) -> Error {
        Error::Generate {
            what: e.what,
            source: e.source,
        }
    }
}

fn check_clock(now: u64) -> Result<(), Error> {
    if now < EARLIEST_PLAUSIBLE_UNIX {
        return Err(Error::ClockNotSet { now_unix: now });
    }
    Ok(())
}

impl From<super::pem::Invalid> for Error {
    fn from(e: super::pem::Invalid) -> Error {
        Error::Invalid {
            what: e.what,
            reason: e.reason,
        }
    }
}

impl Error {
    /// An [`Error::Invalid`].
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

mod generate;

#[cfg(test)]
mod tests;
