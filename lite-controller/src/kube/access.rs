//! Least privilege: the permissions Kubernetes mode needs, defined once in
//! [`RULES`]; the RBAC manifest `k3s/controller-rbac.yaml` is generated
//! from it ([`manifest`], `pimesh controller-rbac`, and a test that fails
//! when the checked-in copy differs), and at start every rule's verbs are
//! checked with SelfSubjectAccessReviews (`authorization.k8s.io/v1`), as
//! `linkerd check` does. Creating SelfSubjectAccessReviews needs no rule:
//! the default ClusterRole `system:basic-user` grants it to every
//! authenticated user.

// The rules name objects that `identity` and `webhook` own, with their
// keys. Through the parent (`kube.rs` imports `Denied`; `identity` and
// `webhook` import `KubeMetrics`) this is a loop kube -> access -> identity
// -> kube of a folder and its own files, kept: those names belong beside the
// code that writes the objects, and only constants cross.
use super::identity::TRUST_ROOTS_CONFIGMAP; // import-cycle: allowed — the rule names the ConfigMap identity.rs writes (see above)
use super::webhook::WEBHOOK_CONFIGURATION; // import-cycle: allowed — the rule names the configuration webhook.rs patches (see above)
use crate::policy::GATEWAY_GROUP;
use crate::policy::GROUP as POLICY_GROUP;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use std::fmt::Write as _;

/// The ServiceAccount, ClusterRole(Binding) and Role(Binding) name.
pub const NAME: &str = "pimesh-controller";

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (ClusterRole).
    Cluster,
    /// The controller's own namespace (Role).
    OwnNamespace,
}

/// One RBAC rule: one resource of one API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Plural resource.
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// ClusterRole or Role.
    pub scope: Scope,
    /// `resourceNames` restriction, where Kubernetes allows one (not for
    /// `create`, `list`, `watch`).
    pub resource_name: Option<&'static str>,
}

/// Every permission the controller needs in Kubernetes mode.
pub const RULES: &[Rule] = &[
    Rule {
        group: "",
        resource: "services",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: "",
        resource: "pods",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: "",
        resource: "namespaces",
        verbs: &["get", "list"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        verbs: &["create"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: "admissionregistration.k8s.io",
        resource: "mutatingwebhookconfigurations",
        verbs: &["get", "patch"],
        scope: Scope::Cluster,
        resource_name: Some(WEBHOOK_CONFIGURATION),
    },
    // The trust-roots ConfigMap in every namespace (as kube-controller-
    // manager's root-CA publisher writes kube-root-ca.crt): creating cannot
    // be restricted by name; changing can.
    Rule {
        group: "",
        resource: "configmaps",
        verbs: &["create"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: "",
        resource: "configmaps",
        verbs: &["get", "update", "patch"],
        scope: Scope::Cluster,
        resource_name: Some(TRUST_ROOTS_CONFIGMAP),
    },
    // The policy resources (`policy.rs`' watches; `pimesh install --crds`).
    Rule {
        group: POLICY_GROUP,
        resource: "servers",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: POLICY_GROUP,
        resource: "authorizationpolicies",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: POLICY_GROUP,
        resource: "meshtlsauthentications",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: POLICY_GROUP,
        resource: "networkauthentications",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: POLICY_GROUP,
        resource: "httplocalratelimitpolicies",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    // Gateway API's routes (`policy.rs`' watches; their CRDs are upstream's).
    Rule {
        group: GATEWAY_GROUP,
        resource: "httproutes",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: GATEWAY_GROUP,
        resource: "grpcroutes",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        resource_name: None,
    }, // The policy resources' and routes' statuses (`policy/status.rs`'
    // server-side applies to the status subresource).
    Rule {
        group: POLICY_GROUP,
        resource: "servers/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: POLICY_GROUP,
        resource: "authorizationpolicies/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: POLICY_GROUP,
        resource: "meshtlsauthentications/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: POLICY_GROUP,
        resource: "networkauthentications/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: POLICY_GROUP,
        resource: "httplocalratelimitpolicies/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: GATEWAY_GROUP,
        resource: "httproutes/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
    Rule {
        group: GATEWAY_GROUP,
        resource: "grpcroutes/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        resource_name: None,
    },
];

/// A permission the ServiceAccount lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing permission: {verb} {what} ({role} {NAME}){}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
pub struct Denied {
    /// The verb.
    pub verb: &'static str,
    /// `resource.group`, with its name and namespace when restricted.
    pub what: String,
    /// `ClusterRole` or `Role`.
    pub role: &'static str,
    /// The review's `status.reason`, if any.
    pub reason: Option<String>,
}

/// Why the check could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A permission is missing.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The API server did not answer (retry later).
    #[error("cannot check permissions with the Kubernetes API")]
    Api(#[source] kube::Error),
}

/// `resource.group` as kubectl writes it (`services`, `tokenreviews.authentication.k8s.io`).
fn qualified(rule: &Rule) -> String {
    if rule.group.is_empty() {
        rule.resource.to_string()
    } else {
        format!("{}.{}", rule.resource, rule.group)
    }
}

/// Sends one SelfSubjectAccessReview per rule and verb (in `namespace`
/// for [`Scope::OwnNamespace`]); the first denial, or the API error.
///
/// # Errors
///
/// [`CheckError::Denied`] naming the first permission refused;
/// [`CheckError::Api`] when the API server does not answer or fails (retry
/// later).
pub async fn check(client: &kube::Client, namespace: &str) -> Result<(), CheckError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    for rule in RULES {
        for verb in rule.verbs {
            let own = rule.scope == Scope::OwnNamespace;
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(rule.group.to_string()),
                        resource: Some(rule.resource.to_string()),
                        verb: Some(verb.to_string()),
                        namespace: own.then(|| namespace.to_string()),
                        name: rule.resource_name.map(str::to_string),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(CheckError::Api)?;
            let status = answer.status.unwrap_or_default();
            if !status.allowed {
                let mut what = qualified(rule);
                if let Some(n) = rule.resource_name {
                    let _ = write!(what, " {n:?}");
                }
                if own {
                    let _ = write!(what, " in namespace {namespace}");
                }
                return Err(Denied {
                    verb,
                    what,
                    role: if own { "Role" } else { "ClusterRole" },
                    reason: status.reason.filter(|r| !r.is_empty()),
                }
                .into());
            }
        }
    }
    Ok(())
}

fn yaml_rules(out: &mut String, scope: Scope) {
    out.push_str("rules:\n");
    for r in RULES.iter().filter(|r| r.scope == scope) {
        let _ = writeln!(out, "  - apiGroups: [\"{}\"]", r.group);
        let _ = writeln!(out, "    resources: [\"{}\"]", r.resource);
        if let Some(n) = r.resource_name {
            let _ = writeln!(out, "    resourceNames: [\"{n}\"]");
        }
        let verbs: Vec<String> = r.verbs.iter().map(|v| format!("\"{v}\"")).collect();
        let _ = writeln!(out, "    verbs: [{}]", verbs.join(", "));
    }
}

/// The RBAC manifest for a controller in `namespace`: ServiceAccount,
/// ClusterRole + ClusterRoleBinding, Role + RoleBinding, all named
/// [`NAME`] (YAML, for the k3s auto-deploy directory).
pub fn manifest(namespace: &str) -> String {
    let mut out = String::from(
        "# Generated by `pimesh controller-rbac` from the controller's rules\n\
         # (lite-controller/src/kube/access.rs); do not edit.\n",
    );
    out.push_str(&documents(namespace));
    out
}

/// The documents of [`manifest`], each starting with `---` (for `pimesh
/// install`).
pub fn documents(namespace: &str) -> String {
    let mut out = String::new();
    let labels = "  labels:\n    app.kubernetes.io/part-of: pimesh\n";
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {NAME}\n  namespace: {namespace}\n{labels}"
    );
    let _ = write!(
        out,
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {NAME}\n{labels}"
    );
    yaml_rules(&mut out, Scope::Cluster);
    let _ = write!(
        out,
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {NAME}\n{labels}\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {NAME}\n\
         subjects:\n  - kind: ServiceAccount\n    name: {NAME}\n    namespace: {namespace}\n"
    );
    // A Role only for rules of the own namespace (none today: the
    // trust-roots ConfigMap goes to every namespace).
    if !RULES.iter().any(|r| r.scope == Scope::OwnNamespace) {
        return out;
    }
    let _ = write!(
        out,
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {NAME}\n  namespace: {namespace}\n{labels}"
    );
    yaml_rules(&mut out, Scope::OwnNamespace);
    let _ = write!(
        out,
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {NAME}\n  namespace: {namespace}\n{labels}\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: {NAME}\n\
         subjects:\n  - kind: ServiceAccount\n    name: {NAME}\n    namespace: {namespace}\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in manifest is the generated one: regenerate with
    /// `cargo run -p pimesh-controller -- controller-rbac > k3s/controller-rbac.yaml`.
    #[test]
    fn checked_in_manifest_is_generated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../k3s/controller-rbac.yaml");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == manifest(super::super::DEFAULT_NAMESPACE),
            "{path} differs from the generated manifest; run \
             `cargo run -p pimesh-controller -- controller-rbac > k3s/controller-rbac.yaml`"
        );
    }

    #[test]
    fn manifest_has_the_rules() {
        let m = manifest("mesh");
        assert!(m.contains("kind: ClusterRole\n"));
        assert!(m.contains(
            "  - apiGroups: [\"authentication.k8s.io\"]\n    resources: [\"tokenreviews\"]\n    verbs: [\"create\"]\n"
        ));
        assert!(m.contains("    resourceNames: [\"pimesh-identity-trust-roots\"]\n    verbs: [\"get\", \"update\", \"patch\"]\n"));
        assert!(m.contains(
            "kind: ServiceAccount\nmetadata:\n  name: pimesh-controller\n  namespace: mesh\n"
        ));
        assert!(
            !m.contains("kind: Role\n"),
            "no rule of the own namespace, no Role"
        );
        assert!(!m.contains("selfsubjectaccessreviews"));
        // Every policy CRD's resource, read-only (what `policy.rs` watches).
        for crd in crate::policy::crd::crds() {
            let r = &crd.spec.names.plural;
            assert!(
                m.contains(&format!(
                    "  - apiGroups: [\"policy.pimesh.io\"]\n    resources: [\"{r}\"]\n    verbs: [\"get\", \"list\", \"watch\"]\n"
                )),
                "{r}"
            );
        }
        // Their statuses, patched and nothing else.
        for crd in crate::policy::crd::crds() {
            let r = &crd.spec.names.plural;
            assert!(
                m.contains(&format!(
                    "  - apiGroups: [\"policy.pimesh.io\"]\n    resources: [\"{r}/status\"]\n    verbs: [\"patch\"]\n"
                )),
                "{r}/status"
            );
        }
        // And every Gateway API route kind watched.
        for r in &crate::kube::policy::RESOURCES[crate::kube::policy::FIRST_ROUTE..] {
            assert!(
                m.contains(&format!(
                    "  - apiGroups: [\"gateway.networking.k8s.io\"]\n    resources: [\"{r}\"]\n    verbs: [\"get\", \"list\", \"watch\"]\n"
                )),
                "{r}"
            );
        }
        // No name restriction where Kubernetes ignores it.
        for r in RULES.iter().filter(|r| r.resource_name.is_some()) {
            assert!(!r
                .verbs
                .iter()
                .any(|v| matches!(*v, "create" | "list" | "watch")));
        }
    }

    /// One SelfSubjectAccessReview per rule and verb, namespaced and named
    /// where the rule is; the first denial stops the check.
    #[tokio::test]
    async fn check_reviews_every_rule_and_stops_at_a_denial() {
        let (client, mut server) = super::super::mock::client();
        let call = tokio::spawn(async move { check(&client, "mesh").await });
        let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
        let mut seen = Vec::new();
        for rule in RULES.iter().take(5) {
            for verb in rule.verbs {
                let allowed = rule.resource != "tokenreviews";
                let (_, body) = super::super::mock::expect(
                    &mut server,
                    "POST",
                    path,
                    201,
                    serde_json::json!({
                        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                        "spec": {}, "status": {"allowed": allowed}
                    }),
                )
                .await;
                let attrs = &body["spec"]["resourceAttributes"];
                assert_eq!(attrs["verb"], *verb);
                assert_eq!(attrs["resource"], rule.resource);
                assert_eq!(attrs["group"], rule.group);
                assert!(attrs.get("namespace").is_none(), "{attrs}");
                seen.push(format!("{verb} {}", rule.resource));
            }
        }
        assert_eq!(seen.len(), 12);
        let e = call.await.unwrap().unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing permission: create tokenreviews.authentication.k8s.io (ClusterRole pimesh-controller)"
        );

        // The Role's rules: in the namespace, named where restricted.
        let (client, mut server) = super::super::mock::client();
        let call = tokio::spawn(async move { check(&client, "mesh").await });
        let mut named = 0;
        for rule in RULES {
            for _ in rule.verbs {
                let (_, body) = super::super::mock::expect(
                    &mut server,
                    "POST",
                    path,
                    201,
                    serde_json::json!({
                        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                        "spec": {}, "status": {"allowed": true}
                    }),
                )
                .await;
                let attrs = &body["spec"]["resourceAttributes"];
                if rule.scope == Scope::OwnNamespace {
                    assert_eq!(attrs["namespace"], "mesh");
                }
                if attrs.get("name").is_some() {
                    assert_eq!(Some(attrs["name"].as_str().unwrap()), rule.resource_name);
                    named += 1;
                }
            }
        }
        call.await.unwrap().unwrap();
        assert_eq!(named, 5);
    }

    #[test]
    fn denial_message_names_verb_resource_and_group() {
        let d = Denied {
            verb: "create",
            what: qualified(&RULES[4]),
            role: "ClusterRole",
            reason: None,
        };
        assert_eq!(
            d.to_string(),
            "missing permission: create tokenreviews.authentication.k8s.io (ClusterRole pimesh-controller)"
        );
    }
}
