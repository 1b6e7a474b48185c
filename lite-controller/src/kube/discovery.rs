//! Discovery from Kubernetes (Linkerd's destination): Services,
//! EndpointSlices and Pods watched with `kube::runtime::watcher`, kept as
//! compact copies in an [`Index`], and mapped onto the registry's service
//! records (`Registry::set_kubernetes_service`), so the proxies' watch API
//! answers as in standalone mode. Each event recomputes only the services
//! it touches: a Service itself, a slice's Service, a pod's Services
//! (through the slices whose endpoints name it).

use super::objects::{
    in_ranges, key, PodLite, ServiceLite, SliceLite, PROXY_ADMIN_PORT, PROXY_TAP_PORT,
};
use super::wire::{EndpointSlice, Pod, Service};
use super::{KubeMetrics, Resource3, Status};
use crate::registry::model::{EndpointRecord, ServiceRecord, Source};
use crate::registry::Registry;
use kube::runtime::watcher::Event;
use kube::{Api, Client, Resource};
use pimesh_api::discovery::{Endpoint, ProtocolHint};
use pimesh_api::identity::Identity;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Everything discovery knows, compact; keys are `NS/NAME`.
#[derive(Debug, Default)]
pub struct Index {
    services: HashMap<String, ServiceLite>,
    slices: HashMap<String, SliceLite>,
    /// Service key → its slices' keys.
    slices_by_service: HashMap<String, BTreeSet<String>>,
    pods: HashMap<String, PodLite>,
    /// Pod key → keys of the slices whose endpoints name it (`targetRef`).
    slices_by_pod: HashMap<String, BTreeSet<String>>,
    /// Keys seen since the last relist began, per resource (`None` outside
    /// a relist): what is not seen again is deleted at its end.
    relist: [Option<HashSet<String>>; 3],
}

impl Index {
    /// Services, slices, pods held (the `kube_objects` gauge).
    pub fn counts(&self) -> [usize; 3] {
        [self.services.len(), self.slices.len(), self.pods.len()]
    }

    /// A Service appeared or changed (`None`: it cannot be discovered,
    /// e.g. ExternalName, and is dropped); the affected service keys.
    pub fn apply_service(&mut self, k: String, svc: Option<ServiceLite>) -> Vec<String> {
        match svc {
            Some(s) => {
                if self.services.get(&k) == Some(&s) {
                    return Vec::new();
                }
                self.services.insert(k.clone(), s);
            }
            None => {
                self.services.remove(&k);
            }
        }
        vec![k]
    }

    /// A slice appeared, changed (`Some`) or went away (`None`); the
    /// affected service keys.
    pub fn apply_slice(&mut self, k: String, slice: Option<SliceLite>) -> Vec<String> {
        let old = match &slice {
            Some(s) => self.slices.insert(k.clone(), s.clone()),
            None => self.slices.remove(&k),
        };
        if old.as_ref() == slice.as_ref() {
            return Vec::new();
        }
        let mut affected = Vec::new();
        if let Some(old) = old {
            if let Some(svc) = old.service_key() {
                if let Some(set) = self.slices_by_service.get_mut(&svc) {
                    set.remove(&k);
                    if set.is_empty() {
                        self.slices_by_service.remove(&svc);
                    }
                }
                affected.push(svc);
            }
            for pod in old.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
                let pk = key(&old.namespace, pod);
                if let Some(set) = self.slices_by_pod.get_mut(&pk) {
                    set.remove(&k);
                    if set.is_empty() {
                        self.slices_by_pod.remove(&pk);
                    }
                }
            }
        }
        if let Some(new) = slice {
            if let Some(svc) = new.service_key() {
                self.slices_by_service
                    .entry(svc.clone())
                    .or_default()
                    .insert(k.clone());
                if !affected.contains(&svc) {
                    affected.push(svc);
                }
            }
            for pod in new.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
                self.slices_by_pod
                    .entry(key(&new.namespace, pod))
                    .or_default()
                    .insert(k.clone());
            }
        }
        affected
    }

    /// A pod appeared, changed or went away; the affected service keys
    /// (none when nothing discovery keeps of it changed).
    pub fn apply_pod(&mut self, k: String, pod: Option<PodLite>) -> Vec<String> {
        let old = match pod {
            Some(p) => self.pods.insert(k.clone(), p),
            None => self.pods.remove(&k),
        };
        if old.as_ref() == self.pods.get(&k) {
            return Vec::new();
        }
        let mut affected: Vec<String> = self
            .slices_by_pod
            .get(&k)
            .into_iter()
            .flatten()
            .filter_map(|s| self.slices.get(s).and_then(SliceLite::service_key))
            .collect();
        affected.sort();
        affected.dedup();
        affected
    }

    /// The registry record of service `k` now; `None` when the Service is
    /// unknown (or cannot be discovered).
    pub fn record(&self, k: &str) -> Option<ServiceRecord> {
        let svc = self.services.get(k)?;
        let slices = self
            .slices_by_service
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|s| self.slices.get(s));
        Some(service_record(svc, slices, |name| {
            self.pods.get(&key(&svc.namespace, name))
        }))
    }

    /// A relist of `r` begins: remember what it lists.
    pub fn relist_begin(&mut self, r: Resource3) {
        self.relist[r as usize] = Some(HashSet::new());
    }

    /// `k` was listed during a relist of `r`.
    pub fn relist_seen(&mut self, r: Resource3, k: &str) {
        if let Some(seen) = &mut self.relist[r as usize] {
            seen.insert(k.to_string());
        }
    }

    /// A relist of `r` ended: drops the objects it did not list; the
    /// affected service keys.
    pub fn relist_end(&mut self, r: Resource3) -> Vec<String> {
        let Some(seen) = self.relist[r as usize].take() else {
            return Vec::new();
        };
        let unseen = |keys: &mut dyn Iterator<Item = &String>| -> Vec<String> {
            keys.filter(|k| !seen.contains(*k)).cloned().collect()
        };
        let gone = match r {
            Resource3::Services => unseen(&mut self.services.keys()),
            Resource3::EndpointSlices => unseen(&mut self.slices.keys()),
            Resource3::Pods => unseen(&mut self.pods.keys()),
        };
        let mut affected = Vec::new();
        for k in gone {
            affected.extend(match r {
                Resource3::Services => self.apply_service(k, None),
                Resource3::EndpointSlices => self.apply_slice(k, None),
                Resource3::Pods => self.apply_pod(k, None),
            });
        }
        affected
    }
}

/// Maps a Service, its slices and their pods (`pod(name)`, in the
/// Service's namespace) onto a registry record: the record's ports are the
/// Service's TCP ports; each ready slice endpoint × the slice port named
/// as the Service port gives an endpoint `podIP:targetPort`, weight
/// 10000. Meshed pods ([`super::objects::MESHED_LABEL`]) carry the
/// identity `NS/SERVICEACCOUNT` and their proxy's admin (4191) and tap
/// (4190) addresses; labels `pod`, `serviceaccount` and the owner's
/// (`deployment`, ...) as Linkerd's destination gives them (the registry
/// adds `namespace` and `service`). Opaque ports (Service port, or pod
/// target port) give [`ProtocolHint::Opaque`].
pub fn service_record<'a>(
    svc: &ServiceLite,
    slices: impl Iterator<Item = &'a SliceLite>,
    pod: impl Fn(&str) -> Option<&'a PodLite>,
) -> ServiceRecord {
    let mut rec = ServiceRecord::new(&svc.namespace, &svc.name, 0);
    rec.cluster_ips = svc.cluster_ips.clone();
    rec.ports = svc.ports.iter().map(|p| p.port).collect();
    let slices: Vec<&SliceLite> = slices.collect();
    for sp in &svc.ports {
        for slice in &slices {
            for (_, target) in slice.ports.iter().filter(|(name, _)| *name == sp.name) {
                for e in &slice.endpoints {
                    let p = e.pod.as_deref().and_then(&pod);
                    let meshed = p.filter(|p| p.meshed);
                    let identity =
                        meshed.and_then(|p| Identity::new(&svc.namespace, &p.service_account).ok());
                    let proxy_ip = meshed.map(|p| p.ip.unwrap_or(e.ip));
                    let mut labels = BTreeMap::new();
                    if let Some(p) = p {
                        labels.insert("pod".to_string(), p.name.clone());
                        labels.insert("serviceaccount".to_string(), p.service_account.clone());
                        if let Some((kind, name)) = &p.owner {
                            labels.insert(kind.to_string(), name.clone());
                        }
                    }
                    let opaque = in_ranges(&svc.opaque, sp.port)
                        || p.is_some_and(|p| in_ranges(&p.opaque, *target));
                    rec.upsert(EndpointRecord {
                        port: sp.port,
                        addr: SocketAddr::new(e.ip, *target),
                        proxy_addr: None,
                        admin_addr: proxy_ip.map(|ip| SocketAddr::new(ip, PROXY_ADMIN_PORT)),
                        tap_addr: proxy_ip.map(|ip| SocketAddr::new(ip, PROXY_TAP_PORT)),
                        identity,
                        weight: Endpoint::DEFAULT_WEIGHT,
                        protocol: if opaque {
                            ProtocolHint::Opaque
                        } else {
                            ProtocolHint::Unknown
                        },
                        labels,
                        source: Source::Kubernetes,
                        token_id: None,
                    });
                }
            }
        }
    }
    rec
}

/// What the three watch loops share.
pub struct Shared {
    /// The index (a std mutex: held only while applying one event).
    pub index: Mutex<Index>,
    /// Where the records go.
    pub registry: Arc<Registry>,
    /// Readiness and outage logging.
    pub status: Arc<Status>,
    /// `pimesh_controller_kube_*`.
    pub metrics: KubeMetrics,
    /// Set once all three resources were listed: records are published
    /// only from then on, so that no proxy sees a meshed pod's endpoint
    /// without its identity (pods listed after its slice) and dials it in
    /// plaintext.
    pub synced: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Shared state for the watch loops.
    pub fn new(registry: Arc<Registry>, status: Arc<Status>, metrics: KubeMetrics) -> Shared {
        Shared {
            index: Mutex::default(),
            registry,
            status,
            metrics,
            synced: Default::default(),
        }
    }

    fn publish(&self, index: &Index, affected: Vec<String>) {
        use std::sync::atomic::Ordering;
        let affected = if self.synced.load(Ordering::Relaxed) {
            affected
        } else if self.status.all_listed() {
            self.synced.store(true, Ordering::Relaxed);
            tracing::info!(
                services = index.services.len(),
                endpointslices = index.slices.len(),
                pods = index.pods.len(),
                "Kubernetes resources listed; discovery serves them"
            );
            index.services.keys().cloned().collect()
        } else {
            Vec::new()
        };
        for k in affected {
            self.registry.set_kubernetes_service(&k, index.record(&k));
        }
        self.metrics.set_objects(index.counts());
    }
}

/// Watches Services, EndpointSlices and Pods until the returned futures
/// are dropped (the caller aborts them at shutdown).
pub async fn run(client: Client, shared: Arc<Shared>) {
    let services = watch::<Service, _>(client.clone(), Resource3::Services, shared.clone(), |s| {
        ServiceLite::from_object(s).map(Lite::Service)
    });
    let slices = watch::<EndpointSlice, _>(
        client.clone(),
        Resource3::EndpointSlices,
        shared.clone(),
        |s| SliceLite::from_object(s).map(Lite::Slice),
    );
    let pods = watch::<Pod, _>(client, Resource3::Pods, shared, |p| {
        PodLite::from_object(p).map(Lite::Pod)
    });
    tokio::join!(services, slices, pods);
}

/// A converted object.
enum Lite {
    Service(ServiceLite),
    Slice(SliceLite),
    Pod(PodLite),
}

/// One resource's watch loop: applies events to the index, publishes the
/// affected services, keeps the resource's readiness; while the watch
/// fails, `super::watch::Watch` probes the API server and relists as soon
/// as it answers, so recovery does not wait for the watcher's backoff.
async fn watch<K, F>(client: Client, r: Resource3, shared: Arc<Shared>, convert: F)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Fn(&K) -> Option<Lite>,
{
    let resource = r.as_str();
    let mut stream = super::watch::Watch::new(Api::<K>::all(client), resource);
    let apply = |obj: &K, delete: bool, index: &mut Index| -> Vec<String> {
        let meta = obj.meta();
        let k = key(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        let lite = if delete { None } else { convert(obj) };
        match r {
            Resource3::Services => index.apply_service(
                k,
                lite.and_then(|l| match l {
                    Lite::Service(s) => Some(s),
                    _ => None,
                }),
            ),
            Resource3::EndpointSlices => index.apply_slice(
                k,
                lite.and_then(|l| match l {
                    Lite::Slice(s) => Some(s),
                    _ => None,
                }),
            ),
            Resource3::Pods => index.apply_pod(
                k,
                lite.and_then(|l| match l {
                    Lite::Pod(p) => Some(p),
                    _ => None,
                }),
            ),
        }
    };
    loop {
        let Some(item) = stream.next(|| shared.status.failing(r)).await else {
            return;
        };
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                shared.metrics.error(resource);
                shared.status.failed(r, &e);
                continue;
            }
        };
        shared.metrics.event(resource);
        // `Init` comes before any request: only objects and the end of a
        // list prove the watch works again.
        if !matches!(event, Event::Init) {
            shared.status.recovered(r);
        }
        let mut index = shared.index.lock().unwrap_or_else(|e| e.into_inner());
        let affected = match &event {
            Event::Init => {
                index.relist_begin(r);
                Vec::new()
            }
            Event::InitApply(obj) => {
                let meta = obj.meta();
                index.relist_seen(
                    r,
                    &key(
                        meta.namespace.as_deref().unwrap_or_default(),
                        meta.name.as_deref().unwrap_or_default(),
                    ),
                );
                apply(obj, false, &mut index)
            }
            Event::InitDone => {
                let affected = index.relist_end(r);
                shared.status.listed(r);
                affected
            }
            Event::Apply(obj) => apply(obj, false, &mut index),
            Event::Delete(obj) => apply(obj, true, &mut index),
        };
        shared.publish(&index, affected);
    }
}

#[cfg(test)]
mod tests;
