//! `pimesh-controller`: pimesh's control plane in one process (`pimesh
//! controller`) and the operator CLI. See DESIGN.md "The control plane"
//! and ARCHITECTURE.md.
//!
//! Layout:
//! - `config`: the controller's `Config`, from flags with `PIMESH_CONTROLLER_*` fallbacks.
//! - `server`: start-up (builds each part's `Ctx` and hands it over), the
//!   controller's own certificate, shutdown. Only it imports the listeners.
//! - `proxy_api`: the proxy-facing port (8086): HTTP/2 over TLS 1.3, certify,
//!   endpoint registration, discovery watches.
//! - `admin`: the operator port (8085): metrics, probes, tokens, CA, rotation,
//!   services.
//! - `cert_slot`: a serving certificate swapped in place on renewal.
//! - `rest`: JSON responses, `ApiError`s, size-limited bodies.
//! - `identity`: the CA: trust anchors, issuer, rotation, CSRs, leaves,
//!   issued-serial records.
//! - `registry`: the discovery role: the service registry (sled), leases,
//!   revisions, watch streams.
//! - `kube`: Kubernetes mode: discovery from Services, EndpointSlices and
//!   Pods, TokenReview, the trust-roots ConfigMap, RBAC rules and checks.
//! - `inject`: Kubernetes mode's proxy injector (mutating admission
//!   webhook): the decision, the JSON Patch, the HTTPS listener.
//! - `install`: `pimesh install`'s manifests (k3s/pimesh.yaml).
//! - `policy`: the policy.pimesh.io resources (Server, AuthorizationPolicy,
//!   MeshTLSAuthentication, NetworkAuthentication, HTTPLocalRateLimitPolicy),
//!   their validation and CRDs (k3s/pimesh-crds.yaml).
//! - `token`: join tokens (standalone mode) and their operator API types.
//! - `store`: the sled database (the only module that knows sled).
//! - `metrics`: `pimesh_controller_*` series.
//! - `tap`: relays proxies' tap streams to operators (`pimesh tap`, `top`).
//! - `crypto`: SHA-256, random bytes, hex, constant-time comparison (ring).
//! - `telemetry`: scrapes proxies' `/metrics`; `stat`, `edges`, history,
//!   the dashboard, the `pimesh_workload_*` re-export.
//! - `client`, `cli`: the operator CLI (`pimesh token`, `pimesh identity`,
//!   `pimesh service`, `pimesh stat`, `pimesh edges`, `pimesh tap`,
//!   `pimesh top`, `pimesh dashboard`).

pub mod admin;
pub mod cert_slot;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod identity;
pub mod inject;
pub mod install;
pub mod kube;
pub mod metrics;
pub mod policy;
pub mod proxy_api;
pub mod registry;
pub mod rest;
pub mod server;
pub mod store;
pub mod tap;
pub mod telemetry;
pub mod token;

pub use pimesh_api::text::error_chain;
