//! What the injector's patch is made of: the names, ports and defaults
//! it writes (Linkerd's, under `pimesh.io`), its [`Params`], and how a
//! pod's `config.pimesh.io/*` annotations are read.

use pimesh_api::policy::{DefaultPolicy, Networks};
use serde_json::Value;

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

pub(super) const CONFIG: &str = "config.pimesh.io/";
pub(super) const TOKEN_VOLUME: &str = "pimesh-identity-token";
pub(super) const TRUST_ROOTS_VOLUME: &str = "pimesh-identity-trust-roots";

/// What the injector adds, besides the pod: see `super::patch`.
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
    /// (`DEFAULT_INBOUND_POLICY_ANNOTATION`).
    pub default_inbound_policy: DefaultPolicy,
    /// `--cluster-networks`: what the `cluster-*` policies admit.
    pub cluster_networks: Networks,
}

/// The proxy binary's path in its image (images/build.sh).
pub const PROXY_BINARY: &str = "/pimesh-proxy";

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

pub(super) fn config<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    str_at(
        &pod["metadata"],
        &["annotations", &format!("{CONFIG}{key}")],
    )
    .map(str::trim)
    .filter(|v| !v.is_empty())
}
