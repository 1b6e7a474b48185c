//! Standalone mode's policy resources, kept in the controller's sled
//! database (tree `policies`, one JSON document per resource under
//! `NAMESPACE/KIND/NAME`): `pimesh apply -f` / `pimesh delete -f` /
//! `pimesh policy ls` through the operator API (`admin/policies.rs`).
//! Every change is published ([`Policies::snapshots`]) to the proxies'
//! inbound-policy streams. A resource keeps the `creationTimestamp` of its
//! first apply (set here, as the API server sets it), which decides
//! conflicts between Servers.

use super::index::{statuses, PolicyStatus};
use super::resource::Resource;
pub use super::snapshot::Snapshot;
use super::snapshot::{Publisher, Snapshots};
use super::validate::Invalid;
use crate::store::{self, Store, Table};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The namespace of a resource that names none (as kubectl's).
pub const DEFAULT_NAMESPACE: &str = "default";

/// What [`Policies::apply`] did (kubectl's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    /// It was not stored before.
    Created,
    /// It replaced a different version.
    Configured,
    /// The same was stored already.
    Unchanged,
}

/// Why [`Policies::apply`] refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The resource breaks a rule (its field named).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The database could not be read or written.
    #[error("the policy store failed")]
    Store(#[from] store::Error),
}

/// The stored policy resources.
pub struct Policies {
    /// Documents as [`Resource::to_json`] gives them.
    table: Table<serde_json::Value>,
    /// Publishes every change (revision 1 at start), for the proxies'
    /// streams.
    changes: Publisher,
}

fn key(kind: &str, ns: &str, name: &str) -> String {
    format!("{ns}/{kind}/{name}")
}

impl Policies {
    /// The `policies` tree of `store`.
    ///
    /// # Errors
    ///
    /// [`store::Error`] when sled cannot open the tree.
    pub fn open(store: &Store) -> Result<Policies, store::Error> {
        let policies = Policies {
            table: store.table("policies")?,
            changes: Publisher::default(),
        };
        policies.publish()?;
        Ok(policies)
    }

    /// The latest resources, and every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.changes.snapshots().subscribe()
    }

    /// A reader of the stored resources (the source of standalone mode's
    /// streams).
    pub fn snapshots(&self) -> Snapshots {
        self.changes.snapshots()
    }

    /// Reads every resource again and publishes them under a new revision.
    fn publish(&self) -> Result<(), store::Error> {
        self.changes.publish(self.resources()?);
        Ok(())
    }

    /// Validates `doc` ([`Resource::parse`]; no namespace means
    /// [`DEFAULT_NAMESPACE`]) and stores it, durably.
    ///
    /// # Errors
    ///
    /// [`ApplyError::Invalid`] naming the field; [`ApplyError::Store`].
    pub fn apply(&self, mut doc: serde_json::Value) -> Result<(Resource, Applied), ApplyError> {
        if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.entry("namespace")
                .or_insert_with(|| DEFAULT_NAMESPACE.into());
        }
        let r = Resource::parse(doc)?;
        let k = key(r.kind(), r.namespace().unwrap_or_default(), r.name());
        let old = self.table.get(&k)?;
        // The first apply's time, kept by every later one (a client's own
        // value is ignored, as the API server ignores it).
        let created = old
            .as_ref()
            .map(|o| o["metadata"]["creationTimestamp"].clone())
            .filter(|t| t.is_string())
            .unwrap_or_else(|| {
                let now =
                    k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second);
                serde_json::Value::String(now.map_or_else(|_| String::new(), |t| t.to_string()))
            });
        let mut json = r.to_json();
        json["metadata"]["creationTimestamp"] = created;
        let r = Resource::parse(json.clone())?;
        let applied = match old {
            None => Applied::Created,
            Some(old) if old == json => return Ok((r, Applied::Unchanged)),
            Some(_) => Applied::Configured,
        };
        self.table.put(&k, &json)?;
        self.publish()?;
        Ok((r, applied))
    }

    /// Removes one resource; whether it was there.
    ///
    /// # Errors
    ///
    /// [`store::Error`] when sled cannot write.
    pub fn delete(&self, kind: &str, ns: &str, name: &str) -> Result<bool, store::Error> {
        let removed = self.table.remove(&key(kind, ns, name))?;
        if removed {
            self.publish()?;
        }
        Ok(removed)
    }

    /// Every stored resource, by namespace, kind and name.
    ///
    /// # Errors
    ///
    /// [`store::Error`] when sled cannot read.
    pub fn resources(&self) -> Result<Vec<Resource>, store::Error> {
        // Documents were validated when stored; one that no longer parses
        // (an older pimesh's) is skipped, with a warning.
        Ok(self
            .table
            .all()?
            .into_iter()
            .filter_map(|(k, doc)| match Resource::parse(doc) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(key = k, error = %e, "stored policy no longer valid; skipped");
                    None
                }
            })
            .collect())
    }

    /// Every stored resource's [`PolicyStatus`].
    ///
    /// # Errors
    ///
    /// [`store::Error`] when sled cannot read.
    pub fn list(&self) -> Result<Vec<PolicyStatus>, store::Error> {
        Ok(statuses(&self.resources()?))
    }
}
