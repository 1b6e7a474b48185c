//! HTTP routes: a request to a service with `HTTPRoute`s (its watch's
//! `routes`) takes the first matching rule in Gateway API's precedence,
//! a backend service picked by weight per request (traffic split), the
//! rule's timeouts and retries; then the backend's own balancer
//! (`balanced`). As Linkerd's outbound policy router: no matching rule
//! answers 404 (linkerd2-proxy's `returns_404_if_no_http_route_matches`),
//! a rule whose weights are all 0 answers 500 (Gateway API), a timeout
//! 504. Backends keep their own discovery watches (bounded as any).
//!
//! Precedence (Gateway API `HTTPRouteRule.matches`): an `Exact` path
//! before a `PathPrefix`, a longer prefix before a shorter, a method match
//! before none, more header matches, then more query parameter matches;
//! ties keep the routes' order (oldest first, from the controller), then
//! rule order.

pub mod table;

use super::balanced;
use super::dst::Dst;
use super::route::{route_name, Route};
use crate::balance::random::random_u64;
use crate::discovery::Discovery;
use crate::http::body::ResponseBody;
use crate::http::error::{respond, Error};
use crate::http::forward::Forward;
use crate::http::headers;
use crate::metrics::RequestLabels;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;
use table::{Pick, RouteTable};

/// Sends `req`, addressed to `parent` (which has `table`), by its routes.
pub async fn forward(
    f: &Forward<'_>,
    d: &Arc<Discovery>,
    parent: Arc<Dst>,
    table: &RouteTable,
    req: Request<Incoming>,
    authority: Option<http::uri::Authority>,
    start: Instant,
) -> Response<ResponseBody> {
    let refuse = |e: Error, req: Request<Incoming>| {
        let mut metrics = f.metrics.request_pending(
            RequestLabels {
                target: parent.labels.clone(),
                authority: f
                    .metrics
                    .authority(authority.as_ref().map_or("", |a| a.as_str())),
            },
            start,
        );
        metrics.tap(req.method(), req.uri());
        respond(metrics, headers::is_grpc(req.headers()), Err(e))
    };
    let Some(rule) = table.find(req.method(), req.uri(), req.headers()) else {
        return refuse(Error::NoRoute(parent.name.clone()), req);
    };
    let dst = match rule.pick(random_u64()) {
        Pick::Parent => parent.clone(),
        Pick::None => return refuse(Error::NoBackend(rule.route.clone()), req),
        Pick::Backend(b) => {
            let port = b.port.unwrap_or(table.port);
            match route_name(d, &b.service, port).await {
                Some(Route::Balanced(dst)) => dst,
                Some(Route::Refuse(r)) => return refuse(Error::from(r), req),
                Some(Route::Passthrough) | None => {
                    return refuse(Error::UnknownService(b.service.clone()), req)
                }
            }
        }
    };
    let policy = rule.policy(&dst.policy);
    balanced::forward(f, dst.clone(), Some(&policy), req, authority, start).await
}
