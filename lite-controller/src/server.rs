//! `pimesh controller`: opens the store, starts the identity role, binds
//! the proxy-facing and operator listeners, keeps the controller's own
//! certificate fresh, prunes old serial records, and on shutdown drains
//! both listeners and flushes the database.
//!
//! The controller's own certificate is issued at every start and renewed
//! in the background at two thirds of its lifetime, at a pending rotation's
//! activation (so that it is signed by the issuer that signs), and on
//! every CA change; a failed renewal is retried every second.

use crate::config::Config;
use crate::identity::{self, now_unix, Authority, Settings};
use crate::metrics::Metrics;
use crate::proxy_api::{self, CertSlot, SHUTDOWN_GRACE};
use crate::store::{self, Store};
use crate::telemetry::Telemetry;
use crate::token::Tokens;
use crate::{admin, error_chain};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest sleep of the renewal loop between wall-clock checks.
const MAX_RENEWAL_SLEEP: Duration = Duration::from_secs(60);
/// How often issued-serial records are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// What both listeners share.
pub struct Ctx {
    /// The CA.
    pub authority: Arc<Authority>,
    /// Every series.
    pub metrics: Metrics,
    /// Cancelled on SIGTERM/SIGINT: listeners stop, `/ready` fails.
    pub shutdown: CancellationToken,
    /// The telemetry role (scrapes, windows, history, dashboard).
    pub telemetry: Arc<Telemetry>,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory cannot be used.
    #[error("cannot open the data directory")]
    Store(#[from] store::Error),
    /// The CA cannot be loaded, created or imported.
    #[error("cannot start the identity role")]
    Identity(#[from] identity::Error),
    /// A listener cannot be bound.
    #[error("cannot listen on {addr} ({which})")]
    Bind {
        /// `--proxy-addr` or `--admin-addr`.
        which: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration cannot be built.
    #[error("cannot set up TLS")]
    Tls(#[from] rustls::Error),
}

impl Error {
    /// The process exit code: 64 for unusable operator-given CA files
    /// (configuration), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Identity(identity::Error::Import(_)) => 64,
            _ => 1,
        }
    }
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let store = Store::open(&config.data_dir)?;
    let tokens = Arc::new(Tokens::new(&store)?);
    let settings = Settings {
        trust_domain: config.trust_domain.clone(),
        cert_lifetime: config.cert_lifetime,
        import: config
            .import
            .clone()
            .map(|p| (p.anchors, p.issuer, p.issuer_key)),
    };
    let authority = Arc::new(Authority::start(&store, tokens, settings, now_unix())?);
    let status = authority.status(now_unix())?;
    tracing::info!(
        anchors = ?status.anchors.iter().map(|a| &a.sha256[..16]).collect::<Vec<_>>(),
        issuer = &status.issuer.sha256[..16],
        issuer_not_after = status.issuer.not_after_unix,
        stage = ?status.stage,
        certificates = status.certificates,
        "CA loaded"
    );
    let cert = authority.controller_cert(now_unix())?;
    let slot = Arc::new(CertSlot::new(&cert)?);
    let tls = proxy_api::tls_config(slot.clone())?;

    let bind = |which, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| Error::Bind {
            which,
            addr,
            source,
        })
    };
    let proxy = bind("--proxy-addr", config.proxy_addr).await?;
    let admin = bind("--admin-addr", config.admin_addr).await?;
    let local = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        proxy = %local(&proxy),
        admin = %local(&admin),
        "pimesh controller listening"
    );

    // Dynamic scrape targets (the registry's endpoints) are plugged in
    // with `telemetry.add_source(...)` (see `telemetry::Target::from_endpoint`).
    let telemetry = Arc::new(Telemetry::new(config.telemetry.clone(), &store)?);
    let ctx = Arc::new(Ctx {
        authority: authority.clone(),
        metrics: Metrics::new(),
        shutdown: shutdown.clone(),
        telemetry: telemetry.clone(),
    });
    ctx.metrics
        .serving_cert_expiry
        .set(cert.not_after_unix as i64);
    let proxy_task = tokio::spawn(proxy_api::serve(proxy, tls, ctx.clone()));
    let admin_task = tokio::spawn(admin::serve(admin, ctx.clone()));
    let renew = tokio::spawn(renew_serving_cert(
        ctx.clone(),
        slot,
        now_unix(),
        cert.not_after_unix,
    ));
    let prune = tokio::spawn(prune(ctx.clone()));
    let telemetry_task = tokio::spawn(telemetry.run(shutdown.clone()));

    shutdown.cancelled().await;
    tracing::info!("shutting down: draining connections");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), async {
        let _ = proxy_task.await;
        let _ = admin_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections did not drain in time");
    }
    renew.abort();
    prune.abort();
    // It writes the last history minutes, then ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), telemetry_task).await;
    authority.flush()?;
    tracing::info!("database flushed; exiting");
    Ok(())
}

/// Keeps the controller's own certificate fresh (see the module doc).
async fn renew_serving_cert(ctx: Arc<Ctx>, slot: Arc<CertSlot>, issued: u64, not_after: u64) {
    let mut changes = ctx.authority.changes();
    // (issued, not_after) of the certificate served, or a retry time.
    let mut next = issued + (not_after.saturating_sub(issued) * 2 / 3).max(1);
    loop {
        let mut at = next;
        if let Some(t) = ctx.authority.next_activation(now_unix()) {
            at = at.min(t);
        }
        // Sleep at most a minute: a board's wall clock may jump (NTP after
        // boot), and renewal follows the wall clock, not the monotonic one.
        let wait = (SystemTime::UNIX_EPOCH + Duration::from_secs(at))
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(MAX_RENEWAL_SLEEP);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => if now_unix() < at { continue },
            r = changes.changed() => if r.is_err() { return },
        }
        let authority = ctx.authority.clone();
        let now = now_unix();
        let result = tokio::task::spawn_blocking(move || authority.controller_cert(now)).await;
        let renewed = match result {
            Ok(Ok(cert)) => slot.set(&cert).map(|()| cert).map_err(|e| error_chain(&e)),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        match renewed {
            Ok(cert) => {
                tracing::debug!(serial = %cert.serial, not_after = cert.not_after_unix, "renewed the controller's certificate");
                ctx.metrics
                    .serving_cert_expiry
                    .set(cert.not_after_unix as i64);
                next = now + (cert.not_after_unix.saturating_sub(now) * 2 / 3).max(1);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot renew the controller's certificate; retrying in 1s");
                next = now + 1;
            }
        }
    }
}

/// Prunes long-expired serial records at start and every [`PRUNE_INTERVAL`].
async fn prune(ctx: Arc<Ctx>) {
    loop {
        let authority = ctx.authority.clone();
        match tokio::task::spawn_blocking(move || authority.prune(now_unix())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "pruned expired certificate records"),
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "cannot prune certificate records")
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}
