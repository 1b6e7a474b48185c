//! `pimesh install`: the control plane's manifests for a Kubernetes (k3s)
//! cluster, as `linkerd install` prints Linkerd's. One YAML stream, in the
//! order `kubectl apply -f` and k3s's auto-deploy directory need it:
//!
//! 1. Namespace `pimesh` (labels `pimesh.io/is-control-plane`,
//!    `config.pimesh.io/admission-webhooks: disabled`, as Linkerd's);
//! 2. the controller's ServiceAccount and least-privilege RBAC
//!    ([`crate::kube::access::RULES`]);
//! 3. PersistentVolumeClaim `pimesh-controller-data`: the sled database
//!    (the CA's keys, tokens, history) survives restarts and upgrades. k3s
//!    binds it through its bundled local-path-provisioner (a directory on
//!    the node the controller first ran on);
//! 4. Deployment `pimesh-controller` (one replica, `Recreate`: sled allows
//!    one process per database);
//! 5. Service `pimesh-controller`: 8086 (proxies), 8085 (operators,
//!    metrics), 443 → 8443 (the proxy injector);
//! 6. MutatingWebhookConfiguration `pimesh-proxy-injector`: pods, on
//!    CREATE, `failurePolicy: Ignore` (as Linkerd), `sideEffects: None`,
//!    namespaces labelled `config.pimesh.io/admission-webhooks: disabled`
//!    and `kube-system` left out. Its `caBundle` is filled in by the
//!    controller ([`crate::kube::webhook`]) with the trust anchors of the
//!    CA it keeps in its database, so the manifest holds no secret and
//!    k3s's re-apply never rolls it back.
//!
//! The trust-roots ConfigMap is not in the stream: the controller
//! publishes it from its database at start and after every rotation.
//!
//! Every flag value is checked before anything is printed
//! ([`InvalidFlag`]); the output is deterministic (the checked-in
//! `k3s/pimesh.yaml` is compared with it).

use crate::inject::patch::{quantity, DEFAULT_IMAGE_REPOSITORY};
use crate::kube::access::{self, NAME};
use crate::kube::webhook::{WEBHOOK_CONFIGURATION, WEBHOOK_NAME};
use clap::{Args, ValueEnum};
use std::fmt::Write as _;

/// The controller's data volume claim.
pub const DATA_CLAIM: &str = "pimesh-controller-data";
/// Where the controller's data volume is mounted.
pub const DATA_DIR: &str = "/var/lib/pimesh";
/// The controller's user and group in its pod (numeric, non-root; the
/// `pimesh` image's own, images/build.sh).
pub const CONTROLLER_UID: u32 = 65532;
/// Label of the control plane's namespace (as `linkerd.io/is-control-plane`).
pub const CONTROL_PLANE_LABEL: &str = "pimesh.io/is-control-plane";
/// Namespace label that keeps the injector out (as
/// `config.linkerd.io/admission-webhooks`).
pub const ADMISSION_WEBHOOKS_LABEL: &str = "config.pimesh.io/admission-webhooks";

/// `imagePullPolicy` of the control plane's and the proxies' images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Use the node's image if present (air-gapped k3s: the imported tarballs).
    IfNotPresent,
    /// Pull on every start.
    Always,
    /// Never pull: the image must have been imported.
    Never,
}

impl PullPolicy {
    fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Always => "Always",
            PullPolicy::Never => "Never",
        }
    }
}

/// What the webhook does when the injector cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicy {
    /// Create the pod uninjected (Linkerd's default).
    Ignore,
    /// Refuse the pod.
    Fail,
}

/// `pimesh install` flags.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// The control plane's namespace
    #[arg(long, default_value = crate::kube::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
    /// The cluster's DNS domain
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// Image repository of `pimesh` (controller) and `pimesh-proxy`
    #[arg(long, default_value = DEFAULT_IMAGE_REPOSITORY, value_name = "REPO")]
    pub image_repository: String,
    /// Image tag [default: this binary's version]
    #[arg(long, value_name = "TAG")]
    pub image_tag: Option<String>,
    /// imagePullPolicy of the controller's image (injected proxies use
    /// IfNotPresent)
    #[arg(
        long,
        value_enum,
        default_value = "if-not-present",
        value_name = "POLICY"
    )]
    pub image_pull_policy: PullPolicy,
    /// The controller's CPU request (Kubernetes quantity)
    #[arg(long, default_value = "20m", value_name = "QUANTITY")]
    pub controller_cpu_request: String,
    /// The controller's CPU limit [default: none]
    #[arg(long, value_name = "QUANTITY")]
    pub controller_cpu_limit: Option<String>,
    /// The controller's memory request
    #[arg(long, default_value = "32Mi", value_name = "QUANTITY")]
    pub controller_memory_request: String,
    /// The controller's memory limit
    #[arg(long, default_value = "128Mi", value_name = "QUANTITY")]
    pub controller_memory_limit: String,
    /// Size of the controller's data volume
    #[arg(long, default_value = "256Mi", value_name = "QUANTITY")]
    pub data_volume_size: String,
    /// StorageClass of the data volume [default: the cluster's default;
    /// k3s: local-path]
    #[arg(long, value_name = "NAME")]
    pub storage_class: Option<String>,
    /// What the API server does when the injector is unreachable
    #[arg(long, value_enum, default_value = "ignore", value_name = "POLICY")]
    pub webhook_failure_policy: FailurePolicy,
    /// Injected proxies' default inbound policy where neither the pod nor
    /// its namespace names one (config.pimesh.io/default-inbound-policy):
    /// all-unauthenticated, all-authenticated, cluster-unauthenticated,
    /// cluster-authenticated, deny or audit (Linkerd's
    /// proxy.defaultInboundPolicy)
    #[arg(long, default_value = "all-unauthenticated", value_name = "POLICY")]
    pub default_inbound_policy: String,
    /// The cluster networks the cluster-* policies admit, CIDRs
    /// comma-separated (Linkerd's clusterNetworks) [default:
    /// 10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8; k3s'
    /// pods and services are in 10.42.0.0/16 and 10.43.0.0/16]
    #[arg(long, value_name = "CIDRS")]
    pub cluster_networks: Option<String>,
    /// For k3s's auto-deploy directory
    /// (/var/lib/rancher/k3s/server/manifests/): the air-gap images
    /// (imagePullPolicy IfNotPresent whatever --image-pull-policy says) and
    /// a header saying where the file goes (k3s/pimesh.yaml)
    #[arg(long)]
    pub k3s: bool,
    /// Print only the policy CustomResourceDefinitions (policy.pimesh.io:
    /// Server, AuthorizationPolicy, MeshTLSAuthentication,
    /// NetworkAuthentication, HTTPLocalRateLimitPolicy; k3s/pimesh-crds.yaml),
    /// to apply before the control plane, as `linkerd install --crds`
    #[arg(long)]
    pub crds: bool,
}

impl Default for InstallArgs {
    fn default() -> Self {
        InstallArgs {
            namespace: crate::kube::DEFAULT_NAMESPACE.to_string(),
            cluster_domain: "cluster.local".to_string(),
            image_repository: DEFAULT_IMAGE_REPOSITORY.to_string(),
            image_tag: None,
            image_pull_policy: PullPolicy::IfNotPresent,
            controller_cpu_request: "20m".to_string(),
            controller_cpu_limit: None,
            controller_memory_request: "32Mi".to_string(),
            controller_memory_limit: "128Mi".to_string(),
            data_volume_size: "256Mi".to_string(),
            storage_class: None,
            webhook_failure_policy: FailurePolicy::Ignore,
            default_inbound_policy: "all-unauthenticated".to_string(),
            cluster_networks: None,
            k3s: false,
            crds: false,
        }
    }
}

/// A flag value that cannot go into a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --{flag} {value:?}: {reason}")]
pub struct InvalidFlag {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// The value as given.
    pub value: String,
    /// What it must be.
    pub reason: &'static str,
}

fn invalid(flag: &'static str, value: &str, reason: &'static str) -> InvalidFlag {
    InvalidFlag {
        flag,
        value: value.to_string(),
        reason,
    }
}

/// An RFC 1123 label (namespaces, StorageClass names: lower-case
/// alphanumerics and `-`, at most 63).
fn dns_label(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
}

/// An RFC 1123 subdomain (the cluster domain, StorageClass names).
fn dns_subdomain(v: &str) -> bool {
    v.len() <= 253 && v.split('.').all(dns_label)
}

/// An image repository as the OCI distribution spec names them
/// (`registry[:port]/path`, lower case, `._-` separators).
fn repository(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 255
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
        && !v.starts_with(['/', '.', '-', ':'])
        && !v.ends_with(['/', ':'])
        && !v.contains("//")
}

/// An image tag (OCI distribution spec: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
fn tag(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && !v.starts_with(['.', '-'])
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The checked settings behind the manifests.
struct Checked<'a> {
    ns: &'a str,
    domain: &'a str,
    controller_image: String,
    proxy_image: String,
    pull: &'static str,
    cpu_request: &'a str,
    cpu_limit: Option<&'a str>,
    memory_request: &'a str,
    memory_limit: &'a str,
    volume_size: &'a str,
    storage_class: Option<&'a str>,
    failure_policy: &'static str,
    /// `--default-inbound-policy=…` and, when given, `--cluster-networks=…`,
    /// as controller argument lines.
    policy_args: String,
}

fn check(a: &InstallArgs) -> Result<Checked<'_>, InvalidFlag> {
    if !dns_label(&a.namespace) {
        return Err(invalid(
            "namespace",
            &a.namespace,
            "not a DNS label (a-z, 0-9, '-', at most 63)",
        ));
    }
    if a.namespace == "kube-system" {
        return Err(invalid(
            "namespace",
            &a.namespace,
            "kube-system is the cluster's own; choose a namespace for pimesh",
        ));
    }
    if !dns_subdomain(&a.cluster_domain) {
        return Err(invalid(
            "cluster-domain",
            &a.cluster_domain,
            "not a DNS name",
        ));
    }
    let repo = a
        .image_repository
        .strip_suffix('/')
        .unwrap_or(&a.image_repository);
    if !repository(repo) {
        return Err(invalid(
            "image-repository",
            &a.image_repository,
            "not an image repository (registry/path, lower case)",
        ));
    }
    let version = a
        .image_tag
        .clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    if !tag(&version) {
        return Err(invalid(
            "image-tag",
            &version,
            "not an image tag ([A-Za-z0-9_][A-Za-z0-9._-]*, at most 128)",
        ));
    }
    let quantities = [
        ("controller-cpu-request", Some(&a.controller_cpu_request)),
        ("controller-cpu-limit", a.controller_cpu_limit.as_ref()),
        (
            "controller-memory-request",
            Some(&a.controller_memory_request),
        ),
        ("controller-memory-limit", Some(&a.controller_memory_limit)),
        ("data-volume-size", Some(&a.data_volume_size)),
    ];
    for (flag, v) in quantities {
        if let Some(v) = v {
            if quantity(v).is_none_or(|q| q <= 0.0) {
                return Err(invalid(
                    flag,
                    v,
                    "not a positive Kubernetes quantity (100m, 64Mi, 1Gi ...)",
                ));
            }
        }
    }
    if quantity(&a.controller_memory_request) > quantity(&a.controller_memory_limit) {
        return Err(invalid(
            "controller-memory-request",
            &a.controller_memory_request,
            "above --controller-memory-limit",
        ));
    }
    if let Some(l) = &a.controller_cpu_limit {
        if quantity(&a.controller_cpu_request) > quantity(l) {
            return Err(invalid(
                "controller-cpu-request",
                &a.controller_cpu_request,
                "above --controller-cpu-limit",
            ));
        }
    }
    if let Some(sc) = &a.storage_class {
        if !dns_subdomain(sc) {
            return Err(invalid("storage-class", sc, "not a StorageClass name"));
        }
    }
    let policy: pimesh_api::policy::DefaultPolicy =
        a.default_inbound_policy.parse().map_err(|_| {
            invalid(
                "default-inbound-policy",
                &a.default_inbound_policy,
                "not one of all-unauthenticated, all-authenticated, cluster-unauthenticated, \
             cluster-authenticated, deny, audit",
            )
        })?;
    let mut policy_args = format!("            - --default-inbound-policy={policy}\n");
    if let Some(n) = &a.cluster_networks {
        let nets: pimesh_api::policy::Networks = n.parse().map_err(|_| {
            invalid(
                "cluster-networks",
                n,
                "not CIDRs such as 10.42.0.0/16,10.43.0.0/16 (network addresses, comma-separated)",
            )
        })?;
        policy_args.push_str(&format!("            - --cluster-networks={nets}\n"));
    }
    Ok(Checked {
        ns: &a.namespace,
        domain: &a.cluster_domain,
        controller_image: format!("{repo}/pimesh:{version}"),
        proxy_image: format!("{repo}/pimesh-proxy:{version}"),
        pull: if a.k3s {
            PullPolicy::IfNotPresent.as_str()
        } else {
            a.image_pull_policy.as_str()
        },
        cpu_request: &a.controller_cpu_request,
        cpu_limit: a.controller_cpu_limit.as_deref(),
        memory_request: &a.controller_memory_request,
        memory_limit: &a.controller_memory_limit,
        volume_size: &a.data_volume_size,
        storage_class: a.storage_class.as_deref(),
        policy_args,
        failure_policy: match a.webhook_failure_policy {
            FailurePolicy::Ignore => "Ignore",
            FailurePolicy::Fail => "Fail",
        },
    })
}

const LABELS: &str = "  labels:\n    app.kubernetes.io/part-of: pimesh\n";

/// Every manifest of the control plane (see the module doc), as one YAML
/// stream of `---`-separated documents.
///
/// # Errors
///
/// [`InvalidFlag`] naming the first flag that cannot be used.
pub fn manifests(a: &InstallArgs) -> Result<String, InvalidFlag> {
    let c = check(a)?;
    let ns = c.ns;
    let mut out = if a.k3s {
        format!(
            "# The pimesh {} control plane, generated by `pimesh install --k3s`, for\n\
             # k3s's auto-deploy directory /var/lib/rancher/k3s/server/manifests/\n\
             # (k3s/README.md); its images are imported from the air-gap tarballs.\n",
            env!("CARGO_PKG_VERSION")
        )
    } else {
        format!(
            "# The pimesh {} control plane, generated by `pimesh install`.\n",
            env!("CARGO_PKG_VERSION")
        )
    };
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    \
         app.kubernetes.io/part-of: pimesh\n    {CONTROL_PLANE_LABEL}: \"true\"\n    \
         {ADMISSION_WEBHOOKS_LABEL}: disabled\n"
    );
    out.push_str(&access::documents(ns));
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {DATA_CLAIM}\n  \
         namespace: {ns}\n{LABELS}spec:\n  accessModes: [\"ReadWriteOnce\"]\n{}  resources:\n    \
         requests:\n      storage: {}\n",
        c.storage_class
            .map(|s| format!("  storageClassName: {s}\n"))
            .unwrap_or_default(),
        c.volume_size
    );
    let cpu_limit = c
        .cpu_limit
        .map(|l| format!("              cpu: {l}\n"))
        .unwrap_or_default();
    let _ = write!(
        out,
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {NAME}\n  namespace: {ns}\n  \
         labels:\n    app.kubernetes.io/part-of: pimesh\n    app.kubernetes.io/name: {NAME}\n    \
         app.kubernetes.io/version: {version}\n\
         spec:\n  replicas: 1\n  strategy:\n    type: Recreate\n  selector:\n    matchLabels:\n      \
         app.kubernetes.io/name: {NAME}\n  template:\n    metadata:\n      labels:\n        \
         app.kubernetes.io/part-of: pimesh\n        app.kubernetes.io/name: {NAME}\n    spec:\n      \
         serviceAccountName: {NAME}\n      securityContext:\n        runAsNonRoot: true\n        \
         runAsUser: {CONTROLLER_UID}\n        runAsGroup: {CONTROLLER_UID}\n        fsGroup: {CONTROLLER_UID}\n        \
         seccompProfile:\n          type: RuntimeDefault\n      containers:\n        - name: controller\n          \
         image: {image}\n          imagePullPolicy: {pull}\n          args:\n            - controller\n            \
         - --data-dir={DATA_DIR}\n            - --cluster-domain={domain}\n            \
         - --proxy-image={proxy_image}\n{policy_args}          env:\n            - name: PIMESH_CONTROLLER_NAMESPACE\n              \
         valueFrom:\n                fieldRef:\n                  fieldPath: metadata.namespace\n          \
         ports:\n            - name: proxy-api\n              containerPort: 8086\n            \
         - name: admin\n              containerPort: 8085\n            - name: webhook\n              \
         containerPort: 8443\n          readinessProbe:\n            httpGet:\n              path: /ready\n              \
         port: admin\n            periodSeconds: 5\n          livenessProbe:\n            httpGet:\n              \
         path: /live\n              port: admin\n            periodSeconds: 10\n            failureThreshold: 6\n          \
         resources:\n            requests:\n              cpu: {cpu_req}\n              memory: {mem_req}\n            \
         limits:\n{cpu_limit}              memory: {mem_lim}\n          securityContext:\n            \
         allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n            \
         capabilities:\n              drop: [\"ALL\"]\n          volumeMounts:\n            - name: data\n              \
         mountPath: {DATA_DIR}\n      volumes:\n        - name: data\n          persistentVolumeClaim:\n            \
         claimName: {DATA_CLAIM}\n",
        version = env!("CARGO_PKG_VERSION"),
        image = c.controller_image,
        pull = c.pull,
        domain = c.domain,
        proxy_image = c.proxy_image,
        policy_args = c.policy_args,
        cpu_req = c.cpu_request,
        mem_req = c.memory_request,
        mem_lim = c.memory_limit,
    );
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {NAME}\n  namespace: {ns}\n{LABELS}\
         spec:\n  selector:\n    app.kubernetes.io/name: {NAME}\n  ports:\n    - name: proxy-api\n      \
         port: 8086\n      targetPort: proxy-api\n    - name: admin\n      port: 8085\n      \
         targetPort: admin\n    - name: webhook\n      port: 443\n      targetPort: webhook\n"
    );
    let _ = write!(
        out,
        "---\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\n\
         metadata:\n  name: {WEBHOOK_CONFIGURATION}\n{LABELS}webhooks:\n  - name: {WEBHOOK_NAME}\n    \
         clientConfig:\n      service:\n        name: {NAME}\n        namespace: {ns}\n        \
         path: {path}\n        port: 443\n    failurePolicy: {fp}\n    sideEffects: None\n    \
         admissionReviewVersions: [\"v1\"]\n    timeoutSeconds: 10\n    reinvocationPolicy: Never\n    \
         namespaceSelector:\n      matchExpressions:\n        - key: {ADMISSION_WEBHOOKS_LABEL}\n          \
         operator: NotIn\n          values: [\"disabled\"]\n        - key: kubernetes.io/metadata.name\n          \
         operator: NotIn\n          values: [\"kube-system\"]\n    rules:\n      - operations: [\"CREATE\"]\n        \
         apiGroups: [\"\"]\n        apiVersions: [\"v1\"]\n        resources: [\"pods\"]\n        \
         scope: Namespaced\n",
        path = crate::inject::INJECT_PATH,
        fp = c.failure_policy,
    );
    Ok(out)
}

/// The proxy image `pimesh install` configures the injector with for `a`.
///
/// # Errors
///
/// As [`manifests`].
pub fn proxy_image(a: &InstallArgs) -> Result<String, InvalidFlag> {
    Ok(check(a)?.proxy_image)
}

#[cfg(test)]
#[path = "install/tests.rs"]
mod tests;
