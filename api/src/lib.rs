//! The wire contract between `pimesh-proxy` and the `pimesh` controller:
//! paths, versions and (as the control plane lands) the serde types of the
//! proxy ↔ controller API. No I/O lives here.
//!
//! Layout: everything is in this file until the identity and discovery
//! types arrive (issues on identity and discovery).

/// Version of the proxy ↔ controller API, carried in every path
/// (`/v1/...`). Bumped on any incompatible change.
pub const API_VERSION: &str = "v1";

/// Default proxy-facing (mTLS) port of the controller, as in DESIGN.md.
pub const DEFAULT_CONTROLLER_PROXY_PORT: u16 = 8086;

/// Default operator-facing port of the controller (API, dashboard, `/metrics`).
pub const DEFAULT_CONTROLLER_ADMIN_PORT: u16 = 8085;
