//! The policy resources on the operator port (`pimesh apply -f`, `pimesh
//! delete -f`, `pimesh policy ls`). Changes only from loopback, as every
//! change here; in Kubernetes mode the API server keeps them (`kubectl
//! apply`), so changes are refused with 409 and the list shows the
//! watched resources.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/policies` | `[PolicyStatus]`: every resource the streams serve, applied or not and why |
//! | `POST /v1/policies` | one resource (JSON) → [`ApplyResult`] (201 created, 200 configured or unchanged; 422 invalid, naming the field) |
//! | `DELETE /v1/policies/{ns}/{kind}/{name}` | → [`ApplyResult`] `deleted` (404 unknown) |

use crate::policy::snapshot::Snapshots;
use crate::policy::stored::{ApplyError, Policies};
use crate::registry::Registry;
use crate::rest::{self, Body};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The list and the resource to apply.
pub const POLICIES_PATH: &str = "/v1/policies";

/// What a change did, kubectl's way (`server.policy.pimesh.io/api-http created`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// `Kind NAMESPACE/NAME`.
    pub resource: String,
    /// `created`, `configured`, `unchanged` or `deleted`.
    pub result: String,
}

/// Whether `path` is served here.
pub fn owns(path: &str) -> bool {
    path == POLICIES_PATH || path.starts_with("/v1/policies/")
}

/// Every resource of the streams' latest snapshot and whether it takes
/// effect; an `HTTPRoute` naming a Service (port) the registry does not
/// have is not applied.
fn list(snapshots: &Snapshots, registry: &Registry) -> Vec<crate::policy::index::PolicyStatus> {
    let snapshot = snapshots.latest();
    let mut list = crate::policy::index::statuses(&snapshot.resources);
    crate::policy::outbound::mark_unregistered(&mut list, &snapshot.resources, |ns, name, port| {
        registry.has_service(ns, name, port)
    });
    list
}

fn store_failed(e: impl std::fmt::Display) -> Response<Body> {
    rest::error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string())
}

/// Serves one request on a path [`owns`] says is ours: changes go to
/// `policies` (`kube_mode` refuses them), the list comes from `snapshots`
/// (what the proxies' streams serve, in either mode); `registry` tells
/// which Services an `HTTPRoute` names exist.
pub async fn handle(
    policies: &Arc<Policies>,
    snapshots: &Snapshots,
    registry: &Registry,
    kube_mode: bool,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if kube_mode && method != Method::GET {
        return rest::error(
            StatusCode::CONFLICT,
            "kubernetes_mode",
            "in Kubernetes mode policies are resources of the API server: use kubectl apply -f / kubectl delete -f",
        );
    }
    let p = policies.clone();
    if path == POLICIES_PATH {
        return match method {
            Method::GET => rest::json(StatusCode::OK, &list(snapshots, registry)),
            Method::POST => {
                let doc = match rest::read_json::<serde_json::Value, _>(req).await {
                    Ok(d) => d,
                    Err(e) => return e.response(),
                };
                match tokio::task::spawn_blocking(move || p.apply(doc)).await {
                    Ok(Ok((r, applied))) => {
                        let result = serde_json::to_value(applied)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        let status = if result == "created" {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        };
                        let resource = r.to_string();
                        rest::json(status, &ApplyResult { resource, result })
                    }
                    Ok(Err(ApplyError::Invalid(e))) => {
                        rest::error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
                    }
                    Ok(Err(e)) => store_failed(crate::error_chain(&e)),
                    Err(e) => store_failed(e),
                }
            }
            _ => rest::method_not_allowed(),
        };
    }
    let rest_path = path.strip_prefix("/v1/policies/").unwrap_or_default();
    let [ns, kind, name] = rest_path.split('/').collect::<Vec<_>>()[..] else {
        return rest::not_found();
    };
    if method != Method::DELETE {
        return rest::method_not_allowed();
    }
    let resource = format!("{kind} {ns}/{name}");
    let (ns, kind, name) = (ns.to_string(), kind.to_string(), name.to_string());
    match tokio::task::spawn_blocking(move || p.delete(&kind, &ns, &name)).await {
        Ok(Ok(true)) => rest::json(
            StatusCode::OK,
            &ApplyResult {
                resource,
                result: "deleted".into(),
            },
        ),
        Ok(Ok(false)) => rest::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{resource} not found"),
        ),
        Ok(Err(e)) => store_failed(crate::error_chain(&e)),
        Err(e) => store_failed(e),
    }
}
