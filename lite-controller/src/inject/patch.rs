//! The injector's decision and its JSON Patch (RFC 6902), pure: a Pod as
//! the AdmissionReview carries it (`serde_json::Value`, the API server's
//! JSON) in, a list of `add` operations out. What is added mirrors
//! Linkerd's proxy injector (`linkerd.io/inject`, `config.linkerd.io/*`):
//!
//! - label `pimesh.io/control-plane-ns: NS` (discovery: a meshed pod) and
//!   annotation `pimesh.io/proxy-version: VERSION`;
//! - init container `pimesh-init` (`pimesh-proxy init`, NET_ADMIN/NET_RAW,
//!   the pod's skip ports), then the proxy `pimesh-proxy` as a native
//!   sidecar (init container with `restartPolicy: Always`, startup probe
//!   `/ready` on 4191), both before the pod's own init containers; with
//!   `config.pimesh.io/proxy-enable-native-sidecar: "false"` (or by
//!   default when the API server predates native sidecars, 1.29:
//!   [`Params::native_sidecars`]) the proxy is the first of `containers`
//!   instead, with a `postStart` hook `pimesh-proxy await` that holds the
//!   next containers back until it is ready, as Linkerd's `linkerd-await`;
//! - volumes: the projected ServiceAccount token (audience
//!   `identity.pimesh.io`, 24 h) and the trust-roots ConfigMap.

use pimesh_api::identity::KUBERNETES_TOKEN_AUDIENCE;
pub use pimesh_api::policy::{DefaultPolicy, Networks};
use serde_json::{json, Map, Value};

/// The annotation (or label) that meshes a namespace or a pod.
pub const INJECT_ANNOTATION: &str = "pimesh.io/inject";
/// The label discovery reads: the pod is meshed by this control plane.
pub const CONTROL_PLANE_NS_LABEL: &str = "pimesh.io/control-plane-ns";
/// The annotation naming the injected proxy's version.
pub const PROXY_VERSION_ANNOTATION: &str = "pimesh.io/proxy-version";
/// The proxy container (native sidecar or first container).
pub const PROXY_CONTAINER: &str = "pimesh-proxy";
/// The init container that programs the pod's iptables rules.
pub const INIT_CONTAINER: &str = "pimesh-init";
/// The proxy's uid (Linkerd's 2102): `pimesh-proxy init` exempts it.
pub const PROXY_UID: u32 = 2102;
/// Inbound (redirected) proxy port.
pub const INBOUND_PORT: u16 = 4143;
/// Outbound (redirected) proxy port.
pub const OUTBOUND_PORT: u16 = 4140;
/// The proxy's admin port (`/ready`, `/metrics`).
pub const ADMIN_PORT: u16 = 4191;
/// The proxy's tap port (never redirected, as the admin port).
pub const TAP_PORT: u16 = 4190;
/// The controller's proxy-facing port.
pub const CONTROLLER_PORT: u16 = 8086;
/// Where the projected token is mounted in the proxy.
pub const TOKEN_DIR: &str = "/var/run/secrets/pimesh.io/serviceaccount";
/// Where the trust roots are mounted in the proxy.
pub const TRUST_ROOTS_DIR: &str = "/var/run/pimesh/identity/trust-roots";
/// The projected token's lifetime (the kubelet renews it at 80 %).
pub const TOKEN_EXPIRATION_SECS: u64 = 86400;
/// Pi-sized proxy resources (the proxy idles at a few MiB and a few
/// millicores on a Pi 4; 64 MiB caps a leak without OOM-killing a busy
/// proxy): requests cpu, memory; limit memory. No CPU limit by default.
pub const DEFAULT_CPU_REQUEST: &str = "10m";
/// See [`DEFAULT_CPU_REQUEST`].
pub const DEFAULT_MEMORY_REQUEST: &str = "16Mi";
/// See [`DEFAULT_CPU_REQUEST`].
pub const DEFAULT_MEMORY_LIMIT: &str = "64Mi";

/// Where pimesh's images are published (`pimesh` and `pimesh-proxy`, tag =
/// the workspace version; images/ builds them).
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/pimesh";

/// The proxy image the injector adds unless `--proxy-image` says otherwise:
/// `ghcr.io/pimesh/pimesh-proxy:<workspace version>`.
pub fn default_proxy_image() -> String {
    format!(
        "{DEFAULT_IMAGE_REPOSITORY}/pimesh-proxy:{}",
        env!("CARGO_PKG_VERSION")
    )
}

const CONFIG: &str = "config.pimesh.io/";
const TOKEN_VOLUME: &str = "pimesh-identity-token";
const TRUST_ROOTS_VOLUME: &str = "pimesh-identity-trust-roots";

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

/// What the injector adds, besides the pod: see [`patch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The controller's namespace (label value, controller address).
    pub controller_ns: String,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--trust-domain`: the SPIFFE trust domain of the controller's CA,
    /// which the proxies must use too (`PIMESH_PROXY_TRUST_DOMAIN`).
    pub trust_domain: String,
    /// `--proxy-image`.
    pub proxy_image: String,
    /// The proxy as a native sidecar unless a pod says otherwise: the API
    /// server is 1.29 or newer (the controller asks at start).
    pub native_sidecars: bool,
    /// `--default-inbound-policy`: the cluster's default inbound policy,
    /// unless the pod or its namespace names one
    /// ([`DEFAULT_INBOUND_POLICY_ANNOTATION`]).
    pub default_inbound_policy: DefaultPolicy,
    /// `--cluster-networks`: what the `cluster-*` policies admit.
    pub cluster_networks: Networks,
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

/// The proxy binary's path in its image (images/build.sh).
pub const PROXY_BINARY: &str = "/pimesh-proxy";

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
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

/// The JSON Patch that records on a skipped pod why it was skipped
/// (annotation [`SKIPPED_ANNOTATION`]).
pub fn skipped(pod: &Value, why: Skip) -> Vec<Value> {
    let mut ops = Vec::new();
    if !pod["metadata"].is_object() {
        ops.push(add("/metadata", json!({})));
    }
    add_entries(
        &mut ops,
        pod,
        "annotations",
        &[(SKIPPED_ANNOTATION, why.reason().to_string())],
    );
    ops
}

/// A JSON Pointer token: `~` → `~0`, `/` → `~1` (RFC 6901).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn config<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    str_at(
        &pod["metadata"],
        &["annotations", &format!("{CONFIG}{key}")],
    )
    .map(str::trim)
    .filter(|v| !v.is_empty())
}

/// A port list as `pimesh-proxy init` takes it (`25,3306,8000-8100`),
/// spaces removed; `None` when an item is not a port or a range.
fn port_list(v: &str) -> Option<String> {
    let port = |s: &str| s.parse::<u16>().ok().filter(|p| *p > 0);
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let ok = items.iter().all(|i| match i.split_once('-') {
        Some((a, b)) => matches!((port(a.trim()), port(b.trim())), (Some(a), Some(b)) if a <= b),
        None => port(i).is_some(),
    });
    (ok && !items.is_empty()).then(|| items.join(",").replace(' ', ""))
}

/// A Kubernetes quantity's value (`10m`, `64Mi`, `1.5`, `2G`), or `None`.
pub(crate) fn quantity(v: &str) -> Option<f64> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (n, suffix) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    let k = 1024f64;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => k,
        "Mi" => k * k,
        "Gi" => k * k * k,
        "Ti" => k * k * k * k,
        _ => return None,
    };
    Some(n * mult)
}

/// `resources` of the proxy: the defaults, each replaced by its valid
/// `config.pimesh.io/proxy-{cpu,memory}-{request,limit}` annotation; a
/// memory request above the default limit (no limit annotation) raises
/// the limit to it, so that the pod stays valid.
fn resources(pod: &Value) -> Value {
    let get = |key: &str, default: Option<&str>| -> Option<String> {
        match config(pod, key) {
            Some(v) if quantity(v).is_some() => Some(v.to_string()),
            Some(v) => {
                tracing::warn!(annotation = %format!("{CONFIG}{key}"), value = v, "not a quantity; ignored");
                default.map(str::to_string)
            }
            None => default.map(str::to_string),
        }
    };
    let cpu_req = get("proxy-cpu-request", Some(DEFAULT_CPU_REQUEST));
    let mem_req = get("proxy-memory-request", Some(DEFAULT_MEMORY_REQUEST));
    let cpu_lim = get("proxy-cpu-limit", None);
    let mut mem_lim = get("proxy-memory-limit", Some(DEFAULT_MEMORY_LIMIT));
    let q = |s: &Option<String>| s.as_deref().and_then(quantity);
    if config(pod, "proxy-memory-limit").is_none() && q(&mem_req) > q(&mem_lim) {
        mem_lim = mem_req.clone();
    }
    let obj = |pairs: [(&str, Option<String>); 2]| -> Value {
        let m: Map<String, Value> = pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), Value::String(v))))
            .collect();
        Value::Object(m)
    };
    json!({
        "requests": obj([("cpu", cpu_req), ("memory", mem_req)]),
        "limits": obj([("cpu", cpu_lim), ("memory", mem_lim)]),
    })
}

/// `PIMESH_PROXY_WORKLOAD_LABELS`: namespace, pod (`$(_pod_name)`: a
/// ReplicaSet's pod has no name yet at admission), and the controlling
/// owner as discovery labels it (`deployment=` for a ReplicaSet named
/// `<deployment>-<pod-template-hash>`), else the owner's kind, lower case.
fn workload_labels(pod: &Value, ns: &str) -> String {
    let mut out = format!("namespace={ns},pod=$(_pod_name)");
    let owners: Vec<(&str, &str, bool)> = pod["metadata"]["ownerReferences"]
        .as_array()
        .map(|os| {
            os.iter()
                .filter_map(|o| {
                    Some((
                        o["kind"].as_str()?,
                        o["name"].as_str()?,
                        o["controller"] == true,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let hash = str_at(&pod["metadata"], &["labels", "pod-template-hash"]);
    let owner = crate::kube::objects::owner_label(&owners, hash)
        .map(|(k, n)| (k.to_string(), n))
        .or_else(|| {
            let (kind, name, _) = owners.iter().find(|o| o.2).or_else(|| owners.first())?;
            let kind = kind.to_ascii_lowercase();
            kind.chars()
                .all(|c| c.is_ascii_lowercase())
                .then(|| (kind, name.to_string()))
        });
    if let Some((kind, name)) = owner {
        out.push_str(&format!(",{kind}={name}"));
    }
    out
}

/// `PIMESH_PROXY_POD_LABELS`: the pod's labels at admission, with the
/// one this patch adds (`K=V,…`, `pimesh_api::policy::inbound::
/// labels_to_string`), which its inbound-policy stream matches Servers'
/// `podSelector`s against. Labels added to the pod later are not seen
/// (the proxy's environment is fixed at admission).
fn pod_labels(pod: &Value, p: &Params) -> String {
    let mut labels: std::collections::BTreeMap<String, String> = pod["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    labels.insert(CONTROL_PLANE_NS_LABEL.to_string(), p.controller_ns.clone());
    pimesh_api::policy::inbound::labels_to_string(&labels)
}

/// `PIMESH_PROXY_POD_PORTS`: the named TCP `containerPort`s of the pod's
/// containers (`NAME=PORT,…`, by name), which a Server's named `port`
/// selects (as Linkerd's policy controller resolves it); `None` when the
/// pod names none.
fn pod_ports(pod: &Value) -> Option<String> {
    let mut ports = std::collections::BTreeMap::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            let tcp = p["protocol"].as_str().is_none_or(|pr| pr == "TCP");
            if let (Some(name), Some(port), true) =
                (p["name"].as_str(), p["containerPort"].as_u64(), tcp)
            {
                ports.insert(name.to_string(), port.to_string());
            }
        }
    }
    (!ports.is_empty()).then(|| pimesh_api::policy::inbound::labels_to_string(&ports))
}

fn env(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})
}

/// The proxy container (`native`: with `restartPolicy: Always`).
fn proxy_container(
    pod: &Value,
    ns: &str,
    ns_meta: Option<&Value>,
    p: &Params,
    native: bool,
) -> Value {
    let mut envs = vec![
        field_env("_pod_ns", "metadata.namespace"),
        field_env("_pod_sa", "spec.serviceAccountName"),
        field_env("_pod_name", "metadata.name"),
        field_env("_pod_ip", "status.podIP"),
        env(
            "PIMESH_PROXY_CONTROLLER_ADDR",
            format!(
                "{}.{}.svc.{}:{CONTROLLER_PORT}",
                crate::kube::access::NAME,
                p.controller_ns,
                p.cluster_domain
            ),
        ),
        env(
            "PIMESH_PROXY_TRUST_ANCHORS",
            format!(
                "{TRUST_ROOTS_DIR}/{}",
                crate::kube::identity::TRUST_ROOTS_KEY
            ),
        ),
        env("PIMESH_PROXY_TOKEN_FILE", format!("{TOKEN_DIR}/token")),
        env("PIMESH_PROXY_TRUST_DOMAIN", p.trust_domain.clone()),
        env("PIMESH_PROXY_IDENTITY", "$(_pod_ns)/$(_pod_sa)"),
        env("PIMESH_PROXY_WORKLOAD_LABELS", workload_labels(pod, ns)),
        env("PIMESH_PROXY_POD_LABELS", pod_labels(pod, p)),
        env(
            "PIMESH_PROXY_INBOUND_LISTEN_ADDR",
            format!("0.0.0.0:{INBOUND_PORT}"),
        ),
        env(
            "PIMESH_PROXY_ADMIN_LISTEN_ADDR",
            format!("0.0.0.0:{ADMIN_PORT}"),
        ),
        env(
            "PIMESH_PROXY_INBOUND_DEFAULT_POLICY",
            inbound_policy(pod, ns_meta, p).as_str(),
        ),
        env(
            "PIMESH_PROXY_POLICY_CLUSTER_NETWORKS",
            p.cluster_networks.to_string(),
        ),
    ];
    if let Some(v) = pod_ports(pod) {
        envs.push(env("PIMESH_PROXY_POD_PORTS", v));
    }
    if let Some(v) = config(pod, "opaque-ports") {
        envs.push(env("PIMESH_PROXY_OPAQUE_PORTS", v));
    }
    if let Some(v) = config(pod, "proxy-log-level") {
        envs.push(env("PIMESH_PROXY_LOG", v));
    }
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": p.proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "pimesh-proxy", "containerPort": INBOUND_PORT, "protocol": "TCP"},
            {"name": "pimesh-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "env": envs,
        "startupProbe": {
            "httpGet": {"path": "/ready", "port": ADMIN_PORT},
            "periodSeconds": 1,
            "failureThreshold": 120,
        },
        "resources": resources(pod),
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": TRUST_ROOTS_VOLUME, "mountPath": TRUST_ROOTS_DIR, "readOnly": true},
        ],
    });
    if native {
        c["restartPolicy"] = json!("Always");
    } else {
        // The kubelet starts the next container once this returns.
        c["lifecycle"] = json!({"postStart": {"exec": {"command": [
            PROXY_BINARY, "await", "--timeout", "2m",
        ]}}});
    }
    c
}

/// The init container: `pimesh-proxy init` with the pod's skip ports.
fn init_container(pod: &Value, p: &Params) -> Value {
    let mut inbound = format!("{TAP_PORT},{ADMIN_PORT}");
    if let Some(v) = config(pod, "skip-inbound-ports").and_then(port_list) {
        inbound = format!("{inbound},{v}");
    }
    let mut args: Vec<String> = [
        "init",
        "--incoming-proxy-port",
        &INBOUND_PORT.to_string(),
        "--outgoing-proxy-port",
        &OUTBOUND_PORT.to_string(),
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--inbound-ports-to-ignore",
        &inbound,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(v) = config(pod, "skip-outbound-ports").and_then(port_list) {
        args.extend(["--outbound-ports-to-ignore".to_string(), v]);
    }
    json!({
        "name": INIT_CONTAINER,
        "image": p.proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "securityContext": {
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]},
            "runAsUser": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
        },
    })
}

fn volumes() -> [Value; 2] {
    [
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": KUBERNETES_TOKEN_AUDIENCE,
            "expirationSeconds": TOKEN_EXPIRATION_SECS,
            "path": "token",
        }}]}}),
        json!({"name": TRUST_ROOTS_VOLUME, "configMap": {"name": crate::kube::identity::TRUST_ROOTS_CONFIGMAP}}),
    ]
}

fn add(path: impl Into<String>, value: Value) -> Value {
    json!({"op": "add", "path": path.into(), "value": value})
}

/// `add`s of `entries` to the object at `/metadata/<field>`, creating it
/// when the pod has none.
fn add_entries(ops: &mut Vec<Value>, pod: &Value, field: &str, entries: &[(&str, String)]) {
    if pod["metadata"][field].is_object() {
        for (k, v) in entries {
            ops.push(add(format!("/metadata/{field}/{}", escape(k)), json!(v)));
        }
    } else {
        let m: Map<String, Value> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        ops.push(add(format!("/metadata/{field}"), Value::Object(m)));
    }
}

/// The JSON Patch that meshes `pod` in namespace `ns` (see the module
/// doc), as `[{"op":"add","path":…,"value":…}, …]`. Call only when
/// [`decide`] (or [`namespace_decides`]) says [`Decision::Inject`].
/// The namespace is not known here: [`patch_in_namespace`] takes its
/// default inbound policy into account.
pub fn patch(pod: &Value, ns: &str, p: &Params) -> Vec<Value> {
    patch_in_namespace(pod, ns, None, p)
}

/// [`patch`] for a pod of the namespace whose metadata (`{labels,
/// annotations}`) is `ns_meta`: its default inbound policy applies to pods
/// that name none.
pub fn patch_in_namespace(
    pod: &Value,
    ns: &str,
    ns_meta: Option<&Value>,
    p: &Params,
) -> Vec<Value> {
    let mut ops = Vec::new();
    if !pod["metadata"].is_object() {
        ops.push(add("/metadata", json!({})));
    }
    add_entries(
        &mut ops,
        pod,
        "labels",
        &[(CONTROL_PLANE_NS_LABEL, p.controller_ns.clone())],
    );
    add_entries(
        &mut ops,
        pod,
        "annotations",
        &[(
            PROXY_VERSION_ANNOTATION,
            env!("CARGO_PKG_VERSION").to_string(),
        )],
    );
    let native = match config(pod, "proxy-enable-native-sidecar") {
        Some("false") => false,
        Some("true") => true,
        _ => p.native_sidecars,
    };
    let init = init_container(pod, p);
    let proxy = proxy_container(pod, ns, ns_meta, p, native);
    let mut inits = vec![init];
    if native {
        inits.push(proxy.clone());
    }
    if pod["spec"]["initContainers"].is_array() {
        for (i, c) in inits.into_iter().enumerate() {
            ops.push(add(format!("/spec/initContainers/{i}"), c));
        }
    } else {
        ops.push(add("/spec/initContainers", Value::Array(inits)));
    }
    if !native {
        if pod["spec"]["containers"].is_array() {
            ops.push(add("/spec/containers/0", proxy));
        } else {
            ops.push(add("/spec/containers", json!([proxy])));
        }
    }
    if pod["spec"]["volumes"].is_array() {
        for v in volumes() {
            ops.push(add("/spec/volumes/-", v));
        }
    } else {
        ops.push(add("/spec/volumes", Value::Array(volumes().to_vec())));
    }
    ops
}

#[cfg(test)]
#[path = "patch_tests.rs"]
mod tests;
