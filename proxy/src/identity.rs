//! The proxy's mesh identity: a key generated in memory at start (never
//! written anywhere), a certificate requested from the controller with the
//! proxy's token, renewed at ~70 % of its lifetime (with jitter), retried
//! with backoff while the controller is unreachable — the current
//! certificate keeps serving meanwhile — and the trust-anchor bundle
//! refreshed so that anchor rotations reach every proxy before new
//! issuers are used.

use crate::config::IdentityConfig;
use crate::metrics::Metrics;
use crate::tls::{self, CredentialStore, Credentials};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use pimesh_api::identity::{CertifyRequest, CertifyResponse, CERTIFY_PATH, TRUST_ANCHORS_PATH};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// First retry delay after a failed request; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Limit on one controller exchange (connect, TLS, request, response).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest controller response read, in bytes.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why getting a certificate failed; the variant is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token file could not be read.
    #[error("cannot read the token file")]
    Token(#[source] std::io::Error),
    /// The controller could not be reached or spoke no HTTP/2 over TLS.
    #[error("controller unreachable")]
    Unreachable(#[source] std::io::Error),
    /// The controller did not answer in time.
    #[error("controller timed out")]
    Timeout,
    /// The controller refused the request (HTTP status and its `ApiError`).
    #[error("controller refused: {0} {1}")]
    Refused(u16, String),
    /// The controller's answer was not usable.
    #[error("invalid answer from the controller: {0}")]
    Invalid(String),
    /// The key or CSR could not be made.
    #[error("cannot make a CSR")]
    Csr(#[from] rcgen::Error),
}

impl Error {
    /// The `error` label of `identity_cert_renewals_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Token(_) => "token",
            Error::Unreachable(_) => "unreachable",
            Error::Timeout => "timeout",
            Error::Refused(..) => "refused",
            Error::Invalid(_) => "invalid",
            Error::Csr(_) => "csr",
        }
    }
}

/// Keeps `store` filled with valid credentials until `shutdown`.
pub async fn run(
    cfg: IdentityConfig,
    store: Arc<CredentialStore>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut anchors = match tls::load_anchors(&cfg.trust_anchors) {
        Ok(a) => a,
        Err(e) => {
            // Config validated the file at start; it may have changed since.
            tracing::error!(%e, "cannot load trust anchors; no identity");
            return;
        }
    };
    let mut backoff = MIN_BACKOFF;
    // The current leaf's chain and key, to rebuild credentials when only
    // the anchors change.
    let mut current: Option<(Vec<CertificateDer<'static>>, Vec<u8>)> = None;
    let mut renew_at = SystemTime::now();
    loop {
        let now = SystemTime::now();
        let wait = if now >= renew_at {
            match certify(&cfg, &anchors).await {
                Ok(issued) => {
                    let lifetime = issued.not_after.duration_since(now).unwrap_or_default();
                    renew_at = now + lifetime.mul_f64(0.7 + jitter(0.1) - 0.05);
                    metrics.identity_renewed(issued.not_after);
                    tracing::info!(identity = %cfg.identity, expires_in = ?lifetime, renew_in = ?renew_at.duration_since(now).unwrap_or_default(), "certificate issued");
                    anchors = issued.anchors.clone();
                    current = Some((issued.chain.clone(), issued.key.clone()));
                    install(
                        &cfg,
                        &store,
                        issued.chain,
                        &issued.key,
                        issued.not_after,
                        issued.anchors,
                    );
                    backoff = MIN_BACKOFF;
                    renew_at
                        .duration_since(now)
                        .unwrap_or_default()
                        .min(cfg.anchors_refresh)
                }
                Err(e) => {
                    metrics.identity_failed(e.label());
                    tracing::warn!(error = %crate::error_chain(&e), retry_in = ?backoff, "cannot get a certificate; keeping the current one");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            }
        } else {
            // Between renewals: pick up trust-anchor changes.
            match fetch_anchors(&cfg, &anchors).await {
                Ok(fresh) if fresh != anchors => {
                    tracing::info!(anchors = fresh.len(), "trust anchors changed");
                    anchors = fresh;
                    if let Some((chain, key)) = &current {
                        let not_after = store.get().map_or(now, |c| c.not_after);
                        install(&cfg, &store, chain.clone(), key, not_after, anchors.clone());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %crate::error_chain(&e), "cannot refresh trust anchors")
                }
            }
            renew_at
                .duration_since(now)
                .unwrap_or_default()
                .min(cfg.anchors_refresh)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn install(
    cfg: &IdentityConfig,
    store: &CredentialStore,
    chain: Vec<CertificateDer<'static>>,
    key: &[u8],
    not_after: SystemTime,
    anchors: Vec<CertificateDer<'static>>,
) {
    match Credentials::new(
        cfg.identity.clone(),
        cfg.trust_domain.clone(),
        chain,
        key,
        not_after,
        anchors,
    ) {
        Ok(c) => store.set(c),
        Err(e) => {
            tracing::error!(error = %crate::error_chain(&e), "cannot use the issued certificate")
        }
    }
}

/// A certificate as issued.
struct Issued {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
    not_after: SystemTime,
    anchors: Vec<CertificateDer<'static>>,
}

/// Generates a key, sends its CSR with the token, and checks the answer:
/// a chain whose leaf names this proxy's identity, and a bundle of anchors.
async fn certify(
    cfg: &IdentityConfig,
    anchors: &[CertificateDer<'static>],
) -> Result<Issued, Error> {
    let token = std::fs::read_to_string(&cfg.token_file).map_err(Error::Token)?;
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec![cfg.identity.dns_name(&cfg.trust_domain)])?;
    let csr_pem = params.serialize_request(&key)?.pem()?;
    let body = serde_json::to_vec(&CertifyRequest {
        identity: cfg.identity.clone(),
        token: token.trim().to_string(),
        csr_pem,
    })
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let rsp = request(cfg, anchors, http::Method::POST, CERTIFY_PATH, body.into()).await?;
    let rsp: CertifyResponse =
        serde_json::from_slice(&rsp).map_err(|e| Error::Invalid(e.to_string()))?;
    let chain = tls::parse_certs(&rsp.chain_pem).map_err(|e| Error::Invalid(e.to_string()))?;
    let new_anchors =
        tls::parse_certs(&rsp.trust_anchors_pem).map_err(|e| Error::Invalid(e.to_string()))?;
    if tls::peer_identity(&chain[0], &cfg.trust_domain).as_ref() != Some(&cfg.identity) {
        return Err(Error::Invalid(
            "the certificate names another identity".into(),
        ));
    }
    Ok(Issued {
        chain,
        key: key.serialize_der(),
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(rsp.not_after_unix),
        anchors: new_anchors,
    })
}

async fn fetch_anchors(
    cfg: &IdentityConfig,
    anchors: &[CertificateDer<'static>],
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = request(
        cfg,
        anchors,
        http::Method::GET,
        TRUST_ANCHORS_PATH,
        Bytes::new(),
    )
    .await?;
    let pem = std::str::from_utf8(&pem).map_err(|e| Error::Invalid(e.to_string()))?;
    tls::parse_certs(pem).map_err(|e| Error::Invalid(e.to_string()))
}

/// One HTTP/2-over-TLS exchange with the controller, whose certificate
/// must chain to `anchors` and name the controller's identity.
async fn request(
    cfg: &IdentityConfig,
    anchors: &[CertificateDer<'static>],
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Result<Bytes, Error> {
    let exchange = async {
        let unreachable = |e: std::io::Error| Error::Unreachable(e);
        let tcp = tokio::net::TcpStream::connect(&cfg.controller_addr)
            .await
            .map_err(unreachable)?;
        let _ = tcp.set_nodelay(true);
        let config = tls::anonymous_client(anchors, pimesh_api::identity::ALPN_H2)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let name = tls::server_name(&cfg.controller_identity, &cfg.trust_domain);
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(unreachable)?;
        let (mut sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| Error::Unreachable(std::io::Error::other(e)))?;
        tokio::spawn(conn);
        let uri = format!("https://{}{path}", cfg.controller_addr);
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Unreachable(std::io::Error::other(e)))?;
        let status = rsp.status();
        let bytes = Limited::new(rsp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| Error::Invalid(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let msg = serde_json::from_slice::<pimesh_api::ApiError>(&bytes)
                .map(|e| format!("{}: {}", e.error, e.message))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Error::Refused(status.as_u16(), msg));
        }
        Ok(bytes)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| Error::Timeout)?
}

/// A uniformly random fraction in `[0, max)`, from the standard library's
/// randomly keyed hasher (no RNG dependency for a jitter).
fn jitter(max: f64) -> f64 {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(SystemTime::now());
    (r >> 11) as f64 / (1u64 << 53) as f64 * max
}
