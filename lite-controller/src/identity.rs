//! The identity role (Linkerd's identity controller): the CA that certifies
//! proxies' keys for their `NAMESPACE/SERVICEACCOUNT` identity, keeps a
//! durable record of every serial it issued, and rotates its trust anchor
//! in stages (see `ca`).
//!
//! - `ca`: CA material, rotation, leaf issuance (pure).
//! - `csr`: parsing and verifying proxies' CSRs.
//! - `pem`: PEM bundles in and out.
//!
//! [`Authority`] is synchronous (signing and flushing block): the servers
//! call it from `spawn_blocking`. Times are Unix seconds passed in.

pub mod ca;
pub mod csr;
pub mod pem;

use crate::store::{self, Store, Table};
use crate::token::{self, Refusal, Tokens};
use ca::{Ca, CaState, CertInfo, Stage};
use pimesh_api::identity::{CertifyRequest, CertifyResponse, Identity, CONTROLLER_IDENTITY};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Issued-serial records are kept this long after the certificate expired
/// (seconds), then pruned.
pub const RECORD_RETENTION_SECS: u64 = 7 * 24 * 3600;

/// The key of the CA record in the `ca` table.
const CA_KEY: &str = "current";

/// The identity role could not start, or an operation on the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error("identity database")]
    Store(#[from] store::Error),
    /// CA material is unusable, or a rotation step is not allowed now.
    #[error(transparent)]
    Ca(#[from] ca::Error),
    /// The operator's CA files (first start) are unusable.
    #[error("cannot import the CA given by --trust-anchor-pem, --issuer-pem and --issuer-key-pem")]
    Import(#[source] ca::Error),
    /// The database holds data but no CA: never replaced by a new CA.
    #[error(
        "the database {} {} but holds no CA material; refusing to create a new CA over it \
         (restore the data directory from a backup, or use an empty --data-dir for a new CA)",
        path.display(),
        if *initialized { "was initialized" } else { "holds other data" }
    )]
    NoCa {
        /// The database directory.
        path: std::path::PathBuf,
        /// Whether the directory's marker says a CA was stored before.
        initialized: bool,
    },
}

/// Why a certify request failed; [`CertifyError::code`] is the `ApiError`
/// code and the `reason` label of `certify_refused_total`.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The token was refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The CSR is unusable.
    #[error(transparent)]
    BadCsr(#[from] csr::Error),
    /// Signing failed (e.g. the issuer expired).
    #[error("cannot issue")]
    Ca(#[from] ca::Error),
    /// The database failed.
    #[error("identity database")]
    Store(#[from] store::Error),
}

impl CertifyError {
    /// The stable `ApiError.error` code.
    pub fn code(&self) -> &'static str {
        match self {
            CertifyError::Refused(r) => r.code(),
            CertifyError::BadCsr(_) => "bad_csr",
            CertifyError::Ca(ca::Error::IssuerExpired { .. }) => "issuer_expired",
            CertifyError::Ca(_) | CertifyError::Store(_) => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            CertifyError::Refused(r) => r.status(),
            CertifyError::BadCsr(_) => 400,
            CertifyError::Ca(ca::Error::IssuerExpired { .. }) => 503,
            CertifyError::Ca(_) | CertifyError::Store(_) => 500,
        }
    }
}

impl From<token::Error> for CertifyError {
    fn from(e: token::Error) -> Self {
        match e {
            token::Error::Refused(r) => CertifyError::Refused(r),
            token::Error::Store(s) => CertifyError::Store(s),
            // verify() returns neither; treat as a bad credential.
            token::Error::NotFound(_) | token::Error::BadRequest(_) => {
                CertifyError::Refused(Refusal::InvalidToken)
            }
        }
    }
}

/// What the identity role needs from the configuration.
#[derive(Clone)]
pub struct Settings {
    /// SPIFFE trust domain (`--trust-domain`).
    pub trust_domain: String,
    /// Leaf lifetime (`--cert-lifetime`), also the controller's own certificate's.
    pub cert_lifetime: Duration,
    /// The operator's CA (anchors PEM, issuer PEM, issuer key PEM), imported
    /// on first start only.
    pub import: Option<(String, String, String)>,
}

/// A serial the CA issued, as recorded before the certificate was returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// The identity certified.
    pub identity: Identity,
    /// When, Unix seconds.
    pub issued_at_unix: u64,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after_unix: u64,
    /// SHA-256 of the issuer's certificate: which issuer signed it
    /// (rotation checks that no valid leaf of the old one remains).
    pub issuer_sha256: String,
}

/// One entry of `GET /v1/identity/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The record.
    #[serde(flatten)]
    pub record: IssuedRecord,
}

/// `GET /v1/identity/ca`: the CA's public state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaStatus {
    /// The rotation stage.
    pub stage: Stage,
    /// The bundle's anchors.
    pub anchors: Vec<CertInfo>,
    /// The issuer signing now.
    pub issuer: CertInfo,
    /// A rotation under way.
    pub rotation: Option<RotationStatus>,
    /// Issued-serial records held.
    pub certificates: usize,
}

/// A rotation's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationStatus {
    /// When it started, Unix seconds.
    pub started_unix: u64,
    /// From when the new issuer signs, Unix seconds.
    pub activate_unix: u64,
    /// The issuer being replaced.
    pub old_issuer: CertInfo,
    /// The new issuer.
    pub new_issuer: CertInfo,
    /// Leaves of the old issuer still valid: `--finish` waits for them.
    pub old_leaves_valid: usize,
    /// When the last of them expires, Unix seconds.
    pub old_leaves_valid_until_unix: Option<u64>,
}

/// The controller's own serving certificate.
pub struct ControllerCert {
    /// Leaf then issuer, DER.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after_unix: u64,
    /// The leaf's serial, hex (logged; not recorded: it never leaves the controller).
    pub serial: String,
}

/// The CA, its records and the tokens it accepts.
pub struct Authority {
    settings: Settings,
    store: Store,
    ca_table: Table<CaState>,
    certs: Table<IssuedRecord>,
    tokens: Arc<Tokens>,
    /// Read for signing and recording (so that a rotation step never runs
    /// between the two), written for rotation steps.
    ca: RwLock<Ca>,
    /// Bumped on every CA change, so the controller renews its own certificate.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Authority {
    /// Loads the CA from `store`, or creates (or imports) one when the
    /// store is empty and was never initialized. Never creates a CA over
    /// existing data.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the database cannot be read or written;
    /// [`Error::NoCa`] when it holds data but no CA; [`Error::Import`] when the
    /// operator's CA files are unusable (first start); [`Error::Ca`] when the
    /// stored CA does not load, or a new one cannot be generated (clock before
    /// 2024, rcgen).
    pub fn start(
        store: &Store,
        tokens: Arc<Tokens>,
        settings: Settings,
        now: u64,
    ) -> Result<Authority, Error> {
        let ca_table: Table<CaState> = store.table("ca")?;
        let state = match ca_table.get(CA_KEY)? {
            Some(state) => {
                if settings.import.as_ref().is_some_and(|i| differs(&state, i)) {
                    tracing::warn!(
                        "the database already holds a CA: the --trust-anchor-pem/--issuer-pem/\
                         --issuer-key-pem files are only imported on first start and are ignored"
                    );
                }
                state
            }
            None if store.initialized() || !store.is_empty() => {
                return Err(Error::NoCa {
                    path: store.path().to_path_buf(),
                    initialized: store.initialized(),
                })
            }
            None => {
                let state = match &settings.import {
                    Some((anchors, issuer, key)) => {
                        CaState::import(anchors, issuer, key, now).map_err(Error::Import)?
                    }
                    None => CaState::generate(now)?,
                };
                ca_table.put(CA_KEY, &state)?;
                tracing::info!(
                    imported = settings.import.is_some(),
                    "created the CA (trust anchor and issuer)"
                );
                state
            }
        };
        let ca = Ca::load(&state)?;
        if !store.initialized() {
            store
                .mark_initialized("pimesh controller data directory: its database holds a CA\n")?;
        }
        let (changes, _) = tokio::sync::watch::channel(0);
        Ok(Authority {
            settings,
            store: store.clone(),
            ca_table,
            certs: store.table("certificates")?,
            tokens,
            ca: RwLock::new(ca),
            changes,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.settings.trust_domain
    }

    /// The current bundle, PEM.
    pub fn trust_anchors_pem(&self) -> String {
        self.read().bundle_pem.clone()
    }

    /// Checks the token, verifies the CSR, signs a leaf for exactly the
    /// requested identity and records its serial (durably) before answering.
    ///
    /// # Errors
    ///
    /// [`CertifyError`]: the token is refused (invalid, expired, revoked,
    /// another identity), or as [`Authority::issue`].
    pub fn certify(&self, req: &CertifyRequest, now: u64) -> Result<CertifyResponse, CertifyError> {
        self.tokens.verify(&req.token, &req.identity, now)?;
        self.issue(req, now)
    }

    /// Signs for `req.identity`, already verified by the caller (a join
    /// token in [`Authority::certify`], a TokenReview in Kubernetes mode):
    /// refuses the controller's own identity, verifies the CSR, signs and
    /// records the serial (durably) before answering. `req.token` is not read.
    ///
    /// # Errors
    ///
    /// [`CertifyError`]: the controller's own identity is asked for, the CSR is
    /// bad, the issuer has expired or cannot sign, or the serial cannot be
    /// recorded.
    pub fn issue(&self, req: &CertifyRequest, now: u64) -> Result<CertifyResponse, CertifyError> {
        if req.identity.to_string() == CONTROLLER_IDENTITY {
            return Err(Refusal::IdentityNotAllowed.into());
        }
        let key = csr::parse(&req.csr_pem)?;
        let ca = self.read();
        let signer = ca.signer(now);
        let leaf = signer.issue(
            &key,
            &req.identity,
            &self.settings.trust_domain,
            self.settings.cert_lifetime,
            now,
        )?;
        let record = IssuedRecord {
            identity: req.identity.clone(),
            issued_at_unix: now,
            not_after_unix: leaf.not_after_unix,
            issuer_sha256: signer.info.sha256.clone(),
        };
        self.certs.put(&leaf.serial, &record)?;
        tracing::info!(identity = %req.identity, serial = %leaf.serial, not_after = leaf.not_after_unix, "issued");
        Ok(CertifyResponse {
            chain_pem: format!("{}{}", leaf.pem, signer.cert_pem),
            trust_anchors_pem: ca.bundle_pem.clone(),
            not_after_unix: leaf.not_after_unix,
        })
    }

    /// A fresh key and certificate for the controller's own identity, from
    /// the issuer that signs at `now`.
    ///
    /// # Errors
    ///
    /// [`Error::Ca`] when the key cannot be generated or the issuer cannot sign
    /// (expired).
    pub fn controller_cert(&self, now: u64) -> Result<ControllerCert, Error> {
        let identity: Identity = CONTROLLER_IDENTITY
            .parse()
            .map_err(|_| ca::Error::Invalid {
                what: "CONTROLLER_IDENTITY".into(),
                reason: "not NAMESPACE/SERVICEACCOUNT".into(),
            })?;
        self.fresh_cert("the controller's key", now, |signer, key| {
            signer.issue(
                key,
                &identity,
                &self.settings.trust_domain,
                self.settings.cert_lifetime,
                now,
            )
        })
    }

    /// A fresh key and server certificate for `dns_names` and `ips` (no
    /// mesh identity), from the issuer that signs at `now`, valid as the
    /// controller's own (`--cert-lifetime`): the proxy injector's.
    ///
    /// # Errors
    ///
    /// As [`Authority::controller_cert`]; also a name that is not IA5 (ASCII).
    pub fn server_cert(
        &self,
        dns_names: &[String],
        ips: &[std::net::IpAddr],
        now: u64,
    ) -> Result<ControllerCert, Error> {
        self.fresh_cert("a server key", now, |signer, key| {
            signer.issue_server(key, dns_names, ips, self.settings.cert_lifetime, now)
        })
    }

    /// A fresh P-256 key (`what` names it in errors) and the leaf `issue`
    /// makes for it with the issuer that signs at `now`, chained to that
    /// issuer.
    fn fresh_cert(
        &self,
        what: &'static str,
        now: u64,
        issue: impl FnOnce(&ca::Signer, &rcgen::KeyPair) -> Result<ca::Leaf, ca::Error>,
    ) -> Result<ControllerCert, Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| ca::Error::Generate { what, source })?;
        let ca = self.read();
        let signer = ca.signer(now);
        let leaf = issue(signer, &key)?;
        let issuer = pem::certs_from_pem(&signer.cert_pem, "issuer")
            .map_err(ca::Error::from)?
            .remove(0);
        Ok(ControllerCert {
            chain: vec![leaf.der, issuer],
            key_pkcs8: key.serialize_der(),
            not_after_unix: leaf.not_after_unix,
            serial: leaf.serial,
        })
    }

    /// Starts a trust-anchor rotation (see `ca`); persisted before it applies.
    ///
    /// # Errors
    ///
    /// [`ca::Error::RotationInProgress`], [`ca::Error::ClockNotSet`] or a
    /// generation failure (in [`Error::Ca`]); [`Error::Store`] when it cannot
    /// be persisted.
    pub fn rotate(&self, activate_after: Duration, now: u64) -> Result<CaStatus, Error> {
        let mut ca = self.write();
        let state = ca.state.start_rotation(now, activate_after)?;
        self.apply(&mut ca, state)?;
        tracing::info!(
            activate_unix = now + activate_after.as_secs(),
            "trust-anchor rotation started"
        );
        drop(ca);
        self.status(now)
    }

    /// Finishes a rotation: refused before activation or while leaves of
    /// the old issuer are valid, unless `force`.
    ///
    /// # Errors
    ///
    /// [`ca::Error::NoRotation`], [`ca::Error::NotActiveYet`] or
    /// [`ca::Error::OldLeavesValid`] (in [`Error::Ca`]) as said above;
    /// [`Error::Store`] when the records cannot be read or the new state
    /// persisted.
    pub fn finish_rotation(&self, force: bool, now: u64) -> Result<CaStatus, Error> {
        let mut ca = self.write();
        let old = self.old_leaves(&ca.current.info.sha256, now)?;
        let state = ca.state.finish_rotation(now, old, force)?;
        self.apply(&mut ca, state)?;
        tracing::info!(
            force,
            "trust-anchor rotation finished: the old anchor and issuer are gone"
        );
        drop(ca);
        self.status(now)
    }

    /// The CA's public state at `now`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the serial records cannot be read.
    pub fn status(&self, now: u64) -> Result<CaStatus, Error> {
        let ca = self.read();
        let rotation = match (&ca.state.rotation, &ca.next) {
            (Some(r), Some(next)) => {
                let old = self.old_leaves(&ca.current.info.sha256, now)?;
                Some(RotationStatus {
                    started_unix: r.started_unix,
                    activate_unix: r.activate_unix,
                    old_issuer: ca.current.info.clone(),
                    new_issuer: next.info.clone(),
                    old_leaves_valid: old.map_or(0, |(n, _)| n),
                    old_leaves_valid_until_unix: old.map(|(_, t)| t),
                })
            }
            _ => None,
        };
        Ok(CaStatus {
            stage: ca.state.stage(now),
            anchors: ca.anchors.clone(),
            issuer: ca.signer(now).info.clone(),
            rotation,
            certificates: self.certs.len(),
        })
    }

    /// Every issued-serial record.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the records cannot be read.
    pub fn certificates(&self) -> Result<Vec<IssuedCert>, Error> {
        Ok(self
            .certs
            .all()?
            .into_iter()
            .map(|(serial, record)| IssuedCert { serial, record })
            .collect())
    }

    /// Removes records of certificates expired for longer than
    /// [`RECORD_RETENTION_SECS`]; how many.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when a record cannot be read or removed (those removed
    /// before stay removed).
    pub fn prune(&self, now: u64) -> Result<usize, Error> {
        let mut removed = 0;
        for (serial, r) in self.certs.all()? {
            if r.not_after_unix.saturating_add(RECORD_RETENTION_SECS) < now {
                self.certs.remove(&serial)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// When the signing issuer changes next by itself (a pending rotation's
    /// activation), Unix seconds.
    pub fn next_activation(&self, now: u64) -> Option<u64> {
        let ca = self.read();
        ca.state
            .rotation
            .as_ref()
            .map(|r| r.activate_unix)
            .filter(|t| *t > now)
    }

    /// Notified (with a generation number) on every CA change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The tokens this authority accepts.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Flushes the database (shutdown).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when sled cannot write.
    pub fn flush(&self) -> Result<(), Error> {
        Ok(self.store.flush()?)
    }

    /// Leaves of `issuer` still valid at `now`: (count, last `notAfter`).
    fn old_leaves(&self, issuer: &str, now: u64) -> Result<Option<(usize, u64)>, Error> {
        let mut count = 0;
        let mut until = 0;
        for (_, r) in self.certs.all()? {
            if r.issuer_sha256 == issuer && r.not_after_unix > now {
                count += 1;
                until = until.max(r.not_after_unix);
            }
        }
        Ok((count > 0).then_some((count, until)))
    }

    /// Stores `state` durably, then makes it current.
    fn apply(&self, ca: &mut Ca, state: CaState) -> Result<(), Error> {
        let loaded = Ca::load(&state)?;
        self.ca_table.put(CA_KEY, &state)?;
        *ca = loaded;
        self.changes.send_modify(|g| *g += 1);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ca> {
        self.ca.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Ca> {
        self.ca.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the operator's CA files (anchors, issuer) differ from `state`'s.
fn differs(state: &CaState, (anchors, issuer, _): &(String, String, String)) -> bool {
    let ders = |pem: &str| pem::certs_from_pem(pem, "").unwrap_or_default();
    let stored: Vec<Vec<u8>> = state
        .anchors
        .iter()
        .flat_map(|a| ders(&a.cert_pem))
        .collect();
    ders(anchors) != stored || ders(issuer) != ders(&state.issuer.cert_pem)
}

/// The current time, Unix seconds.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
