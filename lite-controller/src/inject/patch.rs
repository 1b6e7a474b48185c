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
//!
//! Layout: `params` (names, ports, defaults, [`Params`]), `decide` (whether
//! a pod is meshed, its default inbound policy), `containers` (what is
//! added), this file (the patch's operations).

pub use pimesh_api::policy::{DefaultPolicy, Networks};
use serde_json::{json, Map, Value};

mod containers;
mod decide;
mod params;

#[cfg(test)]
use containers::port_list;
pub(crate) use containers::quantity;
use containers::{init_container, proxy_container, volumes};
pub use decide::*;
use params::config;
pub use params::*;

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
