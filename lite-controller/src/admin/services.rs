//! The registry on the operator port (`pimesh service ...`, the telemetry
//! role's scrape list). Changes only from loopback, as every change here.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/services[?namespace=NS]` | `[ServiceInfo]`: services with endpoints and policy |
//! | `GET /v1/services/{ns}/{name}` | [`ServiceInfo`](crate::registry::model::ServiceInfo) (404 unknown) |
//! | `POST /v1/services/{ns}/{name}/endpoints` | [`AddEndpoints`] → `ServiceInfo` (creates the service) |
//! | `DELETE /v1/services/{ns}/{name}[?endpoint=IP:PORT...]` | removes the service, or those endpoints → `ServiceInfo` |
//! | `PUT /v1/services/{ns}/{name}/policy` | [`SetPolicy`] → `ServiceInfo` (404 unknown) |
//! | `GET /v1/endpoints` | `[LiveEndpoint]`: every endpoint with its service, identity, labels, `admin_addr` |

use super::reply::blocking;
use crate::registry::model::{AddEndpoints, SetPolicy};
use crate::registry::{validate, Registry};
use crate::rest::{self, Body};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use pimesh_api::query::percent_decode;
use std::net::SocketAddr;
use std::sync::Arc;

/// The list of services.
pub const SERVICES_PATH: &str = "/v1/services";
/// The flat list of endpoints.
pub const ENDPOINTS_LIST_PATH: &str = "/v1/endpoints";

/// Whether `path` is served here.
pub fn owns(path: &str) -> bool {
    path == SERVICES_PATH || path == ENDPOINTS_LIST_PATH || path.starts_with("/v1/services/")
}

fn bad_request(message: impl Into<String>) -> Response<Body> {
    rest::error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// The decoded values of `key` in `query`.
fn params(query: Option<&str>, key: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            out.push(percent_decode(v).ok_or_else(|| format!("bad encoding of {k}"))?);
        }
    }
    Ok(out)
}

/// Serves one request on a path [`owns`] says is ours.
pub async fn handle(registry: &Arc<Registry>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    if path == ENDPOINTS_LIST_PATH {
        return match method {
            Method::GET => rest::json(StatusCode::OK, &registry.endpoints()),
            _ => rest::method_not_allowed(),
        };
    }
    if path == SERVICES_PATH {
        if method != Method::GET {
            return rest::method_not_allowed();
        }
        let ns = match params(query.as_deref(), "namespace") {
            Ok(mut v) if v.len() <= 1 => v.pop(),
            Ok(_) => return bad_request("namespace given twice"),
            Err(e) => return bad_request(e),
        };
        return rest::json(StatusCode::OK, &registry.services(ns.as_deref()));
    }
    let rest_path = path.strip_prefix("/v1/services/").unwrap_or_default();
    let segs: Vec<&str> = rest_path.split('/').collect();
    let (ns, name, sub) = match segs.as_slice() {
        [ns, name] => (ns.to_string(), name.to_string(), None),
        [ns, name, sub @ ("endpoints" | "policy")] => {
            (ns.to_string(), name.to_string(), Some(*sub))
        }
        _ => return rest::not_found(),
    };
    if let Err(e) = validate::label("namespace", &ns).and_then(|()| validate::label("name", &name))
    {
        return bad_request(e.to_string());
    }
    match (method, sub) {
        (Method::GET, None) => match registry.service(&ns, &name) {
            Some(s) => rest::json(StatusCode::OK, &s),
            None => rest::error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no service {ns}/{name}"),
            ),
        },
        (Method::DELETE, None) => {
            let addrs = match params(query.as_deref(), "endpoint").and_then(|v| {
                v.iter()
                    .map(|a| {
                        a.parse::<SocketAddr>()
                            .map_err(|_| format!("{a:?} is not an IP:PORT address"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            }) {
                Ok(a) => a,
                Err(e) => return bad_request(e),
            };
            blocking(registry, move |reg, _| reg.remove(&ns, &name, &addrs)).await
        }
        (Method::POST, Some("endpoints")) => match rest::read_json::<AddEndpoints, _>(req).await {
            Ok(r) => blocking(registry, move |reg, _| reg.add_endpoints(&ns, &name, &r)).await,
            Err(e) => e.response(),
        },
        (Method::PUT, Some("policy")) => match rest::read_json::<SetPolicy, _>(req).await {
            Ok(r) => blocking(registry, move |reg, _| reg.set_policy(&ns, &name, &r)).await,
            Err(e) => e.response(),
        },
        _ => rest::method_not_allowed(),
    }
}
