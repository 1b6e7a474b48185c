//! Whether a pod is meshed: its own `pimesh.io/inject` (annotation, then
//! label) and the cases Linkerd's injector skips (kube-system, the control
//! plane's namespace, `hostNetwork`, already injected), else its
//! namespace's; and which default inbound policy its proxy gets.

use super::params::{config, str_at, Params, INJECT_ANNOTATION, PROXY_CONTAINER};
use pimesh_api::policy::DefaultPolicy;
use serde_json::Value;

/// Why a pod is not injected (metric `skipped_<reason>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Neither the pod nor its namespace says `enabled`.
    NotEnabled,
    /// The pod says `disabled`.
    Disabled,
    /// In `kube-system`.
    KubeSystem,
    /// In the controller's own namespace.
    ControlPlane,
    /// `hostNetwork: true`: rules would capture the node's traffic.
    HostNetwork,
    /// It already has the proxy container.
    AlreadyInjected,
    /// Its namespace could not be read.
    NamespaceUnavailable,
}

impl Skip {
    /// Every reason, for the metric's zero series.
    pub const ALL: [Skip; 7] = [
        Skip::NotEnabled,
        Skip::Disabled,
        Skip::KubeSystem,
        Skip::ControlPlane,
        Skip::HostNetwork,
        Skip::AlreadyInjected,
        Skip::NamespaceUnavailable,
    ];

    /// The `result` label.
    pub fn result(self) -> &'static str {
        match self {
            Skip::NotEnabled => "skipped_not_enabled",
            Skip::Disabled => "skipped_disabled",
            Skip::KubeSystem => "skipped_kube_system",
            Skip::ControlPlane => "skipped_control_plane",
            Skip::HostNetwork => "skipped_host_network",
            Skip::AlreadyInjected => "skipped_injected",
            Skip::NamespaceUnavailable => "skipped_namespace_unavailable",
        }
    }
}

/// What the pod alone decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Inject.
    Inject,
    /// Leave it alone.
    Skip(Skip),
    /// The namespace's `pimesh.io/inject` decides ([`namespace_decides`]).
    AskNamespace,
}

/// The annotation, on a pod (template) or its namespace, naming the
/// proxy's default inbound policy (Linkerd's
/// `config.linkerd.io/default-inbound-policy`); the pod's wins.
pub const DEFAULT_INBOUND_POLICY_ANNOTATION: &str = "config.pimesh.io/default-inbound-policy";

/// The default inbound policy an annotation `value` names; `None` (with a
/// warning naming `whose` annotation) for a name that is not one of
/// Linkerd's six.
fn policy_named(value: Option<&str>, whose: &str) -> Option<DefaultPolicy> {
    let v = value?.trim();
    match v.parse() {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(annotation = DEFAULT_INBOUND_POLICY_ANNOTATION, whose, error = %e, "ignored");
            None
        }
    }
}

/// The default inbound policy of `pod`: its annotation, else its
/// namespace's (`ns_meta`, `{labels, annotations}`, when known), else the
/// cluster's.
pub fn inbound_policy(pod: &Value, ns_meta: Option<&Value>, p: &Params) -> DefaultPolicy {
    policy_named(config(pod, "default-inbound-policy"), "pod")
        .or_else(|| {
            let v = ns_meta
                .and_then(|m| str_at(m, &["annotations", DEFAULT_INBOUND_POLICY_ANNOTATION]));
            policy_named(v, "namespace")
        })
        .unwrap_or(p.default_inbound_policy)
}

/// Whether `pod` names its own default inbound policy (else the injector
/// reads its namespace's).
pub fn names_inbound_policy(pod: &Value) -> bool {
    config(pod, "default-inbound-policy").is_some()
}

fn has_container(pod: &Value, list: &str, name: &str) -> bool {
    pod["spec"][list]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == name))
}

/// `enabled` / `disabled` / other from an object's metadata: annotation
/// first, then label.
fn says(meta: &Value) -> Option<&str> {
    str_at(meta, &["annotations", INJECT_ANNOTATION])
        .or_else(|| str_at(meta, &["labels", INJECT_ANNOTATION]))
}

/// The pod's own decision in namespace `ns` (the AdmissionReview's
/// `request.namespace`: a new pod's `metadata.namespace` may be empty).
/// Order: kube-system, the control plane's namespace, pod `disabled`,
/// `hostNetwork`, already injected, pod `enabled`; else the namespace.
pub fn decide(pod: &Value, ns: &str, controller_ns: &str) -> Decision {
    if ns == "kube-system" {
        return Decision::Skip(Skip::KubeSystem);
    }
    if ns == controller_ns {
        return Decision::Skip(Skip::ControlPlane);
    }
    let own = says(&pod["metadata"]);
    if own == Some("disabled") {
        return Decision::Skip(Skip::Disabled);
    }
    if pod["spec"]["hostNetwork"] == true {
        return Decision::Skip(Skip::HostNetwork);
    }
    if has_container(pod, "initContainers", PROXY_CONTAINER)
        || has_container(pod, "containers", PROXY_CONTAINER)
    {
        return Decision::Skip(Skip::AlreadyInjected);
    }
    if own == Some("enabled") {
        return Decision::Inject;
    }
    Decision::AskNamespace
}

/// The namespace's decision from its metadata (`{labels, annotations}`).
pub fn namespace_decides(ns_meta: &Value) -> Decision {
    match says(ns_meta) {
        Some("enabled") => Decision::Inject,
        _ => Decision::Skip(Skip::NotEnabled),
    }
}

/// The annotation that says why a pod that asked to be meshed was not.
pub const SKIPPED_ANNOTATION: &str = "pimesh.io/inject-skipped";

impl Skip {
    /// Why, for the [`SKIPPED_ANNOTATION`] and `pimesh inject`'s report.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::NotEnabled => "not enabled",
            Skip::Disabled => "pimesh.io/inject: disabled",
            Skip::KubeSystem => "in kube-system",
            Skip::ControlPlane => "in the control plane's namespace",
            Skip::HostNetwork => "hostNetwork: true",
            Skip::AlreadyInjected => "already injected",
            Skip::NamespaceUnavailable => "namespace unavailable",
        }
    }
}

/// Whether the pod's own metadata asks for injection.
pub fn asks(pod: &Value) -> bool {
    says(&pod["metadata"]) == Some("enabled")
}
