//! Kubernetes mode's policy resources: the five `policy.pimesh.io` kinds
//! and Gateway API's `HTTPRoute` and `GRPCRoute`
//! (`gateway.networking.k8s.io/v1`) watched with `kube::runtime::watcher`
//! (as Linkerd's policy controller watches `policy.linkerd.io` and the
//! Gateway API routes), kept whole in an [`Index`] and published
//! as a `policy::snapshot::Snapshot` to the proxies' inbound-policy streams,
//! the discovery watches (a Service's routes) and `pimesh policy ls`, as standalone mode's sled store publishes its
//! own. Each resource keeps the API server's `creationTimestamp`, which
//! decides conflicts between Servers.
//!
//! A kind whose CRD is not installed (404) counts as listed and empty:
//! proxies get their default policy, one warning names `pimesh install
//! --crds | kubectl apply -f -` (or, for the routes, Gateway API's CRDs,
//! which are upstream's and often absent: one info line), and the watch
//! probes until the CRD appears (`super::watch`).
//!
//! `status` writes each resource's status back (its `Accepted` condition).

use super::watch::{not_found, Watch};
use super::KubeMetrics;
use crate::policy::grpcroute::GRPCRoute;
use crate::policy::resource::{validate, Resource as Policy, KINDS};
use crate::policy::snapshot::{Publisher, Snapshots};
use crate::policy::{
    AuthorizationPolicy, HTTPLocalRateLimitPolicy, HTTPRoute, MeshTLSAuthentication,
    NetworkAuthentication, Server,
};
use kube::runtime::watcher::Event;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How many kinds are watched: every one of [`KINDS`].
pub const N: usize = KINDS.len();

/// The plural resources, in [`KINDS`]' order (metric label, RBAC).
pub const RESOURCES: [&str; N] = [
    "servers",
    "authorizationpolicies",
    "meshtlsauthentications",
    "networkauthentications",
    "httplocalratelimitpolicies",
    "httproutes",
    "grpcroutes",
];

/// The kinds from [`FIRST_ROUTE`] on are Gateway API's (their CRDs are
/// upstream's, not `pimesh install --crds`').
pub const FIRST_ROUTE: usize = 5;

/// What to run when the CRDs are missing (the warning says it).
pub const INSTALL_CRDS: &str = "pimesh install --crds | kubectl apply -f -";

/// One watcher event, reduced to the resource (`None`: the object does not
/// pass `policy::validate`, and is treated as absent).
#[derive(Debug)]
pub enum Change {
    /// A relist begins.
    Init,
    /// An object of a relist.
    InitApply(String, Option<Policy>),
    /// The relist ended: what it did not list is gone.
    InitDone,
    /// An object appeared or changed.
    Apply(String, Option<Policy>),
    /// An object went away.
    Delete(String),
}

/// The watched resources of every kind; keys are `NS/NAME`.
#[derive(Debug, Default)]
pub struct Index {
    /// By kind, in [`KINDS`]' order.
    objects: [BTreeMap<String, Policy>; N],
    /// A relist's objects so far, by kind: swapped in whole at its end, so
    /// that no stream sees half a list (a Server without its policies).
    relist: [Option<BTreeMap<String, Policy>>; N],
    /// Kinds listed completely at least once, or known not installed:
    /// snapshots are published once every kind is known.
    known: [bool; N],
    /// Kinds whose CRD is not installed (the last list or watch got 404).
    missing: [bool; N],
}

impl Index {
    /// Applies one change of kind `k` (an index into [`KINDS`]); whether
    /// the resources changed.
    pub fn apply(&mut self, k: usize, change: Change) -> bool {
        // `Init` comes before the list request: only what follows proves
        // the CRD is there.
        let was_missing = if matches!(change, Change::Init) {
            false
        } else {
            std::mem::take(&mut self.missing[k])
        };
        match change {
            Change::Init => {
                self.relist[k] = Some(BTreeMap::new());
                false
            }
            Change::InitApply(key, r) => {
                if let (Some(seen), Some(r)) = (&mut self.relist[k], r) {
                    seen.insert(key, r);
                }
                false
            }
            Change::InitDone => {
                let listed = self.relist[k].take().unwrap_or_default();
                let changed = !same(&self.objects[k], &listed) || !self.known[k] || was_missing;
                self.objects[k] = listed;
                self.known[k] = true;
                changed
            }
            Change::Apply(key, Some(r)) => {
                let old = self.objects[k].insert(key, r.clone());
                old.is_none_or(|o| o.to_json() != r.to_json())
            }
            Change::Apply(key, None) | Change::Delete(key) => {
                self.objects[k].remove(&key).is_some()
            }
        }
    }

    /// Kind `k`'s CRD is not installed: it holds nothing; whether that
    /// changed anything.
    pub fn not_installed(&mut self, k: usize) -> bool {
        let changed = !self.objects[k].is_empty() || !self.known[k];
        self.objects[k].clear();
        self.relist[k] = None;
        self.known[k] = true;
        self.missing[k] = true;
        changed
    }

    /// Whether every kind was listed, or is known not installed.
    pub fn all_known(&self) -> bool {
        self.known.iter().all(|k| *k)
    }

    /// Whether any policy.pimesh.io kind's CRD is missing now.
    pub fn any_missing(&self) -> bool {
        self.missing[..FIRST_ROUTE].iter().any(|m| *m)
    }

    /// Whether any Gateway API route kind's CRD is missing now.
    pub fn routes_missing(&self) -> bool {
        self.missing[FIRST_ROUTE..].iter().any(|m| *m)
    }

    /// Every resource held.
    pub fn resources(&self) -> Vec<Policy> {
        self.objects
            .iter()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Resources held, by kind (the `kube_objects` gauge).
    pub fn counts(&self) -> [usize; N] {
        std::array::from_fn(|k| self.objects[k].len())
    }
}

fn same(a: &BTreeMap<String, Policy>, b: &BTreeMap<String, Policy>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, ra), (kb, rb))| ka == kb && ra.to_json() == rb.to_json())
}

/// What the watch loops (one per kind) share.
#[derive(Debug)]
pub struct Shared {
    /// The index (a std mutex: held only while applying one event).
    index: Mutex<Index>,
    /// Where snapshots go.
    publisher: Publisher,
    /// `pimesh_controller_kube_*`.
    metrics: KubeMetrics,
    /// Whether the missing-CRDs warning was logged (once per absence).
    warned_missing: AtomicBool,
    /// Whether the missing Gateway API CRDs were logged (once per absence).
    told_routes_missing: AtomicBool,
}

impl Shared {
    /// Nothing watched yet: readers see revision 0, no resources (every
    /// proxy's default policy).
    pub fn new(metrics: KubeMetrics) -> Shared {
        metrics.register_resources(&RESOURCES);
        Shared {
            index: Mutex::default(),
            publisher: Publisher::default(),
            metrics,
            warned_missing: AtomicBool::new(false),
            told_routes_missing: AtomicBool::new(false),
        }
    }

    /// A reader of the watched resources.
    pub fn snapshots(&self) -> Snapshots {
        self.publisher.snapshots()
    }

    /// Applies `f` to the index, then publishes when it changed something
    /// and every kind is known.
    fn update(&self, f: impl FnOnce(&mut Index) -> bool) {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let was_known = index.all_known();
        let changed = f(&mut index);
        for (r, n) in RESOURCES.iter().zip(index.counts()) {
            self.metrics.set_object_count(r, n);
        }
        if index.any_missing() {
            if !self.warned_missing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "policy CRDs (policy.pimesh.io) not installed: proxies get their default inbound policy; install them with `{INSTALL_CRDS}` (watching for them)"
                );
            }
        } else if self.warned_missing.swap(false, Ordering::Relaxed) {
            tracing::info!("policy CRDs installed: watching them");
        }
        if index.routes_missing() {
            if !self.told_routes_missing.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "Gateway API route CRDs (HTTPRoute, GRPCRoute) not installed: no outbound routes; install Gateway API's standard-install.yaml to use them (watching for them)"
                );
            }
        } else if self.told_routes_missing.swap(false, Ordering::Relaxed) {
            tracing::info!("Gateway API route CRDs installed: watching HTTPRoutes and GRPCRoutes");
        }
        if index.all_known() && (changed || !was_known) {
            let resources = index.resources();
            if !was_known {
                tracing::info!(
                    resources = resources.len(),
                    "policy resources listed; the inbound-policy streams serve them"
                );
            }
            self.publisher.publish(resources);
        }
    }
}

/// Watches every kind until the returned future is dropped (the
/// caller aborts it at shutdown).
pub async fn run(client: Client, shared: Arc<Shared>) {
    tokio::join!(
        watch::<Server>(client.clone(), 0, shared.clone(), Policy::Server),
        watch::<AuthorizationPolicy>(
            client.clone(),
            1,
            shared.clone(),
            Policy::AuthorizationPolicy
        ),
        watch::<MeshTLSAuthentication>(
            client.clone(),
            2,
            shared.clone(),
            Policy::MeshTLSAuthentication
        ),
        watch::<NetworkAuthentication>(
            client.clone(),
            3,
            shared.clone(),
            Policy::NetworkAuthentication
        ),
        watch::<HTTPLocalRateLimitPolicy>(
            client.clone(),
            4,
            shared.clone(),
            Policy::HTTPLocalRateLimitPolicy
        ),
        watch::<HTTPRoute>(client.clone(), 5, shared.clone(), Policy::HTTPRoute),
        watch::<GRPCRoute>(client, 6, shared, Policy::GRPCRoute),
    );
}

/// `NS/NAME` of `obj`.
fn key<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// `obj` as a resource, when it passes the rules the schema cannot say.
fn checked(obj: Policy) -> Option<Policy> {
    match validate(&obj) {
        Ok(()) => Some(obj),
        Err(e) => {
            tracing::warn!(resource = %obj, error = %e, "policy resource not valid; ignored");
            None
        }
    }
}

/// Kind `k`'s watch loop (`Server` is `Server`'s, and so on).
async fn watch<K>(client: Client, k: usize, shared: Arc<Shared>, wrap: fn(K) -> Policy)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let resource = RESOURCES[k];
    let mut stream = Watch::new(Api::<K>::all(client), resource);
    let failing = AtomicBool::new(false);
    loop {
        let Some(item) = stream.next(|| failing.load(Ordering::Relaxed)).await else {
            return;
        };
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                shared.metrics.error(resource);
                let was = failing.swap(true, Ordering::Relaxed);
                if not_found(&e) {
                    shared.update(|i| i.not_installed(k));
                } else if !was {
                    tracing::warn!(resource, kind = KINDS[k], error = %crate::error_chain(&e), "policy watch failing: streams keep the last policy; retrying");
                }
                continue;
            }
        };
        shared.metrics.event(resource);
        // `Init` comes before any request: only objects and the end of a
        // list prove the watch works again.
        if !matches!(event, Event::Init) && failing.swap(false, Ordering::Relaxed) {
            tracing::info!(resource, "policy watch works again");
        }
        let change = match event {
            Event::Init => Change::Init,
            Event::InitApply(obj) => Change::InitApply(key(&obj), checked(wrap(obj))),
            Event::InitDone => Change::InitDone,
            Event::Apply(obj) => Change::Apply(key(&obj), checked(wrap(obj))),
            Event::Delete(obj) => Change::Delete(key(&obj)),
        };
        shared.update(|i| i.apply(k, change));
    }
}

pub mod status;

#[cfg(test)]
mod tests;
