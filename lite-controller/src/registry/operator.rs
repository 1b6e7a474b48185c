//! Changes by operators (`pimesh service add / rm / set`): endpoints
//! without a lease, whole-service removal, and the per-service policy.

use super::model::{
    key, AddEndpoints, EndpointRecord, ServiceInfo, ServiceRecord, SetPolicy, Source,
};
use super::{validate, Error, Registry};
use crate::identity::now_unix;
use pimesh_api::discovery::{Endpoint, ServicePolicy};
use std::net::SocketAddr;

impl Registry {
    /// Adds or replaces operator endpoints (no lease), creating the service
    /// and port if missing; the service after.
    ///
    /// # Errors
    ///
    /// [`Error::KubernetesMode`], [`Error::Invalid`] (nothing stored),
    /// [`Error::Store`].
    pub fn add_endpoints(
        &self,
        namespace: &str,
        name: &str,
        req: &AddEndpoints,
    ) -> Result<ServiceInfo, Error> {
        self.standalone_only("pimesh service add")?;
        validate::label("namespace", namespace)?;
        validate::label("name", name)?;
        validate::port("port", req.port)?;
        for a in &req.endpoints {
            validate::addr("endpoints", *a)?;
        }
        validate::labels(&req.labels)?;
        if req.weight == Some(0) {
            return Err(validate::Invalid {
                field: "weight",
                reason: "must be at least 1".into(),
            }
            .into());
        }
        let k = key(namespace, name);
        let _w = self.lock();
        let before = self.get(&k);
        let mut rec = before
            .clone()
            .unwrap_or_else(|| ServiceRecord::new(namespace, name, now_unix()));
        let mut changed = rec.ports.insert(req.port) || before.is_none();
        for a in &req.endpoints {
            // Replaces what is at (port, addr), registered replicas behind
            // their own proxies included.
            let n = rec.endpoints.len();
            rec.endpoints
                .retain(|e| (e.port, e.addr) != (req.port, *a) || e.proxy_addr.is_none());
            changed |= rec.endpoints.len() != n;
            changed |= rec.upsert(EndpointRecord {
                port: req.port,
                addr: *a,
                proxy_addr: None,
                admin_addr: None,
                tap_addr: None,
                identity: req.identity.clone(),
                weight: req.weight.unwrap_or(Endpoint::DEFAULT_WEIGHT),
                protocol: req.protocol,
                labels: req.labels.clone(),
                source: Source::Operator,
                token_id: None,
            });
        }
        if changed {
            self.commit(&k, before.as_ref(), Some(rec))?;
        }
        self.state_mut().leases.retain(|(lk, port, a, _), _| {
            lk != &k || *port != req.port || !req.endpoints.contains(a)
        });
        self.info_of(&k)
            .ok_or_else(|| Error::NotFound(format!("no service {k}")))
    }

    /// Removes a whole service (no `endpoints`) or the endpoints with these
    /// addresses (any port, any source); the service as it was (whole) or is.
    ///
    /// # Errors
    ///
    /// [`Error::KubernetesMode`], [`Error::NotFound`] for an unknown service or
    /// address, [`Error::Store`].
    pub fn remove(
        &self,
        namespace: &str,
        name: &str,
        endpoints: &[SocketAddr],
    ) -> Result<ServiceInfo, Error> {
        self.standalone_only("pimesh service rm")?;
        let k = key(namespace, name);
        let _w = self.lock();
        let before = self
            .get(&k)
            .ok_or_else(|| Error::NotFound(format!("no service {k}")))?;
        if endpoints.is_empty() {
            let info = self.info(&before, &self.read());
            self.commit(&k, Some(&before), None)?;
            return Ok(info);
        }
        if let Some(a) = endpoints
            .iter()
            .find(|a| !before.endpoints.iter().any(|e| e.addr == **a))
        {
            return Err(Error::NotFound(format!("service {k} has no endpoint {a}")));
        }
        let mut rec = before.clone();
        rec.endpoints.retain(|e| !endpoints.contains(&e.addr));
        self.commit(&k, Some(&before), Some(rec))?;
        self.state_mut()
            .leases
            .retain(|(lk, _, a, _), _| lk != &k || !endpoints.contains(a));
        self.info_of(&k)
            .ok_or_else(|| Error::NotFound(format!("no service {k}")))
    }

    /// Sets a service's policy (see [`SetPolicy`]); the service after.
    ///
    /// # Errors
    ///
    /// [`Error::KubernetesMode`], [`Error::Invalid`], [`Error::NotFound`],
    /// [`Error::Store`].
    pub fn set_policy(
        &self,
        namespace: &str,
        name: &str,
        req: &SetPolicy,
    ) -> Result<ServiceInfo, Error> {
        self.standalone_only("pimesh service set")?;
        validate::policy(&req.policy)?;
        let k = key(namespace, name);
        let _w = self.lock();
        let before = self.get(&k).ok_or_else(|| {
            Error::NotFound(format!(
                "no service {k} (add it with `pimesh service add` or let a proxy register it)"
            ))
        })?;
        let policy = if req.clear {
            req.policy.clone()
        } else {
            merge(&before.policy, &req.policy)
        };
        validate::policy(&policy)?;
        if policy != before.policy {
            let mut rec = before.clone();
            rec.policy = policy;
            self.commit(&k, Some(&before), Some(rec))?;
        }
        self.info_of(&k)
            .ok_or_else(|| Error::NotFound(format!("no service {k}")))
    }
}

/// `base` with every field `set` has replaced.
fn merge(base: &ServicePolicy, set: &ServicePolicy) -> ServicePolicy {
    ServicePolicy {
        timeout_ms: set.timeout_ms.or(base.timeout_ms),
        per_try_timeout_ms: set.per_try_timeout_ms.or(base.per_try_timeout_ms),
        retry_limit: set.retry_limit.or(base.retry_limit),
        retry_http: set.retry_http.clone().or_else(|| base.retry_http.clone()),
        retry_grpc: set.retry_grpc.clone().or_else(|| base.retry_grpc.clone()),
        retry_non_idempotent: set.retry_non_idempotent.or(base.retry_non_idempotent),
        retry_budget_ratio: set.retry_budget_ratio.or(base.retry_budget_ratio),
        retry_budget_min_per_sec: set
            .retry_budget_min_per_sec
            .or(base.retry_budget_min_per_sec),
        failure_accrual_consecutive: set
            .failure_accrual_consecutive
            .or(base.failure_accrual_consecutive),
        failure_accrual_min_backoff_ms: set
            .failure_accrual_min_backoff_ms
            .or(base.failure_accrual_min_backoff_ms),
        failure_accrual_max_backoff_ms: set
            .failure_accrual_max_backoff_ms
            .or(base.failure_accrual_max_backoff_ms),
    }
}
