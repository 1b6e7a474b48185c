//! Balance: an HTTP request to a balanced service, an endpoint per try
//! (p2c), the service's timeouts, retries (`retry`: which, and the budget),
//! circuit breaking. Upgrades and `CONNECT` go to one picked endpoint,
//! untried again. The request is counted with the labels of the endpoint
//! that answered last.
//!
//! A try that cannot connect is sent to another endpoint (nothing was
//! sent: always safe). A try that failed after sending — a retryable
//! status (`retry_http`, trailers-only `grpc-status` in `retry_grpc`), a
//! per-try timeout, or an error from the endpoint — is retried when the
//! request may be (idempotent method, gRPC, or `retry_non_idempotent`),
//! its body is replayable (at most 64 KiB), the limit is not reached and
//! the budget allows; otherwise the client gets what the try got (the
//! 5xx, or 504 / 502). Every try's outcome feeds its endpoint's breaker.
//! Timeouts run until the response head.

use super::dst::{count_transition, Dst};
use super::policy::Policy;
use super::retry::MAX_REPLAY_BYTES;
use crate::balance::Endpoint;
use crate::connect::pool::Ready;
use crate::http::body::{Inner, ResponseBody};
use crate::http::error::{respond, Error};
use crate::http::forward::Forward;
use crate::http::headers;
use crate::http::orig_proto;
use crate::http::replay::ReqBody;
use crate::metrics::{RequestLabels, TargetLabels};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Endpoints tried per request when connecting fails.
const MAX_FAILOVERS: u32 = 3;

/// What a request's tries are made of (the request minus its body).
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

/// Sends `req` to `dst` with `policy` (a route rule's; `None`: the
/// service's own) and answers the client; counted with the labels of the
/// endpoint that answered last.
pub async fn forward(
    f: &Forward<'_>,
    dst: Arc<Dst>,
    policy: Option<&Policy>,
    req: Request<Incoming>,
    authority: Option<http::uri::Authority>,
    start: Instant,
) -> Response<ResponseBody> {
    let is_grpc = headers::is_grpc(req.headers());
    // Counted once an endpoint answered (with its labels), or with the
    // service's labels if the client gives up first.
    let mut metrics = f.metrics.request_pending(
        RequestLabels {
            target: dst.labels.clone(),
            authority: f
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
        count_transition(f.metrics, t, probe);
        metrics.relabel(ep.labels.clone());
        return respond(metrics, is_grpc, result);
    }
    let policy = policy.unwrap_or(&dst.policy);
    let (result, labels) = send(f, &dst, policy, req, authority.as_ref(), is_grpc).await;
    metrics.relabel(labels);
    respond(metrics, is_grpc, result)
}

/// Sends `req` to `dst` with `policy`, a try per endpoint; the result and the labels
/// of the endpoint of the last try.
async fn send(
    f: &Forward<'_>,
    dst: &Dst,
    policy: &Policy,
    req: Request<Incoming>,
    authority: Option<&http::uri::Authority>,
    is_grpc: bool,
) -> (Result<Response<Inner>, Error>, TargetLabels) {
    let may_retry = policy.may_retry(req.method(), is_grpc);
    let explicit = f.explicit;
    let (clients, try_metrics) = (f.clients, f.metrics);
    let (parts, body) = req.into_parts();
    let mut head = Head {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
    };
    headers::strip_hop_by_hop(&mut head.headers, false, explicit);
    let body = if may_retry {
        ReqBody::replayable(body, MAX_REPLAY_BYTES)
    } else {
        ReqBody::Stream(body)
    };
    let replayer = body.replayer();
    if policy.retry_limit > 0 {
        policy.deposit();
    }
    let deadline = policy.timeout.map(|t| (Instant::now() + t, t));
    let metrics = try_metrics.outbound();
    let mut next = Some(body);
    let mut head = Some(head);
    let (mut retries, mut failovers) = (0u32, 0u32);
    let mut avoid: Option<Arc<Endpoint>> = None;
    let mut labels = dst.labels.clone();
    loop {
        let Some(body) = next.take() else {
            return (Err(Error::NoTarget), labels);
        };
        let mut picked = match dst.balancer.pick(avoid.as_ref()) {
            Ok(p) => p,
            Err(e) => return (Err(dst.pick_error(e)), labels),
        };
        let probe = picked.probe;
        let ep = picked.endpoint.clone();
        labels = ep.labels.clone();
        let left = |d: Option<(Instant, Duration)>| {
            d.map(|(at, _)| at.saturating_duration_since(Instant::now()))
        };
        // Connect first: a failure here sent nothing.
        let version = head.as_ref().map_or(Version::HTTP_11, |h| h.version);
        let connect = Ready::connect(clients, &ep, version);
        let ready = match left(deadline) {
            Some(l) => tokio::time::timeout(l, connect)
                .await
                .unwrap_or_else(|_| Err(Error::Timeout(deadline.map_or(l, |d| d.1)))),
            None => connect.await,
        };
        let ready = match ready {
            Ok(r) => r,
            Err(e) => {
                picked.responded();
                count_transition(try_metrics, picked.failure(), probe);
                failovers += 1;
                let expired = left(deadline).is_some_and(|l| l.is_zero());
                if failovers >= MAX_FAILOVERS || expired || matches!(e, Error::Timeout(_)) {
                    return (Err(e), labels);
                }
                tracing::debug!(endpoint = %ep.addr, error = %crate::error_chain(&e), "connect failed; trying another endpoint");
                metrics.failover();
                avoid = Some(ep);
                next = Some(body);
                continue;
            }
        };
        let last_try = !may_retry || retries >= policy.retry_limit;
        let h = if last_try {
            head.take()
        } else {
            head.as_ref().map(|h| Head {
                method: h.method.clone(),
                uri: h.uri.clone(),
                version: h.version,
                headers: h.headers.clone(),
            })
        };
        let Some(h) = h else {
            return (Err(Error::NoTarget), labels);
        };
        let req = match prepare(h, body, &ep, authority) {
            Ok(r) => r,
            Err(e) => return (Err(e), labels),
        };
        let per_try = match (policy.per_try_timeout, left(deadline)) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        };
        let send = ready.send(clients, &ep, req);
        let outcome = match per_try {
            Some(t) => tokio::time::timeout(t, send).await.ok(),
            None => Some(send.await),
        };
        picked.responded();
        // Classify the try.
        let (reason, result) = match outcome {
            Some(Ok(rsp)) => {
                let status = rsp.status().as_u16();
                let grpc = is_grpc.then(|| grpc_status(rsp.headers())).flatten();
                let grpc_retryable = grpc.is_some_and(|g| policy.retryable_grpc(g));
                let failed = status >= 500 || grpc_retryable;
                let t = if failed {
                    picked.failure()
                } else {
                    picked.success()
                };
                count_transition(try_metrics, t, probe);
                let rsp = finish(rsp, version, &ep);
                if !(policy.retryable_status(status) || grpc_retryable) {
                    return (Ok(rsp), labels);
                }
                (if grpc_retryable { "grpc" } else { "status" }, Ok(rsp))
            }
            Some(Err(e)) => {
                count_transition(try_metrics, picked.failure(), probe);
                ("error", Err(e))
            }
            None => {
                count_transition(try_metrics, picked.failure(), probe);
                let expired = left(deadline).is_some_and(|l| l.is_zero());
                let t = match deadline {
                    Some((_, whole)) if expired => whole,
                    _ => per_try.unwrap_or_default(),
                };
                ("timeout", Err(Error::Timeout(t)))
            }
        };
        // Retry, or answer with what this try got.
        if !may_retry {
            return (result, labels);
        }
        if left(deadline).is_some_and(|l| l.is_zero()) {
            metrics.retry(reason, "timeout");
            return (result, labels);
        }
        if retries >= policy.retry_limit {
            metrics.retry(reason, "limit");
            return (result, labels);
        }
        let Some(body) = replayer.as_ref().and_then(|r| r.next()) else {
            metrics.retry(reason, "not_replayable");
            return (result, labels);
        };
        if !policy.withdraw() {
            metrics.retry(reason, "budget_exhausted");
            return (result, labels);
        }
        metrics.retry(reason, "retried");
        tracing::debug!(endpoint = %ep.addr, reason, "retrying");
        retries += 1;
        avoid = Some(ep);
        next = Some(body);
    }
}

/// The request of one try to `ep`: HTTP/1 requests to a meshed
/// endpoint travel as HTTP/2 marked with their version; to a plaintext
/// endpoint they are in origin form.
fn prepare(
    h: Head,
    body: ReqBody,
    ep: &Endpoint,
    authority: Option<&http::uri::Authority>,
) -> Result<Request<ReqBody>, Error> {
    let mut req = Request::new(body);
    *req.method_mut() = h.method;
    *req.uri_mut() = h.uri;
    *req.version_mut() = h.version;
    *req.headers_mut() = h.headers;
    if h.version == Version::HTTP_2 {
        return Ok(req);
    }
    if ep.mesh.is_some() {
        orig_proto::to_h2(&mut req, authority, ep.addr)?;
    } else {
        headers::to_origin_form(&mut req, authority);
    }
    Ok(req)
}

/// The response as the client gets it: its version, hop-by-hop
/// headers removed.
fn finish(mut rsp: Response<Incoming>, version: Version, ep: &Endpoint) -> Response<Inner> {
    if ep.mesh.is_some() {
        *rsp.version_mut() = version;
    }
    headers::strip_hop_by_hop(rsp.headers_mut(), false, false);
    rsp.map(Inner::Upstream)
}

/// A trailers-only response's `grpc-status`.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(&headers::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
