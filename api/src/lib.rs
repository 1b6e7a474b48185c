//! The wire contract between `pimesh-proxy` and the `pimesh` controller:
//! paths, versions, and the serde types of the proxy ↔ controller API
//! (HTTP/2 over mTLS, JSON bodies). No network or file I/O lives here.
//!
//! Layout:
//! - `identity`: identities (`NAMESPACE/SERVICEACCOUNT`, SPIFFE IDs, the
//!   DNS-style names in certificates) and the certify API.
//! - `discovery`: service names, endpoint registration with leases, and
//!   the watch API that resolves names and addresses to endpoint sets.
//! - `policy`: inbound authorization: Linkerd's default policies, the
//!   per-port `Server` policy streamed to proxies (`policy::inbound`), and
//!   the networks (CIDRs) they name.
//! - `tap`: the live request-metadata stream of proxies and its relay.
//! - `query`: decoding the query values of the API's `GET` routes.
//! - `env`: where configuration values come from (the process
//!   environment, a map in tests).
//! - `text`: durations and error chains, read and written the same way by
//!   every binary.

pub mod discovery;
pub mod env;
pub mod identity;
pub mod policy;
pub mod query;
pub mod tap;
pub mod text;

/// Version of the proxy ↔ controller API, carried in every path
/// (`/v1/...`). Bumped on any incompatible change.
pub const API_VERSION: &str = "v1";

/// Default proxy-facing (mTLS) port of the controller, as in DESIGN.md.
pub const DEFAULT_CONTROLLER_PROXY_PORT: u16 = 8086;

/// Default operator-facing port of the controller (API, dashboard, `/metrics`).
pub const DEFAULT_CONTROLLER_ADMIN_PORT: u16 = 8085;

/// Default trust domain, as Kubernetes' and Linkerd's `cluster.local`.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The body of every non-2xx answer of the controller's APIs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    /// A stable machine-readable reason, e.g. `invalid_token`,
    /// `token_expired`, `token_revoked`, `identity_not_allowed`, `bad_csr`,
    /// `bad_request`.
    pub error: String,
    /// A human-readable explanation.
    pub message: String,
}
