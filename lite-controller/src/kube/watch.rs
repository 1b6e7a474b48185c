//! One resource's `kube::runtime::watcher` stream, restarted as soon as
//! the API server answers again: the watcher itself retries with its
//! backoff (up to 30 s), so while a watch fails a one-object list probes
//! every [`PROBE_INTERVAL`] and, once that works, a fresh watcher (a
//! relist) replaces the old one. Discovery's and policy's watches share it.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;

/// Objects per list page: bounds the memory of a (re)list, whose page is
/// decoded whole before it is reduced to what the controller keeps.
pub const PAGE_SIZE: u32 = 100;
/// While a watch fails, how often a one-object list probes whether the API
/// server answers again (the watcher itself resumes silently).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// A watcher of every object of `K`, with the probe (see the module doc).
pub struct Watch<K: Resource + 'static> {
    api: Api<K>,
    resource: &'static str,
    stream: BoxStream<'static, watcher::Result<Event<K>>>,
    probe: tokio::time::Interval,
}

impl<K> Watch<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Watches `api` (all namespaces); `resource` names it in logs.
    pub fn new(api: Api<K>, resource: &'static str) -> Watch<K> {
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watch {
            stream: Self::fresh(&api),
            api,
            resource,
            probe,
        }
    }

    fn fresh(api: &Api<K>) -> BoxStream<'static, watcher::Result<Event<K>>> {
        let config = watcher::Config::default().page_size(PAGE_SIZE);
        watcher::watcher(api.clone(), config)
            .default_backoff()
            .boxed()
    }

    /// The next event or failure; `None` when the stream ended. While
    /// `failing` (the caller's view of the last items), probes the API
    /// server and restarts the watcher once it answers.
    pub async fn next(&mut self, failing: impl Fn() -> bool) -> Option<watcher::Result<Event<K>>> {
        loop {
            tokio::select! {
                item = self.stream.next() => return item,
                _ = self.probe.tick(), if failing() => {
                    let lp = kube::api::ListParams::default().limit(1);
                    match self.api.list_metadata(&lp).await {
                        Ok(_) => {
                            tracing::debug!(resource = self.resource, "Kubernetes API answers again: relisting");
                            self.stream = Self::fresh(&self.api);
                        }
                        Err(e) => tracing::debug!(resource = self.resource, error = %e, "Kubernetes API probe failed"),
                    }
                }
            }
        }
    }
}

/// Whether a watch failure says the resource does not exist on the API
/// server (404: its CustomResourceDefinition is not installed). The API
/// server answers an unknown group's path with a plain-text `404 page not
/// found`, which kube turns into a `Status` of code 404 without the
/// `NotFound` reason that `Status::is_not_found` looks for: the code
/// decides.
pub fn not_found(e: &watcher::Error) -> bool {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::WatchError(s) => s,
        _ => return false,
    };
    status.code == 404 || status.is_not_found()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API server's answer to a list of a resource whose CRD is not
    /// installed, as kube decodes it (seen on the real one, see
    /// `tests/kube_policy.rs`): code 404, no `NotFound` reason.
    #[test]
    fn a_plain_text_404_is_not_found() {
        let plain = kube::core::Status::failure("404 page not found", "Failed to parse error data")
            .with_code(404);
        assert!(!plain.is_not_found(), "kube's own check misses it");
        let e = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(plain)));
        assert!(not_found(&e));
        let forbidden = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
        let e = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(forbidden)));
        assert!(!not_found(&e));
        assert!(!not_found(&watcher::Error::NoResourceVersion));
    }
}
