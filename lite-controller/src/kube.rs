//! Kubernetes mode (`pimesh controller` without `--standalone`): the
//! client, readiness, and the `pimesh_controller_kube_*` series; the
//! roles live in:
//!
//! - `wire`: Services, EndpointSlices and Pods as decoded (needed fields only).
//! - `objects`: their compact copies.
//! - `watch`: one resource's watcher, restarted when the API server answers again.
//! - `discovery`: the watches, their index, and the registry records.
//! - `policy`: the policy CRDs' watches, published to the policy streams.
//! - `identity`: TokenReview for certify, the trust-roots ConfigMap.
//! - `access`: the RBAC rules (one table), the manifest, the start-up check.
//! - `webhook`: the proxy injector's `caBundle`, kept equal to the trust anchors.

pub mod access;
pub mod discovery;
pub mod identity;
#[cfg(test)]
pub mod mock;
pub mod objects;
pub mod policy;
pub mod watch;
pub mod webhook;
pub mod wire;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as Prometheus;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Namespace of the controller unless configured (and not in a pod).
pub const DEFAULT_NAMESPACE: &str = "pimesh";
/// Where a pod's ServiceAccount namespace is mounted.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Kubernetes mode's settings (`--kubeconfig`, `--namespace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--kubeconfig` / `KUBECONFIG` (`:`-separated files, merged); `None`:
    /// what `kube::Config::infer` finds (`~/.kube/config`, else in-cluster).
    pub kubeconfig: Option<String>,
    /// The controller's own namespace (its ServiceAccount; the injector
    /// leaves its pods alone).
    pub namespace: String,
    /// `--webhook-addr`: the proxy injector's HTTPS listener.
    pub webhook_addr: std::net::SocketAddr,
    /// `--proxy-image`: the image of the injected proxy and init container.
    pub proxy_image: String,
    /// `--default-inbound-policy`: injected proxies' default inbound
    /// policy where neither the pod nor its namespace names one.
    pub default_inbound_policy: pimesh_api::policy::DefaultPolicy,
    /// `--cluster-networks`: the networks of the `cluster-*` policies.
    pub cluster_networks: pimesh_api::policy::Networks,
}

/// Kubernetes mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig cannot be loaded (exit 64).
    #[error("cannot load the kubeconfig {flag} {value:?} (env {env})")]
    Kubeconfig {
        /// `--kubeconfig`, or `(inferred)` when none was given.
        flag: &'static str,
        /// `KUBECONFIG`.
        env: &'static str,
        /// The value given (empty when inferred).
        value: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client cannot be built from the configuration.
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
    /// The controller's ServiceAccount lacks a permission (exit 1).
    #[error(transparent)]
    Access(#[from] access::Denied),
}

impl Error {
    /// The process exit code: 64 for configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Kubeconfig { .. } => 64,
            _ => 1,
        }
    }
}

/// The first Kubernetes with native sidecars (`restartPolicy: Always`
/// init containers, on by default since 1.29).
pub const NATIVE_SIDECARS_SINCE: (u32, u32) = (1, 29);

/// `(major, minor)` of a `/version` answer (`"1"`, `"34+"` as some
/// distributions write it).
pub fn version_of(info: &k8s_openapi::apimachinery::pkg::version::Info) -> Option<(u32, u32)> {
    let num = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
    Some((num(&info.major)?, num(&info.minor)?))
}

/// Whether the API server runs native sidecars: asked once at start;
/// `true` when it cannot be told (every k3s in support has them).
pub async fn native_sidecars(client: &kube::Client) -> bool {
    match client.apiserver_version().await {
        Ok(info) => match version_of(&info) {
            Some(v) => {
                let native = v >= NATIVE_SIDECARS_SINCE;
                if !native {
                    tracing::info!(version = %info.git_version, "the API server predates native sidecars: the injector adds the proxy as the first container with a postStart wait");
                }
                native
            }
            None => true,
        },
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "cannot read the API server's version; injecting native sidecars");
            true
        }
    }
}

/// A client for `settings`: the kubeconfig files given, else inferred.
///
/// # Errors
///
/// [`Error::Kubeconfig`] (unreadable, unparsable, no context or server),
/// [`Error::Client`].
pub async fn client(settings: &Settings) -> Result<kube::Client, Error> {
    client_from(settings.kubeconfig.as_deref()).await
}

/// A client for the kubeconfig files `kubeconfig` (`:`-separated,
/// merged), else what `kube::Config::infer` finds (`pimesh check`).
///
/// # Errors
///
/// As [`client`].
pub async fn client_from(kubeconfig: Option<&str>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        Some(paths) => {
            let bad = |source: kube::config::KubeconfigError| Error::Kubeconfig {
                flag: "--kubeconfig",
                env: "KUBECONFIG",
                value: paths.to_string(),
                source: Box::new(source),
            };
            let mut merged: Option<kube::config::Kubeconfig> = None;
            for p in paths.split(':').filter(|p| !p.is_empty()) {
                let next = kube::config::Kubeconfig::read_from(PathBuf::from(p)).map_err(bad)?;
                merged = Some(match merged {
                    Some(m) => m.merge(next).map_err(bad)?,
                    None => next,
                });
            }
            let kc = merged.ok_or_else(|| bad(kube::config::KubeconfigError::FindPath))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(bad)?
        }
        None => kube::Config::infer().await.map_err(|e| Error::Kubeconfig {
            flag: "--kubeconfig",
            env: "KUBECONFIG",
            value: String::new(),
            source: Box::new(e),
        })?,
    };
    kube::Client::try_from(config).map_err(Error::Client)
}

/// The three resources discovery watches (`discovery`); index into
/// [`Status`] and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource3 {
    /// core/v1 Services.
    Services = 0,
    /// discovery.k8s.io/v1 EndpointSlices.
    EndpointSlices = 1,
    /// core/v1 Pods.
    Pods = 2,
}

impl Resource3 {
    /// Every resource.
    pub const ALL: [Resource3; 3] = [Self::Services, Self::EndpointSlices, Self::Pods];

    /// The plural resource name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Services => "services",
            Self::EndpointSlices => "endpointslices",
            Self::Pods => "pods",
        }
    }
}

/// Readiness of Kubernetes mode: ready once all three resources were fully
/// listed, and not while any watch is failing. Outages are logged once
/// (first failure, then recovery), not per retry.
#[derive(Debug, Default)]
pub struct Status {
    listed: [AtomicBool; 3],
    failing: [AtomicBool; 3],
    /// Resources failing now (0 → 1 logs the outage, → 0 its end).
    failing_count: AtomicUsize,
    /// Serialises the transitions' logging.
    log: Mutex<()>,
}

impl Status {
    /// Whether `/ready` answers 200.
    pub fn ready(&self) -> bool {
        Resource3::ALL.iter().all(|r| {
            self.listed[*r as usize].load(Ordering::Relaxed)
                && !self.failing[*r as usize].load(Ordering::Relaxed)
        })
    }

    /// Why not ready, for the `/ready` body.
    pub fn reason(&self) -> String {
        let pick = |f: &dyn Fn(usize) -> bool| {
            Resource3::ALL
                .iter()
                .filter(|r| f(**r as usize))
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let failing = pick(&|i| self.failing[i].load(Ordering::Relaxed));
        if !failing.is_empty() {
            return format!("Kubernetes watch failing: {failing}");
        }
        let unlisted = pick(&|i| !self.listed[i].load(Ordering::Relaxed));
        format!("Kubernetes resources not listed yet: {unlisted}")
    }

    /// Whether every resource was listed completely at least once.
    pub fn all_listed(&self) -> bool {
        self.listed.iter().all(|l| l.load(Ordering::Relaxed))
    }

    /// `r` was listed completely.
    pub fn listed(&self, r: Resource3) {
        self.listed[r as usize].store(true, Ordering::Relaxed);
    }

    /// Whether `r`'s watch is failing now.
    pub fn failing(&self, r: Resource3) -> bool {
        self.failing[r as usize].load(Ordering::Relaxed)
    }

    /// `r`'s watch failed (the watcher retries with backoff).
    pub fn failed(&self, r: Resource3, e: &dyn std::error::Error) {
        let _l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if !self.failing[r as usize].swap(true, Ordering::Relaxed) {
            if self.failing_count.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    resource = r.as_str(),
                    error = %crate::error_chain(e),
                    "Kubernetes API unavailable: not ready; serving the last known endpoints and retrying"
                );
            } else {
                tracing::debug!(resource = r.as_str(), error = %e, "watch failing");
            }
        }
    }

    /// `r`'s watch works again.
    pub fn recovered(&self, r: Resource3) {
        if !self.failing(r) {
            return;
        }
        let _l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if self.failing[r as usize].swap(false, Ordering::Relaxed)
            && self.failing_count.fetch_sub(1, Ordering::Relaxed) == 1
        {
            tracing::info!("Kubernetes API available again");
        }
    }
}

type Labels = [(&'static str, &'static str); 1];

/// `pimesh_controller_kube_*` series.
#[derive(Clone, Default)]
pub struct KubeMetrics {
    /// `kube_watch_events_total{resource}`: watcher events (objects listed,
    /// applied, deleted; list markers).
    events: Family<Labels, Counter>,
    /// `kube_watch_errors_total{resource}`: watch and list failures.
    errors: Family<Labels, Counter>,
    /// `kube_objects{resource}`: compact objects held.
    objects: Family<Labels, Gauge>,
    /// `kube_token_reviews_total{result}`: TokenReviews by outcome
    /// (`authenticated`, `invalid_token`, `identity_not_allowed`, `unavailable`).
    reviews: Family<Labels, Counter>,
    /// `kube_trust_roots_published_total`: trust-roots ConfigMap applies.
    pub trust_roots_published: Counter,
    /// `kube_webhook_ca_bundle_updates_total`: writes of the proxy
    /// injector's `caBundle` (see `webhook`).
    pub webhook_ca_bundle_updates: Counter,
    /// `kube_policy_status_writes_total`: policy resources' statuses
    /// written (`policy::status`).
    pub policy_status_writes: Counter,
    /// `kube_policy_status_write_errors_total`: status writes that failed
    /// (retried).
    pub policy_status_write_errors: Counter,
    /// `kube_ready`: 1 when listed and no watch is failing.
    pub ready: Gauge,
}

impl std::fmt::Debug for KubeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeMetrics")
    }
}

impl KubeMetrics {
    /// Registers the series in `reg` (created at zero for every resource).
    pub fn register(reg: &mut Prometheus) -> KubeMetrics {
        let m = KubeMetrics::default();
        let p = "pimesh_controller_kube_";
        reg.register(
            format!("{p}watch_events"),
            "Kubernetes watcher events, by resource",
            m.events.clone(),
        );
        reg.register(
            format!("{p}watch_errors"),
            "Kubernetes watch and list failures, by resource",
            m.errors.clone(),
        );
        reg.register(
            format!("{p}objects"),
            "Kubernetes objects held (compact), by resource",
            m.objects.clone(),
        );
        reg.register(
            format!("{p}token_reviews"),
            "TokenReviews of certify requests, by result",
            m.reviews.clone(),
        );
        reg.register(
            format!("{p}trust_roots_published"),
            "Applies of the trust-roots ConfigMap",
            m.trust_roots_published.clone(),
        );
        reg.register(
            format!("{p}webhook_ca_bundle_updates"),
            "Writes of the proxy injector's caBundle (the trust anchors)",
            m.webhook_ca_bundle_updates.clone(),
        );
        reg.register(
            format!("{p}policy_status_writes"),
            "Status writes of policy resources (server-side apply)",
            m.policy_status_writes.clone(),
        );
        reg.register(
            format!("{p}policy_status_write_errors"),
            "Status writes of policy resources that failed (retried)",
            m.policy_status_write_errors.clone(),
        );
        reg.register(
            format!("{p}ready"),
            "1 when Services, EndpointSlices and Pods are listed and watched",
            m.ready.clone(),
        );
        for r in Resource3::ALL {
            drop(m.events.get_or_create(&[("resource", r.as_str())]));
            drop(m.errors.get_or_create(&[("resource", r.as_str())]));
        }
        m
    }

    /// Counts one watcher event of `resource`.
    pub fn event(&self, resource: &'static str) {
        self.events.get_or_create(&[("resource", resource)]).inc();
    }

    /// Counts one watch failure of `resource`.
    pub fn error(&self, resource: &'static str) {
        self.errors.get_or_create(&[("resource", resource)]).inc();
    }

    /// Counts one TokenReview outcome.
    pub fn review(&self, result: &'static str) {
        self.reviews.get_or_create(&[("result", result)]).inc();
    }

    /// Sets the objects gauges: services, slices, pods.
    pub fn set_objects(&self, counts: [usize; 3]) {
        for (r, n) in Resource3::ALL.iter().zip(counts) {
            self.set_object_count(r.as_str(), n);
        }
    }

    /// Sets the objects gauge of `resource`.
    pub fn set_object_count(&self, resource: &'static str, n: usize) {
        self.objects
            .get_or_create(&[("resource", resource)])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Creates the events and errors series of more watched `resources`
    /// at zero (as [`KubeMetrics::register`] does for discovery's).
    pub fn register_resources(&self, resources: &[&'static str]) {
        for r in resources {
            drop(self.events.get_or_create(&[("resource", *r)]));
            drop(self.errors.get_or_create(&[("resource", *r)]));
        }
    }
}

/// Kubernetes mode at run time: what the listeners need.
pub struct Kube {
    /// The API client (cheap to clone).
    pub client: kube::Client,
    /// The controller's namespace.
    pub namespace: String,
    /// Readiness.
    pub status: std::sync::Arc<Status>,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("namespace", &self.namespace)
            .field("ready", &self.status.ready())
            .finish()
    }
}
