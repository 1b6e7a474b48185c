//! `pimesh check [--pre]`: the checks of `linkerd check` that apply to
//! pimesh, against the Kubernetes API (the kubeconfig's, as kubectl),
//! printed by category with ✔ or ×; exit 1 when any check fails.
//!
//! - always: the client loads, the API answers, its version is at least
//!   [`MIN_KUBERNETES`] (native sidecars);
//! - `--pre`: the control plane's namespace does not exist yet, and the
//!   user may create every kind `pimesh install` writes
//!   (SelfSubjectAccessReviews);
//! - else: the namespace exists; the controller's pod is Ready; the trust
//!   anchors are published, valid now and for [`ANCHOR_MIN_DAYS`] more
//!   days; the proxy injector's webhook is registered with the trust
//!   anchors as its `caBundle`, and answers: a server-side dry-run Pod
//!   (annotated `pimesh.io/inject: enabled`, in namespace `default`)
//!   comes back injected (with `failurePolicy: Ignore` an unreachable
//!   injector leaves pods uninjected, and this check says so); meshed pods
//!   (but those that ended: a Job's) are Ready and their proxies at this
//!   version.

use super::Error;
use crate::inject::patch::{INJECT_ANNOTATION, PROXY_CONTAINER, PROXY_VERSION_ANNOTATION};
use crate::kube::identity::{TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY};
use crate::kube::webhook::{WEBHOOK_CONFIGURATION, WEBHOOK_NAME};
use clap::Args;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use std::fmt::Write as _;

/// The oldest Kubernetes the injector's native sidecars run on.
pub const MIN_KUBERNETES: (u32, u32) = crate::kube::NATIVE_SIDECARS_SINCE;
/// Trust anchors must stay valid this many more days (as `linkerd check`).
pub const ANCHOR_MIN_DAYS: u64 = 60;

/// `pimesh check` flags.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Check that the cluster is ready for `pimesh install` instead
    #[arg(long)]
    pub pre: bool,
    /// The control plane's namespace
    #[arg(long, default_value = crate::kube::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
    /// Kubeconfig file(s), `:`-separated [default: as kubectl: $KUBECONFIG,
    /// else ~/.kube/config, else in-cluster]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<String>,
}

/// Results as printed, and whether all passed.
#[derive(Default)]
struct Report {
    out: String,
    failed: usize,
}

impl Report {
    fn category(&mut self, name: &str) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        let _ = writeln!(self.out, "{name}\n{}", "-".repeat(name.chars().count()));
    }

    /// One check: `Ok(note)` ✔ (note appended in parentheses when not
    /// empty), `Err(why)` × with why on the next line.
    fn check(&mut self, name: &str, r: Result<String, String>) -> bool {
        match r {
            Ok(note) if note.is_empty() => {
                let _ = writeln!(self.out, "✔ {name}");
                true
            }
            Ok(note) => {
                let _ = writeln!(self.out, "✔ {name} ({note})");
                true
            }
            Err(why) => {
                self.failed += 1;
                let _ = writeln!(self.out, "× {name}\n    {why}");
                false
            }
        }
    }
}

fn api_err(e: kube::Error) -> String {
    crate::error_chain(&e)
}

/// May the current user `create` `resource.group` (in `ns`)?
async fn can_create(
    client: &kube::Client,
    group: &str,
    resource: &str,
    ns: Option<&str>,
) -> Result<String, String> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                verb: Some("create".to_string()),
                namespace: ns.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(api_err)?;
    let status = answer.status.unwrap_or_default();
    if status.allowed {
        Ok(String::new())
    } else {
        Err(format!(
            "not allowed to create {resource}{}{}",
            ns.map(|n| format!(" in namespace {n}")).unwrap_or_default(),
            status
                .reason
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ))
    }
}

/// The trust anchors' validity: `Err` when one is not valid now or ends
/// within [`ANCHOR_MIN_DAYS`]; else how many days the first to end has.
fn anchors_valid(pem: &str, now: i64) -> (Result<String, String>, Result<String, String>) {
    let ders = match crate::identity::pem::certs_from_pem(pem, "trust anchors") {
        Ok(d) if !d.is_empty() => d,
        Ok(_) => {
            return (
                Err("the bundle holds no certificate".into()),
                Err("no certificate".into()),
            )
        }
        Err(e) => return (Err(e.to_string()), Err(e.to_string())),
    };
    let mut least_days = i64::MAX;
    for der in &ders {
        use x509_parser::prelude::FromDer;
        let Ok((_, x)) = x509_parser::certificate::X509Certificate::from_der(der) else {
            return (
                Err("a trust anchor does not parse".into()),
                Err("unparsable".into()),
            );
        };
        let (nb, na) = (
            x.validity().not_before.timestamp(),
            x.validity().not_after.timestamp(),
        );
        if now < nb || now > na {
            return (
                Err(format!(
                    "trust anchor {} is not valid now (valid {nb}..{na}, Unix seconds)",
                    x.subject()
                )),
                Err("expired or not yet valid".into()),
            );
        }
        least_days = least_days.min((na - now) / 86_400);
    }
    let now_ok = Ok(format!("{} certificate(s)", ders.len()));
    let min = ANCHOR_MIN_DAYS as i64;
    if least_days < min {
        (now_ok, Err(format!("a trust anchor expires in {least_days} days (< {min}); rotate with `pimesh identity rotate`")))
    } else {
        (now_ok, Ok(format!("{least_days} days left")))
    }
}

/// Runs `pimesh check`.
///
/// # Errors
///
/// [`Error::Output`] when the report cannot be printed; [`Error::Input`]
/// ("checks failed", exit 1) when any check fails.
pub fn run(args: CheckArgs) -> Result<(), Error> {
    let report = super::block_on(async { Ok(checks(&args).await) })?;
    print!("{}", report.out);
    if report.failed > 0 {
        println!("\nStatus check results are ×");
        Err(Error::Input(format!("{} check(s) failed", report.failed)))
    } else {
        println!("\nStatus check results are ✔");
        Ok(())
    }
}

async fn checks(args: &CheckArgs) -> Report {
    let mut r = Report::default();
    let ns = args.namespace.as_str();
    r.category("kubernetes-api");
    let client = match crate::kube::client_from(args.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            r.check("can initialize the client", Err(crate::error_chain(&e)));
            return r;
        }
    };
    r.check("can initialize the client", Ok(String::new()));
    let info = match client.apiserver_version().await {
        Ok(info) => info,
        Err(e) => {
            r.check("can query the Kubernetes API", Err(api_err(e)));
            return r;
        }
    };
    r.check("can query the Kubernetes API", Ok(info.git_version.clone()));
    r.category("kubernetes-version");
    let v = crate::kube::version_of(&info);
    r.check(
        "is running the minimum Kubernetes API version",
        match v {
            Some(v) if v >= MIN_KUBERNETES => Ok(format!("{}.{}", v.0, v.1)),
            Some(v) => Err(format!(
                "{}.{} < {}.{}: the proxy runs as a native sidecar from 1.29 (or annotate pods config.pimesh.io/proxy-enable-native-sidecar: \"false\")",
                v.0, v.1, MIN_KUBERNETES.0, MIN_KUBERNETES.1
            )),
            None => Err("the API server's version does not parse".into()),
        },
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let existing = namespaces.get_opt(ns).await;
    if args.pre {
        r.category("pre-kubernetes-setup");
        r.check(
            "control plane namespace does not already exist",
            match &existing {
                Ok(None) => Ok(String::new()),
                Ok(Some(_)) => Err(format!(
                    "namespace {ns} exists: pimesh is installed (run `pimesh check`)"
                )),
                Err(e) => Err(e.to_string()),
            },
        );
        for (group, resource, scoped) in [
            ("", "namespaces", false),
            ("rbac.authorization.k8s.io", "clusterroles", false),
            ("rbac.authorization.k8s.io", "clusterrolebindings", false),
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                false,
            ),
            ("", "serviceaccounts", true),
            ("", "persistentvolumeclaims", true),
            ("apps", "deployments", true),
            ("", "services", true),
        ] {
            let res = can_create(&client, group, resource, scoped.then_some(ns)).await;
            r.check(&format!("can create {resource}"), res);
        }
        return r;
    }

    r.category("pimesh-control-plane");
    let present = r.check(
        "control plane namespace exists",
        match &existing {
            Ok(Some(_)) => Ok(ns.to_string()),
            Ok(None) => Err(format!(
                "no namespace {ns}: install with `pimesh install | kubectl apply -f -`"
            )),
            Err(e) => Err(e.to_string()),
        },
    );
    if !present {
        return r;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("app.kubernetes.io/name={}", crate::kube::access::NAME);
    r.check(
        "controller pod is running and ready",
        match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let ready = list.items.iter().filter(|p| pod_ready(p)).count();
                if ready > 0 {
                    Ok(format!("{ready} ready"))
                } else if list.items.is_empty() {
                    Err(format!("no pod labelled {selector} in {ns}"))
                } else {
                    Err(format!(
                        "{} pod(s), none Ready: kubectl -n {ns} describe pod -l {selector}",
                        list.items.len()
                    ))
                }
            }
            Err(e) => Err(api_err(e)),
        },
    );

    r.category("pimesh-identity");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let anchors = match cms.get_opt(TRUST_ROOTS_CONFIGMAP).await {
        Ok(Some(cm)) => cm.data.and_then(|d| d.get(TRUST_ROOTS_KEY).cloned()).ok_or_else(|| format!("ConfigMap {TRUST_ROOTS_CONFIGMAP} has no {TRUST_ROOTS_KEY}")),
        Ok(None) => Err(format!("no ConfigMap {TRUST_ROOTS_CONFIGMAP} in {ns}: the controller publishes it once it runs")),
        Err(e) => Err(api_err(e)),
    };
    let published = r.check(
        "trust anchors are published",
        anchors
            .as_ref()
            .map(|_| String::new())
            .map_err(Clone::clone),
    );
    if published {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let (valid, lasting) = anchors_valid(anchors.as_deref().unwrap_or_default(), now);
        r.check("trust anchors are within their validity period", valid);
        r.check(
            &format!("trust anchors are valid for at least {ANCHOR_MIN_DAYS} days"),
            lasting,
        );
    }

    r.category("pimesh-proxy-injector");
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let bundle = match hooks.get_opt(WEBHOOK_CONFIGURATION).await {
        Ok(Some(c)) => c
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .find(|h| h.name == WEBHOOK_NAME)
            .map(|h| h.client_config.ca_bundle.map(|b| b.0))
            .ok_or_else(|| format!("{WEBHOOK_CONFIGURATION} has no webhook {WEBHOOK_NAME}")),
        Ok(None) => Err(format!(
            "no MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}"
        )),
        Err(e) => Err(api_err(e)),
    };
    r.check(
        "proxy injector webhook is registered with the trust anchors",
        match (&bundle, &anchors) {
            (Ok(Some(b)), Ok(a)) if b == a.as_bytes() => Ok(String::new()),
            (Ok(Some(_)), Ok(_)) => Err("its caBundle is not the published trust anchors (the controller updates it within 30 s)".into()),
            (Ok(None), _) => Err("no caBundle yet: the controller fills it in once it runs".into()),
            (Err(e), _) => Err(e.clone()),
            (Ok(Some(_)), Err(_)) => Err("no trust anchors to compare with".into()),
        },
    );
    r.check(
        "proxy injector answers (a dry-run pod is injected)",
        injector_answers(&client).await,
    );

    r.category("pimesh-data-plane");
    let meshed: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!(
        "{}={ns}",
        crate::inject::patch::CONTROL_PLANE_NS_LABEL
    ));
    match meshed.list(&lp).await {
        Err(e) => {
            r.check("data-plane proxies are ready", Err(api_err(e)));
        }
        Ok(list) => {
            let name = |p: &Pod| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            };
            // Pods that ended (a Job's) have no proxy running any more.
            let ended = |p: &Pod| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
            };
            let running: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && !ended(p))
                .collect();
            let not_ready: Vec<String> = running
                .iter()
                .filter(|p| !pod_ready(p))
                .map(|p| name(p))
                .collect();
            r.check(
                "data-plane proxies are ready",
                if not_ready.is_empty() {
                    Ok(format!("{} meshed pod(s)", running.len()))
                } else {
                    Err(format!("not Ready: {}", not_ready.join(", ")))
                },
            );
            let version = env!("CARGO_PKG_VERSION");
            let other: Vec<String> = running
                .iter()
                .filter(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(PROXY_VERSION_ANNOTATION))
                        .map(String::as_str)
                        != Some(version)
                })
                .map(|p| name(p))
                .collect();
            r.check(
                "data-plane proxies are at the control plane's version",
                if other.is_empty() {
                    Ok(version.to_string())
                } else {
                    Err(format!(
                        "not at {version} (restart them to upgrade): {}",
                        other.join(", ")
                    ))
                },
            );
        }
    }
    r
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A server-side dry-run Pod in `default`, annotated for injection: does
/// the API server come back with the proxy?
async fn injector_answers(client: &kube::Client) -> Result<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "pimesh-check-",
            "annotations": {INJECT_ANNOTATION: "enabled"},
        },
        "spec": {"containers": [{"name": "check", "image": "pimesh-check"}]},
    }))
    .map_err(|e| e.to_string())?;
    let created = pods
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
        .map_err(api_err)?;
    let spec = created.spec.unwrap_or_default();
    let injected = spec
        .init_containers
        .unwrap_or_default()
        .iter()
        .chain(spec.containers.iter())
        .any(|c| c.name == PROXY_CONTAINER);
    if injected {
        Ok(String::new())
    } else {
        Err("the API server created the pod uninjected: the injector is down or unreachable (failurePolicy Ignore); \
             new pods are not meshed"
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_kubernetes_reports_them() {
        let info = |major: &str, minor: &str| k8s_openapi::apimachinery::pkg::version::Info {
            major: major.into(),
            minor: minor.into(),
            ..Default::default()
        };
        assert_eq!(crate::kube::version_of(&info("1", "34")), Some((1, 34)));
        assert_eq!(crate::kube::version_of(&info("1", "28+")), Some((1, 28)));
        assert_eq!(crate::kube::version_of(&info("", "x")), None);
        assert!((1, 28) < MIN_KUBERNETES && (1, 34) >= MIN_KUBERNETES);
    }

    fn anchor(days: i64) -> (String, i64) {
        let now = time::OffsetDateTime::now_utc();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().unwrap();
        (p.self_signed(&key).unwrap().pem(), now.unix_timestamp())
    }

    #[test]
    fn anchors_must_last_sixty_days() {
        let (pem, now) = anchor(365);
        let (valid, lasting) = anchors_valid(&pem, now);
        assert_eq!(valid, Ok("1 certificate(s)".into()));
        assert!(lasting.unwrap().ends_with("days left"));
        let (pem, now) = anchor(30);
        let (valid, lasting) = anchors_valid(&pem, now);
        assert!(valid.is_ok());
        let e = lasting.unwrap_err();
        assert!(
            e.contains("expires in 29 days") || e.contains("expires in 30 days"),
            "{e}"
        );
        let (valid, _) = anchors_valid(&pem, now + 40 * 86_400);
        assert!(valid.unwrap_err().contains("not valid now"));
        assert!(anchors_valid("garbage", now).0.is_err());
        assert!(anchors_valid("", now).0.is_err());
    }

    #[test]
    fn report_marks_and_counts() {
        let mut r = Report::default();
        r.category("kubernetes-api");
        assert!(r.check("a", Ok(String::new())));
        assert!(!r.check("b", Err("why".into())));
        assert!(r.check("c", Ok("note".into())));
        assert_eq!(r.failed, 1);
        assert_eq!(
            r.out,
            "kubernetes-api\n--------------\n✔ a\n× b\n    why\n✔ c (note)\n"
        );
    }
}
