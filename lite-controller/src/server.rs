//! `pimesh controller`: opens the store, starts the identity and discovery
//! roles, binds the proxy-facing and operator listeners, keeps the
//! controller's own certificate fresh (and the client-certificate trust
//! anchors current), prunes old serial records, expires leases, and on
//! shutdown drains both listeners and flushes the database.
//!
//! The controller's own certificate is issued at every start and renewed
//! in the background at two thirds of its lifetime, at a pending rotation's
//! activation (so that it is signed by the issuer that signs), and on
//! every CA change; a failed renewal is retried every second. In
//! Kubernetes mode the proxy injector's listener (`inject`) gets its own
//! certificate, renewed the same way.
//!
//! Data flows one way: this module builds each part's context
//! (`proxy_api::Ctx`, `admin::Ctx`, `tap::Ctx`) from the roles it
//! started and hands it over; the parts never import `server`.

use crate::cert_slot::CertSlot;
use crate::config::Config;
use crate::identity::{self, now_unix, Authority, ControllerCert, Settings};
use crate::kube::{self, access, Kube};
use crate::metrics::Metrics;
use crate::proxy_api::client_auth::ClientAuth;
use crate::proxy_api::{self, SHUTDOWN_GRACE};
use crate::registry::{self, Registry};
use crate::store::{self, Store};
use crate::telemetry::Telemetry;
use crate::token::Tokens;
use crate::{admin, error_chain, inject, tap};
use prometheus_client::metrics::gauge::Gauge;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest sleep of the renewal loop between wall-clock checks.
const MAX_RENEWAL_SLEEP: Duration = Duration::from_secs(60);
/// How often issued-serial records are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How long start-up waits for the Kubernetes permission check before it
/// serves anyway (not ready) and checks in the background.
const ACCESS_CHECK_WAIT: Duration = Duration::from_secs(5);
/// Longest time between lease sweeps (shorter for short leases).
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory cannot be used.
    #[error("cannot open the data directory")]
    Store(#[from] store::Error),
    /// The CA cannot be loaded, created or imported.
    #[error("cannot start the identity role")]
    Identity(#[from] identity::Error),
    /// The registry cannot be loaded.
    #[error("cannot start the discovery role")]
    Registry(#[from] registry::Error),
    /// A listener cannot be bound.
    #[error("cannot listen on {addr} ({which})")]
    Bind {
        /// `--proxy-addr`, `--admin-addr` or `--webhook-addr`.
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
    /// Kubernetes mode cannot start (kubeconfig, permissions).
    #[error("Kubernetes mode")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// The process exit code: 64 for unusable operator-given CA files
    /// (configuration), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Identity(identity::Error::Import(_)) => 64,
            Error::Kube(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// Runs the controller until `shutdown` is cancelled.
///
/// # Errors
///
/// [`Error`] when a role cannot start (data directory, CA, registry,
/// Kubernetes client or permissions), a listener cannot be bound or TLS
/// cannot be set up; at shutdown when the database cannot be flushed, or
/// when a late Kubernetes permission check was denied.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    // Kubernetes mode: the client first, so that an unusable kubeconfig
    // (exit 64) leaves no data directory behind.
    let kube_client = match &config.kubernetes {
        Some(settings) => Some(kube::client(settings).await?),
        None => None,
    };
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
    let authority = Arc::new(Authority::start(
        &store,
        tokens.clone(),
        settings,
        now_unix(),
    )?);
    let status = authority.status(now_unix())?;
    tracing::info!(
        anchors = ?status.anchors.iter().map(|a| &a.sha256[..16]).collect::<Vec<_>>(),
        issuer = &status.issuer.sha256[..16],
        issuer_not_after = status.issuer.not_after_unix,
        stage = ?status.stage,
        certificates = status.certificates,
        "CA loaded"
    );
    // Kubernetes mode: the client, then the permissions (a denial stops
    // start-up; an API server that does not answer yet is checked again
    // in the background while the controller serves, not ready).
    let mut access_pending = false;
    let kube = match (&config.kubernetes, kube_client) {
        (Some(settings), Some(client)) => {
            match tokio::time::timeout(
                ACCESS_CHECK_WAIT,
                access::check(&client, &settings.namespace),
            )
            .await
            {
                Ok(Ok(())) => {
                    tracing::info!(namespace = %settings.namespace, "Kubernetes permissions checked")
                }
                Ok(Err(access::CheckError::Denied(d))) => return Err(kube::Error::Access(d).into()),
                Ok(Err(access::CheckError::Api(e))) => {
                    tracing::warn!(error = %error_chain(&e), "Kubernetes API unavailable at start: permissions are checked when it answers");
                    access_pending = true;
                }
                Err(_) => {
                    tracing::warn!("Kubernetes API did not answer at start: permissions are checked when it answers");
                    access_pending = true;
                }
            }
            Some(Arc::new(Kube {
                client,
                namespace: settings.namespace.clone(),
                status: Default::default(),
            }))
        }
        _ => None,
    };
    let registry = if kube.is_some() {
        Arc::new(Registry::kubernetes(&store, &config.cluster_domain)?)
    } else {
        let registry = Arc::new(Registry::open(
            &store,
            config.lease_ttl,
            &config.cluster_domain,
            std::time::Instant::now(),
        )?);
        let (services, registered, operator, _) = registry.counts();
        tracing::info!(
            services,
            registered,
            operator,
            revision = registry.revision(),
            lease_ttl = ?config.lease_ttl,
            "registry loaded; registered endpoints have a fresh lease"
        );
        registry
    };
    let cert = authority.controller_cert(now_unix())?;
    let slot = Arc::new(CertSlot::new(&cert)?);
    let client_auth = Arc::new(ClientAuth::new(&authority.trust_anchors_pem())?);
    let tls = proxy_api::tls_config(slot.clone(), client_auth.clone())?;

    let bind = |which, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| Error::Bind {
            which,
            addr,
            source,
        })
    };
    let proxy = bind("--proxy-addr", config.proxy_addr).await?;
    let admin = bind("--admin-addr", config.admin_addr).await?;
    // Kubernetes mode: the proxy injector's listener and certificate.
    let webhook = match &config.kubernetes {
        Some(settings) => {
            let listener = bind("--webhook-addr", settings.webhook_addr).await?;
            let addr = listener.local_addr().unwrap_or(settings.webhook_addr);
            let (dns, ips) =
                inject::serving_names(&settings.namespace, &config.cluster_domain, addr);
            let issue: IssueFn = Arc::new(move |a: &Authority, now| a.server_cert(&dns, &ips, now));
            let cert = issue(&authority, now_unix())?;
            let slot = Arc::new(CertSlot::new(&cert)?);
            Some((listener, slot, cert, issue))
        }
        None => None,
    };
    let local = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        proxy = %local(&proxy),
        admin = %local(&admin),
        webhook = %webhook.as_ref().map_or("-".to_string(), |w| local(&w.0)),
        "pimesh controller listening"
    );

    // Scrape targets: the `--scrape-target` flags, then every registered
    // endpoint whose proxy gave its admin address.
    let telemetry = Arc::new(Telemetry::new(config.telemetry.clone(), &store)?);
    let scraped = registry.clone();
    telemetry.add_source(Arc::new(move || {
        scraped
            .endpoints()
            .iter()
            .filter_map(|e| crate::telemetry::Target::from_endpoint(&e.endpoint))
            .collect::<Vec<_>>()
    }));
    let metrics = Arc::new(Metrics::new());
    metrics.serving_cert_expiry.set(cert.not_after_unix as i64);
    let policies = Arc::new(crate::policy::stored::Policies::open(&store)?);
    // The policy streams' source: the watched CRDs in Kubernetes mode,
    // else the sled store.
    let kube_policy = kube
        .is_some()
        .then(|| Arc::new(kube::policy::Shared::new(metrics.kube.clone())));
    let policy_snapshots = match &kube_policy {
        Some(k) => k.snapshots(),
        None => policies.snapshots(),
    };
    let proxy_ctx = Arc::new(proxy_api::Ctx {
        policies: policy_snapshots.clone(),
        authority: authority.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        kube: kube.clone(),
        discovery: Arc::new(proxy_api::discovery::Ctx {
            registry: registry.clone(),
            tokens,
            watch_slots: Arc::new(tokio::sync::Semaphore::new(config.max_watches)),
            metrics: metrics.discovery.clone(),
            policies: policy_snapshots.clone(),
        }),
    });
    let admin_ctx = Arc::new(admin::Ctx {
        authority: authority.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        telemetry: telemetry.clone(),
        kube: kube.clone(),
        tap: Arc::new(tap::Ctx {
            registry: registry.clone(),
            authority: authority.clone(),
            cert: slot.clone(),
            shutdown: shutdown.clone(),
            relays: Default::default(),
        }),
        policies,
        policy_snapshots,
    });
    let proxy_task = tokio::spawn(proxy_api::serve(proxy, tls, proxy_ctx));
    let admin_task = tokio::spawn(admin::serve(admin, admin_ctx));
    let renew = tokio::spawn(renew_serving_cert(
        authority.clone(),
        shutdown.clone(),
        slot,
        Arc::new(|a: &Authority, now| a.controller_cert(now)),
        Some(metrics.serving_cert_expiry.clone()),
        now_unix(),
        cert.not_after_unix,
    ));
    let prune = tokio::spawn(prune(authority.clone(), shutdown.clone()));
    let anchors = tokio::spawn(follow_anchors(authority.clone(), client_auth));
    // Leases exist in standalone mode only.
    let sweep = kube.is_none().then(|| {
        tokio::spawn(sweep_leases(
            registry.clone(),
            metrics.clone(),
            shutdown.clone(),
        ))
    });
    let telemetry_task = tokio::spawn(telemetry.run(shutdown.clone()));
    let fatal: Arc<std::sync::Mutex<Option<kube::Error>>> = Default::default();
    let mut kube_tasks = Vec::new();
    if let Some(k) = &kube {
        let shared = Arc::new(kube::discovery::Shared::new(
            registry.clone(),
            k.status.clone(),
            metrics.kube.clone(),
        ));
        kube_tasks.push(tokio::spawn(kube::discovery::run(k.client.clone(), shared)));
        if let Some(p) = kube_policy {
            kube_tasks.push(tokio::spawn(kube::policy::status::run(
                k.client.clone(),
                p.snapshots(),
                registry.clone(),
                metrics.kube.clone(),
            )));
            kube_tasks.push(tokio::spawn(kube::policy::run(k.client.clone(), p)));
        }
        kube_tasks.push(tokio::spawn(kube::identity::publish_trust_roots(
            k.client.clone(),
            k.namespace.clone(),
            authority.clone(),
            metrics.kube.clone(),
            shutdown.clone(),
        )));
        kube_tasks.push(tokio::spawn(kube::webhook::keep_ca_bundle(
            k.client.clone(),
            authority.clone(),
            metrics.kube.clone(),
            shutdown.clone(),
        )));
        if let Some((listener, slot, cert, issue)) = webhook {
            let settings = config.kubernetes.as_ref().expect("Kubernetes mode");
            let native_sidecars = kube::native_sidecars(&k.client).await;
            let injector = Arc::new(inject::Injector {
                client: k.client.clone(),
                params: inject::patch::Params {
                    controller_ns: k.namespace.clone(),
                    cluster_domain: config.cluster_domain.clone(),
                    trust_domain: config.trust_domain.clone(),
                    proxy_image: settings.proxy_image.clone(),
                    native_sidecars,
                    default_inbound_policy: settings.default_inbound_policy,
                    cluster_networks: settings.cluster_networks.clone(),
                },
                metrics: metrics.inject.clone(),
            });
            let tls = inject::tls_config(slot.clone())?;
            kube_tasks.push(tokio::spawn(inject::serve(
                listener,
                tls,
                injector,
                shutdown.clone(),
            )));
            kube_tasks.push(tokio::spawn(renew_serving_cert(
                authority.clone(),
                shutdown.clone(),
                slot,
                issue,
                None,
                now_unix(),
                cert.not_after_unix,
            )));
        }
        if access_pending {
            kube_tasks.push(tokio::spawn(check_access_later(
                k.clone(),
                fatal.clone(),
                shutdown.clone(),
            )));
        }
    }

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
    anchors.abort();
    if let Some(sweep) = sweep {
        sweep.abort();
    }
    for t in kube_tasks {
        t.abort();
    }
    // It writes the last history minutes, then ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), telemetry_task).await;
    authority.flush()?;
    tracing::info!("database flushed; exiting");
    let fatal = fatal.lock().unwrap_or_else(|e| e.into_inner()).take();
    match fatal {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Kubernetes mode, API server unavailable at start: checks the
/// permissions once it answers (backoff 1 s doubling to 30 s); a denial
/// stops the controller (exit 1) through `fatal` and `shutdown`.
async fn check_access_later(
    k: Arc<Kube>,
    fatal: Arc<std::sync::Mutex<Option<kube::Error>>>,
    shutdown: CancellationToken,
) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match access::check(&k.client, &k.namespace).await {
            Ok(()) => {
                return tracing::info!(namespace = %k.namespace, "Kubernetes permissions checked")
            }
            Err(access::CheckError::Denied(d)) => {
                tracing::error!(error = %d, "stopping");
                *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(kube::Error::Access(d));
                shutdown.cancel();
                return;
            }
            Err(access::CheckError::Api(e)) => {
                tracing::debug!(error = %e, "permission check: Kubernetes API unavailable");
            }
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Issues a serving certificate at a Unix time: the controller's own
/// (proxy port) or the injector's.
type IssueFn =
    Arc<dyn Fn(&Authority, u64) -> Result<ControllerCert, identity::Error> + Send + Sync>;

/// Keeps a serving certificate in `slot` fresh (see the module doc), each
/// from `issue`, until `shutdown`; `expiry`: the series of the controller
/// certificate's expiry, set at each renewal.
async fn renew_serving_cert(
    authority: Arc<Authority>,
    shutdown: CancellationToken,
    slot: Arc<CertSlot>,
    issue: IssueFn,
    expiry: Option<Gauge>,
    issued: u64,
    not_after: u64,
) {
    let mut changes = authority.changes();
    // (issued, not_after) of the certificate served, or a retry time.
    let mut next = issued + (not_after.saturating_sub(issued) * 2 / 3).max(1);
    loop {
        let mut at = next;
        if let Some(t) = authority.next_activation(now_unix()) {
            at = at.min(t);
        }
        // Sleep at most a minute: a board's wall clock may jump (NTP after
        // boot), and renewal follows the wall clock, not the monotonic one.
        let wait = (SystemTime::UNIX_EPOCH + Duration::from_secs(at))
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(MAX_RENEWAL_SLEEP);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => if now_unix() < at { continue },
            r = changes.changed() => if r.is_err() { return },
        }
        let (a, now, issue) = (authority.clone(), now_unix(), issue.clone());
        let result = tokio::task::spawn_blocking(move || issue(&a, now)).await;
        let renewed = match result {
            Ok(Ok(cert)) => slot.set(&cert).map(|()| cert).map_err(|e| error_chain(&e)),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        match renewed {
            Ok(cert) => {
                tracing::debug!(serial = %cert.serial, not_after = cert.not_after_unix, "renewed a serving certificate");
                if let Some(g) = &expiry {
                    g.set(cert.not_after_unix as i64);
                }
                next = now + (cert.not_after_unix.saturating_sub(now) * 2 / 3).max(1);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot renew a serving certificate; retrying in 1s");
                next = now + 1;
            }
        }
    }
}

/// Prunes long-expired serial records at start and every [`PRUNE_INTERVAL`].
async fn prune(authority: Arc<Authority>, shutdown: CancellationToken) {
    loop {
        let a = authority.clone();
        match tokio::task::spawn_blocking(move || a.prune(now_unix())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "pruned expired certificate records"),
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "cannot prune certificate records")
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// Keeps the client-certificate verifier on the current trust anchors
/// (they change with every rotation step).
async fn follow_anchors(authority: Arc<Authority>, client_auth: Arc<ClientAuth>) {
    let mut changes = authority.changes();
    while changes.changed().await.is_ok() {
        if let Err(e) = client_auth.set(&authority.trust_anchors_pem()) {
            tracing::error!(error = %e, "cannot verify client certificates with the new trust anchors");
        }
    }
}

/// Drops endpoints whose lease ran out, every TTL/4 (at most every
/// [`MAX_SWEEP_INTERVAL`]); a failed write is retried at the next sweep.
async fn sweep_leases(registry: Arc<Registry>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let every = (registry.lease_ttl() / 4).min(MAX_SWEEP_INTERVAL);
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (r, now) = (registry.clone(), std::time::Instant::now());
        match tokio::task::spawn_blocking(move || r.expire(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                metrics.discovery.lease_expirations.inc_by(n as u64);
            }
            Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "cannot expire leases"),
            Err(_) => {}
        }
    }
}
