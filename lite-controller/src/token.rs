//! Join tokens (standalone mode): the credential a proxy presents with its
//! CSR. A token is `pmt_<id>.<secret>`: `id` is 8 random bytes in hex (16
//! digits, public: it names the token in `token ls` / `token revoke`),
//! `secret` 32 random bytes in hex. Only SHA-256(secret) is stored, so the
//! database never holds a usable token; the token is shown once, at creation.
//!
//! Also the operator API's token types (`POST`/`GET /v1/tokens`).

use crate::crypto;
use crate::store::{self, Store, Table};
use pimesh_api::identity::Identity;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Prefix of every join token (`pmt_`: pimesh token), so that a leaked
/// token is recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "pmt_";
/// Default lifetime of a new token (`pimesh token create --ttl`).
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;
/// Longest lifetime a token may be given: one year.
pub const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

/// Why a token was not accepted for a certify request. Codes are the
/// `ApiError.error` values; [`Refusal::code`] is also the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Malformed, unknown, or wrong secret (HTTP 401 `invalid_token`).
    #[error("the token is not valid")]
    InvalidToken,
    /// Past its expiry (HTTP 401 `token_expired`).
    #[error("the token has expired")]
    TokenExpired,
    /// Revoked by an operator (HTTP 401 `token_revoked`).
    #[error("the token was revoked")]
    TokenRevoked,
    /// Valid, but for another identity (HTTP 403 `identity_not_allowed`).
    #[error("the token does not allow this identity")]
    IdentityNotAllowed,
}

impl Refusal {
    /// The stable `ApiError.error` code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::InvalidToken => "invalid_token",
            Refusal::TokenExpired => "token_expired",
            Refusal::TokenRevoked => "token_revoked",
            Refusal::IdentityNotAllowed => "identity_not_allowed",
        }
    }

    /// The HTTP status: 401 for a bad credential, 403 for a good one that
    /// does not cover the request.
    pub fn status(self) -> u16 {
        match self {
            Refusal::IdentityNotAllowed => 403,
            _ => 401,
        }
    }
}

/// A token operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token was refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No token has this id.
    #[error("no token with id {0:?}")]
    NotFound(String),
    /// A create request that cannot be honoured.
    #[error("{0}")]
    BadRequest(String),
    /// The database failed.
    #[error("token store")]
    Store(#[from] store::Error),
}

/// A token as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The public id (16 hex digits).
    pub id: String,
    /// The only identity this token may be certified as.
    pub identity: Identity,
    /// The service the holder may register (standalone registry), if any.
    pub service: Option<String>,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    /// Expiry, Unix seconds: refused from then on.
    pub expires_unix: u64,
    /// When it was revoked, Unix seconds.
    pub revoked_unix: Option<u64>,
}

/// A token's state at some time (`STATUS` in `token ls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl Status {
    /// The lowercase name (also the `status` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

impl TokenRecord {
    /// Its status at `now`; revocation wins over expiry.
    pub fn status(&self, now: u64) -> Status {
        if self.revoked_unix.is_some() {
            Status::Revoked
        } else if now >= self.expires_unix {
            Status::Expired
        } else {
            Status::Active
        }
    }

    /// What the operator API shows of it at `now`.
    pub fn info(&self, now: u64) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            identity: self.identity.clone(),
            service: self.service.clone(),
            created_unix: self.created_unix,
            expires_unix: self.expires_unix,
            status: self.status(now),
        }
    }
}

/// `POST /v1/tokens` request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateToken {
    /// The identity the token allows.
    pub identity: Identity,
    /// The service the holder may register (RFC 1123 label).
    #[serde(default)]
    pub service: Option<String>,
    /// Lifetime in seconds (1 s to one year); default one day.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// A token as the operator API lists it (no secret, no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The public id.
    pub id: String,
    /// The identity it allows.
    pub identity: Identity,
    /// The service it allows, if any.
    pub service: Option<String>,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    /// Expiry, Unix seconds.
    pub expires_unix: u64,
    /// State at the time of the answer.
    pub status: Status,
}

/// `POST /v1/tokens` answer: the only time the token itself is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// `pmt_<id>.<secret>`, to hand to the proxy (`PIMESH_PROXY_TOKEN_FILE`).
    pub token: String,
    /// Its details.
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// The token table.
#[derive(Debug)]
pub struct Tokens {
    table: Table<TokenRecord>,
    /// Serialises read-modify-write of records (revocation).
    write: Mutex<()>,
}

impl Tokens {
    /// The tokens of `store`.
    ///
    /// # Errors
    ///
    /// [`store::Error`] when the `tokens` table cannot be opened.
    pub fn new(store: &Store) -> Result<Tokens, store::Error> {
        Ok(Tokens {
            table: store.table("tokens")?,
            write: Mutex::new(()),
        })
    }

    /// Creates and stores (durably) a token; the answer holds the secret.
    ///
    /// # Errors
    ///
    /// [`Error::BadRequest`] for a TTL out of range, the controller's own
    /// identity, or a service that is not an RFC 1123 label; [`Error::Store`]
    /// when it cannot be stored.
    pub fn create(&self, req: &CreateToken, now: u64) -> Result<CreatedToken, Error> {
        let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
        if !(1..=MAX_TTL_SECS).contains(&ttl) {
            return Err(Error::BadRequest(format!(
                "ttl_seconds must be between 1 and {MAX_TTL_SECS}"
            )));
        }
        if req.identity.to_string() == pimesh_api::identity::CONTROLLER_IDENTITY {
            // Its holder could serve as the controller and open every tap.
            return Err(Error::BadRequest(format!(
                "identity {} is the controller's own; no token may claim it",
                req.identity
            )));
        }
        if let Some(s) = &req.service {
            if Identity::new(s, "x").is_err() {
                return Err(Error::BadRequest(format!(
                    "service {s:?} is not an RFC 1123 label"
                )));
            }
        }
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let id = loop {
            let id = crypto::hex(&crypto::random_bytes::<8>());
            if self.table.get(&id)?.is_none() {
                break id;
            }
        };
        let secret = crypto::hex(&crypto::random_bytes::<32>());
        let record = TokenRecord {
            id: id.clone(),
            identity: req.identity.clone(),
            service: req.service.clone(),
            secret_sha256: crypto::hex(&crypto::sha256(secret.as_bytes())),
            created_unix: now,
            expires_unix: now.saturating_add(ttl),
            revoked_unix: None,
        };
        self.table.put(&id, &record)?;
        Ok(CreatedToken {
            token: format!("{TOKEN_PREFIX}{id}.{secret}"),
            info: record.info(now),
        })
    }

    /// Every token, as of `now`, in id order.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the records cannot be read.
    pub fn list(&self, now: u64) -> Result<Vec<TokenInfo>, Error> {
        Ok(self
            .table
            .all()?
            .into_iter()
            .map(|(_, r)| r.info(now))
            .collect())
    }

    /// Revokes token `id` (durably; revoking twice keeps the first time).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown id; [`Error::Store`] when it cannot
    /// be read or written.
    pub fn revoke(&self, id: &str, now: u64) -> Result<TokenInfo, Error> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut record = self
            .table
            .get(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        if record.revoked_unix.is_none() {
            record.revoked_unix = Some(now);
            self.table.put(id, &record)?;
        }
        Ok(record.info(now))
    }

    /// Checks `token` for a certify request as `identity` at `now`. The
    /// secret's hash is compared in constant time; expiry and revocation are
    /// only told to a caller that knows the secret.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`]: as [`Tokens::check`], or
    /// [`Refusal::IdentityNotAllowed`] for another identity; [`Error::Store`].
    pub fn verify(&self, token: &str, identity: &Identity, now: u64) -> Result<TokenRecord, Error> {
        let record = self.check(token, now)?;
        if record.identity != *identity {
            return Err(Refusal::IdentityNotAllowed.into());
        }
        Ok(record)
    }

    /// Checks `token` at `now` whatever it is used for (a registration: the
    /// caller then checks the record's identity and service). The secret's
    /// hash is compared in constant time; expiry and revocation are only
    /// told to a caller that knows the secret.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`]: [`Refusal::InvalidToken`] (malformed, unknown id,
    /// wrong secret), [`Refusal::TokenExpired`], [`Refusal::TokenRevoked`];
    /// [`Error::Store`] when the record cannot be read.
    pub fn check(&self, token: &str, now: u64) -> Result<TokenRecord, Error> {
        let (id, secret) = parse(token.trim()).ok_or(Refusal::InvalidToken)?;
        let record = self.table.get(id)?.ok_or(Refusal::InvalidToken)?;
        let stored = crypto::unhex(&record.secret_sha256).unwrap_or_default();
        if !crypto::constant_time_eq(&crypto::sha256(secret.as_bytes()), &stored) {
            return Err(Refusal::InvalidToken.into());
        }
        match record.status(now) {
            Status::Revoked => return Err(Refusal::TokenRevoked.into()),
            Status::Expired => return Err(Refusal::TokenExpired.into()),
            Status::Active => {}
        }
        Ok(record)
    }

    /// Counts of tokens by status at `now` (for the `tokens` gauge).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the records cannot be read.
    pub fn counts(&self, now: u64) -> Result<[(Status, usize); 3], Error> {
        let mut counts = [
            (Status::Active, 0),
            (Status::Expired, 0),
            (Status::Revoked, 0),
        ];
        for (_, r) in self.table.all()? {
            let s = r.status(now);
            if let Some(c) = counts.iter_mut().find(|(k, _)| *k == s) {
                c.1 += 1;
            }
        }
        Ok(counts)
    }
}

/// `pmt_<16 hex>.<64 hex>` → (id, secret).
fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex(id, 16) && hex(secret, 64)).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pimesh_test_support::TempDir;

    const NOW: u64 = 1_750_000_000;

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    fn create(t: &Tokens, identity: &str, ttl: u64) -> CreatedToken {
        t.create(
            &CreateToken {
                identity: id(identity),
                service: Some("web".into()),
                ttl_seconds: Some(ttl),
            },
            NOW,
        )
        .unwrap()
    }

    fn refusal(r: Result<TokenRecord, Error>) -> Refusal {
        match r {
            Err(Error::Refused(r)) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn token_format_and_only_the_hash_is_stored() {
        let dir = TempDir::new("tok-format");
        let store = Store::open(dir.path()).unwrap();
        let t = Tokens::new(&store).unwrap();
        let c = create(&t, "shop/web", 60);
        let (tid, secret) = parse(&c.token).expect("pmt_<id>.<secret>");
        assert_eq!(tid, c.info.id);
        assert_eq!((tid.len(), secret.len()), (16, 64));
        let rec = store
            .table::<TokenRecord>("tokens")
            .unwrap()
            .get(tid)
            .unwrap()
            .unwrap();
        assert_eq!(
            rec.secret_sha256,
            crypto::hex(&crypto::sha256(secret.as_bytes()))
        );
        let raw = serde_json::to_string(&rec).unwrap();
        assert!(!raw.contains(secret), "the secret is not stored");
        assert_eq!(rec.expires_unix, NOW + 60);
        assert_eq!(c.info.status, Status::Active);
        assert_ne!(create(&t, "shop/web", 60).token, c.token);
    }

    #[test]
    fn verify_accepts_and_refuses() {
        let dir = TempDir::new("tok-verify");
        let t = Tokens::new(&Store::open(dir.path()).unwrap()).unwrap();
        let c = create(&t, "shop/web", 60);
        let web = id("shop/web");
        assert_eq!(t.verify(&c.token, &web, NOW).unwrap().id, c.info.id);
        assert_eq!(
            t.verify(&format!(" {}\n", c.token), &web, NOW + 59)
                .unwrap()
                .id,
            c.info.id
        );

        assert_eq!(
            refusal(t.verify(&c.token, &id("shop/db"), NOW)),
            Refusal::IdentityNotAllowed
        );
        assert_eq!(
            refusal(t.verify(&c.token, &web, NOW + 60)),
            Refusal::TokenExpired
        );
        // A wrong secret for a known id, a malformed token, an unknown id.
        let (tid, secret) = parse(&c.token).unwrap();
        let last = if secret.ends_with('0') { '1' } else { '0' };
        let flipped = format!("{TOKEN_PREFIX}{tid}.{}{last}", &secret[..63]);
        for bad in [
            flipped.as_str(),
            "",
            "pmt_",
            "garbage",
            &c.token[..c.token.len() - 1],
            &c.token.to_uppercase(),
            &format!("{TOKEN_PREFIX}0000000000000000.{secret}"),
        ] {
            assert_eq!(
                refusal(t.verify(bad, &web, NOW)),
                Refusal::InvalidToken,
                "{bad:?}"
            );
        }
        // Expiry and revocation are not told without the secret.
        assert_eq!(
            refusal(t.verify(&flipped, &web, NOW + 100)),
            Refusal::InvalidToken
        );

        let info = t.revoke(&c.info.id, NOW + 1).unwrap();
        assert_eq!(info.status, Status::Revoked);
        assert_eq!(
            refusal(t.verify(&c.token, &web, NOW + 2)),
            Refusal::TokenRevoked
        );
        // Revoked wins over expired; revoking again keeps the first time.
        assert_eq!(
            refusal(t.verify(&c.token, &web, NOW + 100)),
            Refusal::TokenRevoked
        );
        t.revoke(&c.info.id, NOW + 5).unwrap();
        assert!(matches!(
            t.revoke("0123456789abcdef", NOW),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn list_counts_and_reopen() {
        let dir = TempDir::new("tok-list");
        let (a, b) = {
            let t = Tokens::new(&Store::open(dir.path()).unwrap()).unwrap();
            let a = create(&t, "shop/web", 10);
            let b = create(&t, "shop/db", 1000);
            t.revoke(&b.info.id, NOW).unwrap();
            create(&t, "shop/api", 1000);
            (a, b)
        };
        let t = Tokens::new(&Store::open(dir.path()).unwrap()).unwrap();
        let list = t.list(NOW + 20).unwrap();
        assert_eq!(list.len(), 3);
        let status = |tid: &str| list.iter().find(|i| i.id == tid).unwrap().status;
        assert_eq!(status(&a.info.id), Status::Expired);
        assert_eq!(status(&b.info.id), Status::Revoked);
        assert_eq!(
            t.counts(NOW + 20).unwrap(),
            [
                (Status::Active, 1),
                (Status::Expired, 1),
                (Status::Revoked, 1)
            ]
        );
        // Survives the reopen: the token still verifies.
        assert!(t.verify(&a.token, &id("shop/web"), NOW).is_ok());
    }

    #[test]
    fn create_validates() {
        let dir = TempDir::new("tok-create");
        let t = Tokens::new(&Store::open(dir.path()).unwrap()).unwrap();
        let req = |service: Option<&str>, ttl| CreateToken {
            identity: id("a/b"),
            service: service.map(str::to_string),
            ttl_seconds: ttl,
        };
        assert!(matches!(
            t.create(&req(None, Some(0)), NOW),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            t.create(&req(None, Some(MAX_TTL_SECS + 1)), NOW),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            t.create(&req(Some("Bad_Name"), None), NOW),
            Err(Error::BadRequest(_))
        ));
        let controller = CreateToken {
            identity: id(pimesh_api::identity::CONTROLLER_IDENTITY),
            ..req(None, None)
        };
        assert!(matches!(
            t.create(&controller, NOW),
            Err(Error::BadRequest(m)) if m.contains("controller's own")
        ));
        let c = t.create(&req(None, None), NOW).unwrap();
        assert_eq!(c.info.expires_unix, NOW + DEFAULT_TTL_SECS);
        assert_eq!(c.info.service, None);
    }
}
