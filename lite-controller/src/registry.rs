//! The discovery role in standalone mode (Linkerd's destination
//! controller): a service registry kept in sled, and the state that watch
//! streams resolve names and addresses against.
//!
//! - `model`: stored records and the operator API's JSON.
//! - `operator`: changes by operators (`pimesh service add/rm/set`).
//! - `validate`: checks of names, addresses, labels and policies.
//! - `watch`: destinations, and the NDJSON watch streams.
//! - `metrics`: `pimesh_controller_*` series of the role.
//!
//! One record per service (`services` table, key `NAMESPACE/NAME`) holds
//! its ports, policy and endpoints, so every change is one flushed write.
//! The registry **revision** is a counter bumped by every change; each
//! service record carries the revision of its last change, and the
//! `registry` table keeps the counter across deletions, so after a restart
//! the revision is the maximum of both and never goes backwards.
//!
//! Leases live in memory only: a registration or renewal sets the
//! endpoint's deadline to now + TTL (a renewal that changes nothing writes
//! nothing), an expired endpoint is removed by [`Registry::expire`], and at
//! start every registered endpoint gets a fresh TTL, since proxies could
//! not renew while the controller was down.
//!
//! [`Registry`] is synchronous (writes flush): the servers call mutations
//! from `spawn_blocking`; reads ([`Registry::resolve`],
//! [`Registry::endpoints`]) only take a read lock and are cheap.

pub mod metrics;
pub mod model;
mod operator;
pub mod validate;
pub mod watch;

use crate::identity::now_unix;
use crate::store::{self, Store, Table};
use model::{key, EndpointInfo, EndpointRecord, LiveEndpoint, ServiceInfo, ServiceRecord, Source};
use pimesh_api::discovery::{Endpoint, Lease, Registration};
use pimesh_api::identity::Identity;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Key of the revision counter in the `registry` table.
const REVISION_KEY: &str = "revision";

/// A registry operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value was refused (HTTP 400 `bad_request`).
    #[error("invalid {0}")]
    Invalid(#[from] validate::Invalid),
    /// No such service or endpoint (HTTP 404 `not_found`).
    #[error("{0}")]
    NotFound(String),
    /// A proxy tried to deregister an endpoint another identity registered
    /// (HTTP 403 `identity_not_allowed`).
    #[error("the endpoint was registered by another identity")]
    NotOwner,
    /// A standalone-only change (registration, `pimesh service add/rm/set`)
    /// in Kubernetes mode (HTTP 409 `kubernetes_mode`).
    #[error("Kubernetes mode discovers endpoints from EndpointSlices; {0} is for standalone mode")]
    KubernetesMode(&'static str),
    /// A proxy registered an endpoint (port, address and proxy address)
    /// that another identity's proxy holds (HTTP 409 `endpoint_conflict`).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("registry database")]
    Store(#[from] store::Error),
}

impl Error {
    /// The `ApiError` code (also a metric label).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "bad_request",
            Error::NotFound(_) => "not_found",
            Error::NotOwner => "identity_not_allowed",
            Error::KubernetesMode(_) => "kubernetes_mode",
            Error::Conflict(_) => "endpoint_conflict",
            Error::Store(_) => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid(_) => 400,
            Error::NotFound(_) => 404,
            Error::NotOwner => 403,
            Error::KubernetesMode(_) | Error::Conflict(_) => 409,
            Error::Store(_) => 500,
        }
    }
}

/// A registered endpoint's lease: (service key, port, addr, proxy_addr).
type LeaseKey = (String, u16, SocketAddr, Option<SocketAddr>);

/// What readers see; replaced piecewise under the write lock.
#[derive(Debug, Default)]
struct State {
    /// Every service by key, as stored.
    services: BTreeMap<String, ServiceRecord>,
    /// Lease deadlines of registered endpoints (monotonic clock: a board's
    /// wall clock may jump at boot).
    leases: HashMap<LeaseKey, Instant>,
    /// The registry revision.
    revision: u64,
    /// Revision of the last change of any endpoint address, which is what
    /// `?addr=` watches depend on (in memory: the current revision at start).
    addr_revision: u64,
}

/// The standalone service registry.
pub struct Registry {
    table: Table<ServiceRecord>,
    meta: Table<u64>,
    state: RwLock<State>,
    /// Serialises mutations (read-modify-write of one record, then the commit).
    write: Mutex<()>,
    lease_ttl: Duration,
    cluster_domain: String,
    /// Kubernetes mode: services come from [`Registry::set_kubernetes_service`]
    /// (in memory); the standalone changes answer [`Error::KubernetesMode`].
    kubernetes: bool,
    /// The revision, announced after every change (watches re-resolve).
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("revision", &self.revision())
            .finish()
    }
}

impl Registry {
    /// Loads the registry from `store`; every registered endpoint gets a
    /// lease of `lease_ttl` from `now`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the tables cannot be opened or read.
    pub fn open(
        store: &Store,
        lease_ttl: Duration,
        cluster_domain: &str,
        now: Instant,
    ) -> Result<Registry, Error> {
        let table: Table<ServiceRecord> = store.table("services")?;
        let meta: Table<u64> = store.table("registry")?;
        let mut state = State {
            revision: meta.get(REVISION_KEY)?.unwrap_or(0),
            ..State::default()
        };
        for (k, rec) in table.all()? {
            state.revision = state.revision.max(rec.revision);
            for e in rec
                .endpoints
                .iter()
                .filter(|e| e.source == Source::Registered)
            {
                state
                    .leases
                    .insert((k.clone(), e.port, e.addr, e.proxy_addr), now + lease_ttl);
            }
            state.services.insert(k, rec);
        }
        state.addr_revision = state.revision;
        let (changes, _) = tokio::sync::watch::channel(state.revision);
        Ok(Registry {
            table,
            meta,
            state: RwLock::new(state),
            write: Mutex::new(()),
            lease_ttl,
            cluster_domain: cluster_domain.to_string(),
            kubernetes: false,
            changes,
        })
    }

    /// The registry of Kubernetes mode: empty, in memory, filled by the
    /// Kubernetes watchers through [`Registry::set_kubernetes_service`];
    /// what standalone mode stored in `store` is neither read nor changed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the tables cannot be opened.
    pub fn kubernetes(store: &Store, cluster_domain: &str) -> Result<Registry, Error> {
        let (changes, _) = tokio::sync::watch::channel(0);
        Ok(Registry {
            table: store.table("services")?,
            meta: store.table("registry")?,
            state: RwLock::new(State::default()),
            write: Mutex::new(()),
            lease_ttl: Duration::from_secs(pimesh_api::discovery::DEFAULT_LEASE_TTL_SECS),
            cluster_domain: cluster_domain.to_string(),
            kubernetes: true,
            changes,
        })
    }

    /// Whether this is the Kubernetes mode's registry.
    pub fn is_kubernetes(&self) -> bool {
        self.kubernetes
    }

    /// [`Error::KubernetesMode`] in Kubernetes mode: `what` is standalone only.
    ///
    /// # Errors
    ///
    /// [`Error::KubernetesMode`] naming `what`, in Kubernetes mode.
    pub fn standalone_only(&self, what: &'static str) -> Result<(), Error> {
        if self.kubernetes {
            return Err(Error::KubernetesMode(what));
        }
        Ok(())
    }

    /// Kubernetes mode: replaces the service `key` (`NS/NAME`) by `record`
    /// (removes it when `None`) in memory, without writing the database.
    /// The revision is bumped and watches notified only when the record
    /// changed (its `revision` and `created_unix` are not compared); the
    /// new revision then.
    pub fn set_kubernetes_service(&self, key: &str, record: Option<ServiceRecord>) -> Option<u64> {
        let _w = self.lock();
        let mut st = self.state_mut();
        let before = st.services.get(key);
        let record = record.map(|mut r| {
            if let Some(b) = before {
                r.revision = b.revision;
                r.created_unix = b.created_unix;
            }
            r
        });
        if before == record.as_ref() {
            return None;
        }
        let addrs = |r: &ServiceRecord| {
            let eps: Vec<_> = r
                .endpoints
                .iter()
                .map(|e| (e.port, e.addr, e.proxy_addr))
                .collect();
            (eps, r.cluster_ips.clone(), r.ports.clone())
        };
        let addr_changed = before.map(addrs) != record.as_ref().map(addrs);
        let rev = st.revision + 1;
        match record {
            Some(mut r) => {
                r.revision = rev;
                st.services.insert(key.to_string(), r);
            }
            None => {
                st.services.remove(key);
            }
        }
        st.revision = rev;
        if addr_changed {
            st.addr_revision = rev;
        }
        drop(st);
        self.changes.send_replace(rev);
        Some(rev)
    }

    /// The lease TTL granted to registrations.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// The cluster DNS domain of fully-qualified names.
    pub fn cluster_domain(&self) -> &str {
        &self.cluster_domain
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// Notified with the new revision after every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Registers (or renews) a proxy's endpoint as `identity` (the join
    /// token's, whose id is `token_id`), in the identity's namespace; creates
    /// the service and port if missing. Whether the token allows the service
    /// is the caller's check. Endpoints are keyed by (port, addr,
    /// proxy_addr): replicas sharing a host's address, each behind its own
    /// proxy, are one endpoint each.
    ///
    /// # Errors
    ///
    /// [`Error::KubernetesMode`]; [`Error::Invalid`] (nothing stored);
    /// [`Error::Conflict`] when another identity's proxy registered the same
    /// (port, addr, proxy_addr); [`Error::Store`].
    pub fn register(
        &self,
        reg: &Registration,
        identity: &Identity,
        token_id: &str,
        now: Instant,
    ) -> Result<Lease, Error> {
        self.standalone_only("endpoint registration")?;
        validate::label("service", &reg.service)?;
        validate::port("port", reg.port)?;
        validate::addr("addr", reg.addr)?;
        if let Some(a) = reg.proxy_addr {
            validate::addr("proxy_addr", a)?;
        }
        if let Some(a) = reg.admin_addr {
            validate::addr("admin_addr", a)?;
        }
        if let Some(a) = reg.tap_addr {
            validate::addr("tap_addr", a)?;
        }
        validate::labels(&reg.labels)?;
        let ns = identity.namespace();
        let k = key(ns, &reg.service);
        let ep = EndpointRecord {
            port: reg.port,
            addr: reg.addr,
            proxy_addr: reg.proxy_addr,
            admin_addr: reg.admin_addr,
            tap_addr: reg.tap_addr,
            identity: Some(identity.clone()),
            weight: Endpoint::DEFAULT_WEIGHT,
            protocol: reg.protocol,
            labels: reg.labels.clone(),
            source: Source::Registered,
            token_id: Some(token_id.to_string()),
        };
        let _w = self.lock();
        let before = self.get(&k);
        let held = before
            .as_ref()
            .and_then(|b| b.endpoint(reg.port, reg.addr, reg.proxy_addr))
            .filter(|e| e.source == Source::Registered && e.identity.as_ref() != Some(identity));
        if let Some(e) = held {
            let holder = e.identity.as_ref().map_or("?".into(), |i| i.to_string());
            let via = reg
                .proxy_addr
                .map_or_else(String::new, |p| format!(" via proxy {p}"));
            return Err(Error::Conflict(format!(
                "{}:{} endpoint {}{via} is registered by {holder} (token {}); \
                 it can be registered again when that proxy deregisters or its lease runs out",
                reg.service,
                reg.port,
                reg.addr,
                e.token_id.as_deref().unwrap_or("-"),
            )));
        }
        let mut rec = before
            .clone()
            .unwrap_or_else(|| ServiceRecord::new(ns, &reg.service, now_unix()));
        let revision = if rec.upsert(ep) {
            self.commit(&k, before.as_ref(), Some(rec))?
        } else {
            self.revision()
        };
        self.state_mut().leases.insert(
            (k, reg.port, reg.addr, reg.proxy_addr),
            now + self.lease_ttl,
        );
        Ok(Lease {
            ttl_secs: self.lease_ttl.as_secs(),
            revision,
        })
    }

    /// Removes a proxy's registered endpoint, the one at (port, addr,
    /// proxy_addr) (idempotent: an unknown one is fine); the revision after.
    ///
    /// # Errors
    ///
    /// [`Error::KubernetesMode`]; [`Error::Invalid`]; [`Error::NotOwner`] when
    /// another identity registered it; [`Error::Store`].
    pub fn deregister(&self, reg: &Registration, identity: &Identity) -> Result<u64, Error> {
        self.standalone_only("endpoint registration")?;
        validate::label("service", &reg.service)?;
        let k = key(identity.namespace(), &reg.service);
        let _w = self.lock();
        let Some(before) = self.get(&k) else {
            return Ok(self.revision());
        };
        match before.endpoint(reg.port, reg.addr, reg.proxy_addr) {
            Some(e) if e.source == Source::Registered => {
                if e.identity.as_ref() != Some(identity) {
                    return Err(Error::NotOwner);
                }
            }
            _ => return Ok(self.revision()),
        }
        let mut rec = before.clone();
        let id = (reg.port, reg.addr, reg.proxy_addr);
        rec.endpoints
            .retain(|e| (e.port, e.addr, e.proxy_addr) != id);
        let rev = self.commit(&k, Some(&before), Some(rec))?;
        self.state_mut()
            .leases
            .remove(&(k, reg.port, reg.addr, reg.proxy_addr));
        Ok(rev)
    }

    /// Drops every registered endpoint whose lease ran out by `now`; how many.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when a change cannot be written; the endpoints dropped
    /// before stay dropped, the rest at the next call.
    pub fn expire(&self, now: Instant) -> Result<usize, Error> {
        let _w = self.lock();
        type Id = (u16, SocketAddr, Option<SocketAddr>);
        let mut expired: BTreeMap<String, Vec<Id>> = BTreeMap::new();
        for ((k, port, addr, proxy), deadline) in &self.read().leases {
            if *deadline <= now {
                expired
                    .entry(k.clone())
                    .or_default()
                    .push((*port, *addr, *proxy));
            }
        }
        let mut count = 0;
        for (k, eps) in expired {
            if let Some(before) = self.get(&k) {
                let mut rec = before.clone();
                rec.endpoints.retain(|e| {
                    !(e.source == Source::Registered
                        && eps.contains(&(e.port, e.addr, e.proxy_addr)))
                });
                let n = before.endpoints.len() - rec.endpoints.len();
                if n > 0 {
                    self.commit(&k, Some(&before), Some(rec))?;
                    count += n;
                    tracing::info!(service = %k, endpoints = ?eps, "leases expired");
                }
            }
            let mut st = self.state_mut();
            for (port, addr, proxy) in eps {
                st.leases.remove(&(k.clone(), port, addr, proxy));
            }
        }
        Ok(count)
    }

    /// Every service (of `namespace` if given), in key order.
    pub fn services(&self, namespace: Option<&str>) -> Vec<ServiceInfo> {
        let st = self.read();
        st.services
            .values()
            .filter(|s| namespace.is_none_or(|ns| s.namespace == ns))
            .map(|s| self.info(s, &st))
            .collect()
    }

    /// One service.
    pub fn service(&self, namespace: &str, name: &str) -> Option<ServiceInfo> {
        self.info_of(&key(namespace, name))
    }

    /// Whether service `namespace/name` is here with `port` (`None`: any
    /// port): what an `HTTPRoute`'s parent or backend must be.
    pub fn has_service(&self, namespace: &str, name: &str, port: Option<u16>) -> bool {
        self.service(namespace, name)
            .is_some_and(|s| port.is_none_or(|p| s.ports.contains(&p)))
    }

    /// Every endpoint in the registry (all services, all ports, registered
    /// and operator), with its service: what the telemetry role scrapes
    /// (`endpoint.admin_addr`) and labels its series with. Cheap: one read
    /// lock and clones.
    pub fn endpoints(&self) -> Vec<LiveEndpoint> {
        let st = self.read();
        st.services
            .values()
            .flat_map(|s| {
                s.endpoints.iter().map(move |e| LiveEndpoint {
                    service: s.name.clone(),
                    namespace: s.namespace.clone(),
                    port: e.port,
                    endpoint: s.api_endpoint(e),
                    source: e.source,
                })
            })
            .collect()
    }

    /// (services, registered endpoints, operator endpoints, Kubernetes
    /// endpoints), for gauges.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let st = self.read();
        let (mut reg, mut op, mut kube) = (0, 0, 0);
        for e in st.services.values().flat_map(|s| &s.endpoints) {
            match e.source {
                Source::Registered => reg += 1,
                Source::Operator => op += 1,
                Source::Kubernetes => kube += 1,
            }
        }
        (st.services.len(), reg, op, kube)
    }

    /// Stores `after` (or removes the service when `None`) with the next
    /// revision, then publishes it. Called with the write lock held.
    fn commit(
        &self,
        k: &str,
        before: Option<&ServiceRecord>,
        after: Option<ServiceRecord>,
    ) -> Result<u64, Error> {
        let rev = self.revision() + 1;
        let addrs = |r: &ServiceRecord| -> Vec<(u16, SocketAddr, Option<SocketAddr>)> {
            r.endpoints
                .iter()
                .map(|e| (e.port, e.addr, e.proxy_addr))
                .collect()
        };
        let addr_changed = match &after {
            Some(rec) => before.map(addrs) != Some(addrs(rec)),
            None => true,
        };
        match after {
            Some(mut rec) => {
                rec.revision = rev;
                self.table.put(k, &rec)?;
                self.state_mut().services.insert(k.to_string(), rec);
            }
            None => {
                // The counter first: the removed record no longer carries it.
                self.meta.put(REVISION_KEY, &rev)?;
                self.table.remove(k)?;
                let mut st = self.state_mut();
                st.services.remove(k);
                st.leases.retain(|(lk, _, _, _), _| lk != k);
            }
        }
        let mut st = self.state_mut();
        st.revision = rev;
        if addr_changed {
            st.addr_revision = rev;
        }
        drop(st);
        self.changes.send_replace(rev);
        Ok(rev)
    }

    fn info_of(&self, k: &str) -> Option<ServiceInfo> {
        let st = self.read();
        st.services.get(k).map(|s| self.info(s, &st))
    }

    fn info(&self, s: &ServiceRecord, st: &State) -> ServiceInfo {
        let (now, now_unix) = (Instant::now(), now_unix());
        ServiceInfo {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            fqdn: s.service_name().fqdn(&self.cluster_domain),
            ports: s.ports.iter().copied().collect(),
            revision: s.revision,
            policy: s.policy.clone(),
            endpoints: s
                .endpoints
                .iter()
                .map(|e| EndpointInfo {
                    port: e.port,
                    endpoint: s.api_endpoint(e),
                    source: e.source,
                    lease_expires_unix: st
                        .leases
                        .get(&(s.key(), e.port, e.addr, e.proxy_addr))
                        .map(|d| now_unix + d.saturating_duration_since(now).as_secs()),
                })
                .collect(),
        }
    }

    fn get(&self, k: &str) -> Option<ServiceRecord> {
        self.read().services.get(k).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
