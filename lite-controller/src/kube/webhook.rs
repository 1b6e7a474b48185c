//! The proxy injector's registration: the controller keeps the `caBundle`
//! of the MutatingWebhookConfiguration [`WEBHOOK_CONFIGURATION`] (written
//! by `pimesh install` without one) equal to its trust anchors, so that
//! the API server trusts the injector's serving certificate (issued by the
//! controller's CA). As istiod patches its own webhook configurations.
//!
//! At start, after every CA change and every [`RECHECK`] (a configuration
//! deleted and re-applied comes back without a `caBundle`; every
//! [`ABSENT_RECHECK`] while there is none): read the
//! configuration (`get`), and when a webhook named [`WEBHOOK_NAME`]
//! carries another bundle, a JSON merge patch of `webhooks` with the
//! read `resourceVersion` (a concurrent change makes it a 409, retried).
//! No configuration is normal outside `pimesh install` (the lab, tests):
//! logged once, checked again later.

use super::KubeMetrics;
use crate::identity::Authority;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The webhook configuration `pimesh install` writes.
pub const WEBHOOK_CONFIGURATION: &str = "pimesh-proxy-injector";
/// The webhook's name inside it (a qualified name, as the API requires).
pub const WEBHOOK_NAME: &str = "pimesh-proxy-injector.pimesh.io";
/// How often the bundle is checked besides CA changes.
pub const RECHECK: Duration = Duration::from_secs(30);
/// How often a missing configuration is looked for (it is created with
/// the controller's Deployment, often just after the controller starts).
pub const ABSENT_RECHECK: Duration = Duration::from_secs(5);

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The bundle was written.
    Patched,
    /// It was already the trust anchors.
    Current,
    /// No such configuration, or none of its webhooks is ours.
    Absent,
}

/// `webhooks` of `config` with our webhook's `caBundle` set to
/// `bundle_b64`, or `None` when it already is (or no webhook is ours).
pub fn with_bundle(config: &serde_json::Value, bundle_b64: &str) -> Option<serde_json::Value> {
    let mut hooks = config.get("webhooks")?.as_array()?.clone();
    let mut changed = false;
    for h in hooks.iter_mut().filter(|h| h["name"] == WEBHOOK_NAME) {
        if h["clientConfig"]["caBundle"] != bundle_b64 {
            h["clientConfig"]["caBundle"] = serde_json::json!(bundle_b64);
            changed = true;
        }
    }
    changed.then_some(serde_json::Value::Array(hooks))
}

/// One read-compare-patch of the configuration's bundle.
///
/// # Errors
///
/// The API's (unreachable, forbidden, a conflicting write).
pub async fn sync(client: &kube::Client, bundle_pem: &str) -> Result<Synced, kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(current) = api.get_opt(WEBHOOK_CONFIGURATION).await? else {
        return Ok(Synced::Absent);
    };
    let value = serde_json::to_value(&current).map_err(kube::Error::SerdeError)?;
    let ours = value["webhooks"]
        .as_array()
        .is_some_and(|hs| hs.iter().any(|h| h["name"] == WEBHOOK_NAME));
    if !ours {
        return Ok(Synced::Absent);
    }
    let b64 = crate::inject::review::base64(bundle_pem.as_bytes());
    let Some(hooks) = with_bundle(&value, &b64) else {
        return Ok(Synced::Current);
    };
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": current.metadata.resource_version},
        "webhooks": hooks,
    });
    api.patch(
        WEBHOOK_CONFIGURATION,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(Synced::Patched)
}

/// Keeps the bundle current until `shutdown` (see the module doc); each
/// change of outcome is logged once.
pub async fn keep_ca_bundle(
    client: kube::Client,
    authority: Arc<Authority>,
    metrics: KubeMetrics,
    shutdown: CancellationToken,
) {
    let mut changes = authority.changes();
    let mut last: Option<Result<Synced, ()>> = None;
    loop {
        let outcome = sync(&client, &authority.trust_anchors_pem()).await;
        let now = outcome.as_ref().map(|s| *s).map_err(|_| ());
        match &outcome {
            Ok(Synced::Patched) => {
                metrics.webhook_ca_bundle_updates.inc();
                tracing::info!(
                    configuration = WEBHOOK_CONFIGURATION,
                    "the proxy injector's caBundle is now the trust anchors"
                );
            }
            Ok(Synced::Absent) if last != Some(Ok(Synced::Absent)) => tracing::info!(
                configuration = WEBHOOK_CONFIGURATION,
                "no MutatingWebhookConfiguration for the proxy injector (see `pimesh install`); \
                 pods are not injected until it exists"
            ),
            Err(e) if last.as_ref().is_none_or(|l| l.is_ok()) => tracing::warn!(
                error = %crate::error_chain(e),
                configuration = WEBHOOK_CONFIGURATION,
                "cannot update the proxy injector's caBundle; retrying"
            ),
            _ => {}
        }
        last = Some(now);
        // After a conflict or an error, retry soon; else on the next CA
        // change or re-check.
        let wait = match outcome {
            Err(_) => Duration::from_secs(2),
            Ok(Synced::Absent) => ABSENT_RECHECK,
            Ok(_) => RECHECK,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_our_webhook_gets_the_bundle_and_only_when_it_differs() {
        let config = json!({"webhooks": [
            {"name": "other.example.com", "clientConfig": {"caBundle": "b3RoZXI="}},
            {"name": WEBHOOK_NAME, "clientConfig": {"service": {"name": "pimesh-controller"}}},
        ]});
        let hooks = with_bundle(&config, "QUJD").unwrap();
        assert_eq!(hooks[0]["clientConfig"]["caBundle"], "b3RoZXI=");
        assert_eq!(hooks[1]["clientConfig"]["caBundle"], "QUJD");
        assert_eq!(
            hooks[1]["clientConfig"]["service"]["name"],
            "pimesh-controller"
        );
        let current = json!({"webhooks": hooks});
        assert_eq!(with_bundle(&current, "QUJD"), None);
        assert_eq!(with_bundle(&json!({"webhooks": []}), "QUJD"), None);
        assert_eq!(with_bundle(&json!({}), "QUJD"), None);
    }
}
