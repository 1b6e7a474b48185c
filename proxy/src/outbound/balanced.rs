//! Balance: an HTTP request to a balanced service. Upgrades and `CONNECT`
//! go to one picked endpoint, untried again; other requests go through
//! [`retry`](super::retry) (an endpoint per try). The request is counted
//! with the labels of the endpoint that answered last.

use super::dst::{count_transition, Dst};
use super::retry;
use crate::http::body::ResponseBody;
use crate::http::error::respond;
use crate::http::forward::Forward;
use crate::http::headers;
use crate::metrics::RequestLabels;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

/// Sends `req` to `dst` and answers the client; counted with the
/// labels of the endpoint that answered last.
pub async fn forward(
    f: &Forward<'_>,
    dst: Arc<Dst>,
    req: Request<Incoming>,
    authority: Option<http::uri::Authority>,
    start: Instant,
) -> Response<ResponseBody> {
    let is_grpc = headers::is_grpc(req.headers());
    // Counted once an endpoint answered (with its labels), or with the
    // service's labels if the client gives up first.
    let mut metrics = f.ctx.metrics.request_pending(
        RequestLabels {
            target: dst.labels.clone(),
            authority: f
                .ctx
                .metrics
                .authority(authority.as_ref().map_or("", |a| a.as_str())),
        },
        start,
    );
    metrics.tap(req.method(), req.uri());
    if headers::is_upgrade(&req) {
        // Upgrades and CONNECT: one endpoint, no retries.
        let picked = match dst.balancer.pick(None) {
            Ok(p) => p,
            Err(e) => return respond(metrics, is_grpc, Err(dst.pick_error(e))),
        };
        let ep = picked.endpoint.clone();
        let probe = picked.probe;
        let result = f
            .forward(
                req,
                authority.clone(),
                ep.addr,
                ep.mesh.as_ref(),
                &ep.labels,
            )
            .await;
        let t = match &result {
            Ok(r) if r.status().as_u16() < 500 => picked.success(),
            _ => picked.failure(),
        };
        count_transition(&f.ctx.metrics, t, probe);
        metrics.relabel(ep.labels.clone());
        return respond(metrics, is_grpc, result);
    }
    let (result, labels) = retry::send(f, &dst, req, authority.as_ref(), is_grpc).await;
    metrics.relabel(labels);
    respond(metrics, is_grpc, result)
}
