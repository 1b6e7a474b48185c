//! Writes the policy resources' `status` (`policy::status`: the
//! policy.pimesh.io kinds' `Accepted` condition, and the routes'
//! `status.parents[]` entries for pimesh's parents) to the API server, as
//! Linkerd's status controller does: with server-side apply on the
//! `status` subresource (field manager [`FIELD_MANAGER`], forced: the
//! controller owns these fields; a route's other controllers' entries are
//! sent back as they were), and only for the objects whose status differs
//! from what they have.
//!
//! It follows the policy snapshots (`super::Shared`) on its own task, so
//! the proxies' streams never wait for it, and compares again every
//! [`RESYNC`]: a route's parent or backend Service appearing in the
//! registry is no policy change. A write changes the object, the
//! watch brings it back, and the next snapshot shows the status written:
//! nothing left to write, so no loop; a write the watch has not brought
//! back yet is not sent twice ([`Written`]). Writes go one at a time, each
//! bounded by [`WRITE_TIMEOUT`]; a failed one is logged and the whole set
//! is compared again after [`RETRY`].
//!
//! Leadership: one controller replica runs (the install's Deployment has
//! `replicas: 1`). Were there several, each would write the same statuses
//! (harmless, each computing the same from the same objects, but twice the
//! writes); Linkerd elects a status writer with a Lease, which pimesh
//! would need first.

use crate::kube::KubeMetrics;
use crate::policy::httproute::GATEWAY_VERSION;
use crate::policy::index::statuses;
use crate::policy::resource::{Resource, KINDS};
use crate::policy::snapshot::Snapshots;
use crate::policy::status::{desired, desired_route};
use crate::policy::{GATEWAY_GROUP, GROUP, VERSION};
use crate::registry::Registry;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::Client;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The server-side apply field manager of the statuses.
pub const FIELD_MANAGER: &str = "pimesh-policy-controller";
/// How long one status write may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed write, when every status is compared again.
pub const RETRY: Duration = Duration::from_secs(5);
/// How often every status is compared again without a policy change.
pub const RESYNC: Duration = Duration::from_secs(10);

/// What was written to an object at the `resourceVersion` it had then
/// (without `lastTransitionTime`s, which a later round would stamp anew),
/// by `KIND NS/NAME`: until the watch brings the object back changed, the
/// same status is not written again.
type Written = BTreeMap<String, (Option<String>, Value)>;

/// Writes statuses for every snapshot of `snapshots` until the returned
/// future is dropped (the caller aborts it at shutdown); `registry` says
/// which Services routes name exist.
pub async fn run(
    client: Client,
    snapshots: Snapshots,
    registry: Arc<Registry>,
    metrics: KubeMetrics,
) {
    let mut changes = snapshots.subscribe();
    let mut written = Written::new();
    let mut failing = false;
    loop {
        let snapshot = changes.borrow_and_update().clone();
        // Revision 0: not every kind listed yet (statuses would be wrong).
        let retry = snapshot.revision > 0
            && write_all(
                &client,
                &snapshot.resources,
                &registry,
                &mut written,
                &mut failing,
                &metrics,
            )
            .await;
        let wait = if retry { RETRY } else { RESYNC };
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Writes the status of each of `all` that differs; whether a write
/// failed (then the caller retries).
async fn write_all(
    client: &Client,
    all: &[Resource],
    registry: &Registry,
    written: &mut Written,
    failing: &mut bool,
    metrics: &KubeMetrics,
) -> bool {
    let now = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map_or_else(|_| String::new(), |t| t.to_string());
    let mut failed = false;
    let mut seen = Written::new();
    let known = |ns: &str, name: &str, port: Option<u16>| registry.has_service(ns, name, port);
    for (r, st) in all.iter().zip(statuses(all)) {
        let want = match r {
            Resource::HTTPRoute(_) | Resource::GRPCRoute(_) => {
                desired_route(r, all, &known, &now).map(serde_json::to_value)
            }
            _ => desired(r, &st, &now).map(serde_json::to_value),
        };
        // These types serialise to JSON without fail.
        let Some(Ok(want)) = want else {
            continue;
        };
        let key = r.to_string();
        let sent = (r.metadata().resource_version.clone(), timeless(&want));
        if written.remove(&key).as_ref() == Some(&sent) {
            seen.insert(key, sent);
            continue;
        }
        match tokio::time::timeout(WRITE_TIMEOUT, write(client, r, &want)).await {
            Ok(Ok(())) => {
                metrics.policy_status_writes.inc();
                tracing::debug!(resource = %r, status = %want, "policy status written");
                if std::mem::take(failing) {
                    tracing::info!("policy status writes work again");
                }
                seen.insert(key, sent);
            }
            outcome => {
                metrics.policy_status_write_errors.inc();
                failed = true;
                let error = match outcome {
                    Ok(Err(e)) => crate::error_chain(&e),
                    _ => format!("no answer within {WRITE_TIMEOUT:?}"),
                };
                if !std::mem::replace(failing, true) {
                    tracing::warn!(resource = %r, error, "policy status write failed; retrying in {RETRY:?}");
                } else {
                    tracing::debug!(resource = %r, error, "policy status write failed");
                }
            }
        }
    }
    *written = seen;
    failed
}

/// `v` without its `lastTransitionTime`s.
fn timeless(v: &Value) -> Value {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| *k != "lastTransitionTime")
            .map(|(k, v)| (k.clone(), timeless(v)))
            .collect(),
        Value::Array(a) => a.iter().map(timeless).collect(),
        other => other.clone(),
    }
}

/// One server-side apply of `status` to `r`'s status subresource.
async fn write(client: &Client, r: &Resource, status: &Value) -> Result<(), kube::Error> {
    let k = KINDS
        .iter()
        .position(|k| *k == r.kind())
        .unwrap_or_default();
    let (group, version) = if k >= super::FIRST_ROUTE {
        (GATEWAY_GROUP, GATEWAY_VERSION)
    } else {
        (GROUP, VERSION)
    };
    let gvk = GroupVersionKind::gvk(group, version, r.kind());
    let ar = ApiResource::from_gvk_with_plural(&gvk, super::RESOURCES[k]);
    let ns = r.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let body = serde_json::json!({
        "apiVersion": format!("{group}/{version}"),
        "kind": r.kind(),
        "metadata": {"name": r.name(), "namespace": ns},
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(r.name(), &params, &Patch::Apply(&body))
        .await
        .map(drop)
}
