//! The containers and volumes the injector adds: the proxy (its
//! environment from the pod and `Params`, its resources from the
//! `config.pimesh.io/proxy-*` annotations), the `pimesh-init` container
//! and the identity volumes.

use super::decide::inbound_policy;
use super::params::{
    config, str_at, Params, ADMIN_PORT, CONFIG, CONTROLLER_PORT, CONTROL_PLANE_NS_LABEL,
    DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_LIMIT, DEFAULT_MEMORY_REQUEST, INBOUND_PORT,
    INIT_CONTAINER, OUTBOUND_PORT, PROXY_BINARY, PROXY_CONTAINER, PROXY_UID, TAP_PORT, TOKEN_DIR,
    TOKEN_EXPIRATION_SECS, TOKEN_VOLUME, TRUST_ROOTS_DIR, TRUST_ROOTS_VOLUME,
};
use pimesh_api::identity::KUBERNETES_TOKEN_AUDIENCE;
use serde_json::{json, Map, Value};

/// A port list as `pimesh-proxy init` takes it (`25,3306,8000-8100`),
/// spaces removed; `None` when an item is not a port or a range.
pub(super) fn port_list(v: &str) -> Option<String> {
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
pub(super) fn proxy_container(
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
pub(super) fn init_container(pod: &Value, p: &Params) -> Value {
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

pub(super) fn volumes() -> [Value; 2] {
    [
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": KUBERNETES_TOKEN_AUDIENCE,
            "expirationSeconds": TOKEN_EXPIRATION_SECS,
            "path": "token",
        }}]}}),
        json!({"name": TRUST_ROOTS_VOLUME, "configMap": {"name": crate::kube::identity::TRUST_ROOTS_CONFIGMAP}}),
    ]
}
