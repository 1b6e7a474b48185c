//! The policy resources at one revision, as the proxies' inbound-policy
//! streams and `pimesh policy ls` see them, from either source: standalone
//! mode's sled store (`stored`, `pimesh apply -f`) or Kubernetes mode's
//! watches of the CRDs (`kube/policy.rs`). Each source owns one
//! [`Publisher`]; readers hold [`Snapshots`].

use super::index::{statuses, PolicyStatus};
use super::resource::Resource;
use std::sync::Arc;
use tokio::sync::watch;

/// Every resource of a source at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Counts the changes since the controller started (0: nothing
    /// published yet, e.g. Kubernetes mode before the first list).
    pub revision: u64,
    /// Every resource, by namespace, kind and name.
    pub resources: Arc<Vec<Resource>>,
}

/// The writing end of a source: each [`Publisher::publish`] is a new
/// revision for every reader.
#[derive(Debug)]
pub struct Publisher(watch::Sender<Snapshot>);

impl Default for Publisher {
    fn default() -> Self {
        Publisher(watch::Sender::new(Snapshot::default()))
    }
}

impl Publisher {
    /// Publishes `resources` (sorted here by namespace, kind and name)
    /// under the next revision.
    pub fn publish(&self, mut resources: Vec<Resource>) {
        resources.sort_by(|a, b| {
            (a.namespace(), a.kind(), a.name()).cmp(&(b.namespace(), b.kind(), b.name()))
        });
        let resources = Arc::new(resources);
        self.0.send_modify(|s| {
            s.revision += 1;
            s.resources = resources;
        });
    }

    /// A reader of this source.
    pub fn snapshots(&self) -> Snapshots {
        Snapshots(self.0.subscribe())
    }
}

/// A reader of one source's snapshots (cheap to clone).
#[derive(Debug, Clone)]
pub struct Snapshots(watch::Receiver<Snapshot>);

impl Snapshots {
    /// The latest snapshot, and every later one.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.0.clone()
    }

    /// The latest snapshot.
    pub fn latest(&self) -> Snapshot {
        self.0.borrow().clone()
    }

    /// Every resource of the latest snapshot and whether it takes effect
    /// (`pimesh policy ls`).
    pub fn statuses(&self) -> Vec<PolicyStatus> {
        statuses(&self.latest().resources)
    }
}
