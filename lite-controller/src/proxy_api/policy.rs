//! The inbound-policy stream on the proxy port (`GET`
//! `pimesh_api::policy::inbound::INBOUND_POLICY_PATH?labels=K%3DV,…&ports=NAME%3DPORT,…`,
//! client certificate required): the proxy's namespace is its
//! certificate's, its pod labels and named container ports the query's; the answer is an NDJSON
//! stream of `PolicyEvent`s — the whole `InboundPolicy` first (`ADDED`),
//! again whenever its source changes it (`MODIFIED`: `pimesh apply`/`delete`
//! standalone, a watched resource in Kubernetes mode), and a
//! `BOOKMARK` after every quiet [`BOOKMARK_INTERVAL`]. The same task shape
//! and body as discovery's watches (`registry::watch`): a one-slot channel,
//! so a slow proxy skips intermediate states instead of queueing them.

use crate::policy::inbound::{inbound_policy, Workload};
use crate::policy::ports::resolve_named;
use crate::policy::snapshot::Snapshots;
use crate::registry::watch::{WatchBody, BOOKMARK_INTERVAL};
use crate::rest::{self, Body};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use pimesh_api::discovery::EventType;
use pimesh_api::identity::Identity;
use pimesh_api::policy::inbound::{parse_labels, parse_ports, PolicyEvent};
use pimesh_api::query::percent_decode;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

/// A response: a complete body, or the stream.
type ProxyBody = Either<Body, WatchBody>;

/// Serves the stream for `peer` (401 without a client certificate, 400
/// for bad labels, 503 when no watch slot is free — streams share
/// `--max-watches` with discovery's watches).
pub fn inbound(
    policies: &Snapshots,
    trust_domain: &str,
    slots: &Arc<tokio::sync::Semaphore>,
    req: &Request<Incoming>,
    peer: Option<&Identity>,
    stop: CancellationToken,
) -> Response<ProxyBody> {
    let Some(peer) = peer else {
        return rest::error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the policy stream needs a client certificate of the mesh",
        )
        .map(Either::Left);
    };
    let pod = match query(req.uri().query()) {
        Ok(l) => l,
        Err(e) => return rest::error(StatusCode::BAD_REQUEST, "bad_request", e).map(Either::Left),
    };
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        tracing::warn!("watch limit reached; refusing a policy stream");
        return rest::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_watches",
            "the controller serves no more watches now (--max-watches); retry later",
        )
        .map(Either::Left);
    };
    tracing::debug!(%peer, labels = ?pod.0, ports = ?pod.1, "inbound policy stream");
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(run(
        policies.clone(),
        peer.namespace().to_string(),
        pod,
        trust_domain.to_string(),
        tx,
        stop,
        permit,
    ));
    let mut rsp = Response::new(Either::Right(WatchBody::new(rx)));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    rsp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    rsp
}

/// Named container ports (`NAME` → port).
type Ports = BTreeMap<String, u16>;

/// `labels=` (percent-encoded `K=V,…`) and `ports=` (percent-encoded
/// `NAME=PORT,…`); either absent is none.
fn query(query: Option<&str>) -> Result<(BTreeMap<String, String>, Ports), String> {
    let (mut labels, mut ports) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| format!("bad encoding of {k}"))?;
        let twice = match k {
            "labels" => labels.replace(parse_labels(&v)?).is_some(),
            "ports" => ports.replace(parse_ports(&v)?).is_some(),
            _ => return Err(format!("unknown parameter {k:?}")),
        };
        if twice {
            return Err(format!("{k} given twice"));
        }
    }
    Ok((labels.unwrap_or_default(), ports.unwrap_or_default()))
}

/// The stream's task: sends the policy, then each change, until the
/// proxy goes away or `stop`. `pod`: its labels and named ports (the
/// query's).
async fn run(
    policies: Snapshots,
    namespace: String,
    pod: (BTreeMap<String, String>, Ports),
    trust_domain: String,
    tx: mpsc::Sender<Bytes>,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let (labels, ports) = pod;
    let workload = Workload {
        namespace: &namespace,
        labels: &labels,
    };
    let policy_of = |resources: &Arc<Vec<crate::policy::Resource>>| {
        let resources = resolve_named(resources, &namespace, &ports);
        inbound_policy(&resources, &workload, &trust_domain)
    };
    let mut changes = policies.subscribe();
    let snap = changes.borrow_and_update().clone();
    let mut last = policy_of(&snap.resources);
    let first = PolicyEvent {
        kind: EventType::Added,
        revision: snap.revision,
        object: Some(last.clone()),
    };
    if tx.send(line(&first)).await.is_err() {
        return;
    }
    let mut quiet = tokio::time::interval_at(
        tokio::time::Instant::now() + BOOKMARK_INTERVAL,
        BOOKMARK_INTERVAL,
    );
    loop {
        let bookmark = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                false
            }
            _ = quiet.tick() => true,
        };
        let snap = changes.borrow_and_update().clone();
        let policy = policy_of(&snap.resources);
        let ev = if policy != last {
            last = policy.clone();
            PolicyEvent {
                kind: EventType::Modified,
                revision: snap.revision,
                object: Some(policy),
            }
        } else if bookmark {
            PolicyEvent {
                kind: EventType::Bookmark,
                revision: snap.revision,
                object: None,
            }
        } else {
            continue;
        };
        if ev.kind == EventType::Modified {
            tracing::debug!(namespace, revision = ev.revision, "inbound policy changed");
        }
        if tx.send(line(&ev)).await.is_err() {
            return;
        }
        quiet.reset();
    }
}

/// One NDJSON line.
fn line(ev: &PolicyEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_in_the_query() {
        let query_labels = |q| query(q).map(|(l, _)| l);
        let l = query_labels(Some("labels=app%3Dweb%2Ctier%3Dfront")).unwrap();
        assert_eq!(l.get("app").map(String::as_str), Some("web"));
        assert_eq!(l.get("tier").map(String::as_str), Some("front"));
        assert!(query_labels(None).unwrap().is_empty());
        assert!(query_labels(Some("labels=app")).is_err());
        assert!(query_labels(Some("labels=a%3D1&labels=b%3D2")).is_err());
        assert!(query_labels(Some("name=web")).is_err());
        assert!(query_labels(Some("labels=%zz")).is_err());
    }

    #[test]
    fn named_ports_in_the_query() {
        let (l, p) = query(Some("labels=app%3Dapi&ports=http%3D8080%2Cgrpc%3D9090")).unwrap();
        assert_eq!(l.get("app").map(String::as_str), Some("api"));
        assert_eq!(p.get("http"), Some(&8080));
        assert_eq!(p.get("grpc"), Some(&9090));
        assert!(query(Some("labels=app%3Dapi")).unwrap().1.is_empty());
        assert!(query(Some("ports=http%3D0")).is_err());
        assert!(query(Some("ports=http%3D1&ports=a%3D2")).is_err());
    }
}
