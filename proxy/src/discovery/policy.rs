//! The inbound-policy stream: at start (once the proxy has its
//! certificate) the proxy asks the controller for the policy of its ports
//! (`GET /v1/policy/inbound?labels=…&ports=…`, its pod labels from
//! `PIMESH_PROXY_POD_LABELS` and named container ports from
//! `PIMESH_PROXY_POD_PORTS`; its namespace is its identity's) and keeps
//! the latest [`InboundPolicies`] that connections read. A port the policy
//! does not select gets the default policy
//! (`PIMESH_PROXY_INBOUND_DEFAULT_POLICY`), and so does every port until
//! the controller first answers; when the stream fails the last policy is
//! kept and the stream resumes with backoff (as discovery's watches).

use super::client::{Client, Error};
use super::lines;
use crate::authz::InboundPolicies;
use bytes::BytesMut;
use http_body_util::BodyExt;
use pimesh_api::discovery::EventType;
use pimesh_api::policy::inbound::{labels_to_string, PolicyEvent, INBOUND_POLICY_PATH};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A stream silent for longer is dead (twice the controller's bookmark
/// interval, as discovery's watches).
const SILENCE: Duration = Duration::from_secs(2 * pimesh_api::discovery::BOOKMARK_INTERVAL_SECS);
/// Reconnect backoff: first wait, doubling up to the maximum (jittered).
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Client(#[from] Error),
    #[error("no event for {0:?}")]
    Silent(Duration),
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("the controller closed the stream")]
    Closed,
}

/// Follows the controller's policy for this proxy until `shutdown`.
pub async fn run(
    client: Arc<Client>,
    labels: BTreeMap<String, String>,
    ports: BTreeMap<String, u16>,
    policies: Arc<InboundPolicies>,
    shutdown: CancellationToken,
) {
    let path = stream_path(&labels, &ports);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut got_event = false;
        let ended = tokio::select! {
            r = stream(&client, &path, &policies, &mut got_event) => r,
            _ = shutdown.cancelled() => return,
        };
        if got_event {
            backoff = MIN_BACKOFF;
        }
        let wait = match ended {
            Err(StreamError::Client(Error::NoIdentity)) => MIN_BACKOFF,
            e => {
                if let Err(e) = e {
                    tracing::debug!(error = %crate::error_chain(&e), kept = policies.streamed(), "inbound policy stream failed; the last policy stays");
                }
                let wait = backoff.mul_f64(1.0 + crate::balance::random_fraction() * 0.5);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One stream, from the request to its end (always an error: it is
/// endless while all goes well).
async fn stream(
    client: &Client,
    path: &str,
    policies: &InboundPolicies,
    got_event: &mut bool,
) -> Result<(), StreamError> {
    let rsp = client
        .send(http::Method::GET, path, bytes::Bytes::new())
        .await?;
    let mut body = rsp.into_body();
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::time::timeout(SILENCE, body.frame())
            .await
            .map_err(|_| StreamError::Silent(SILENCE))?;
        let data = match frame {
            None => return Err(StreamError::Closed),
            Some(Err(e)) => return Err(Error::Http(e).into()),
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
        };
        buf.extend_from_slice(&data);
        for ev in lines::events::<PolicyEvent>(&mut buf).map_err(StreamError::Malformed)? {
            *got_event = true;
            if let (EventType::Added | EventType::Modified, Some(p)) = (ev.kind, ev.object) {
                tracing::info!(revision = ev.revision, ports = ?p.servers.keys().collect::<Vec<_>>(), "inbound policy updated");
                policies.replace(p);
            }
        }
    }
}

/// `s` percent-encoded for a query value (RFC 3986 §2.3: all but the
/// unreserved characters).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The stream's path and query (`ports` only when the pod names some).
fn stream_path(labels: &BTreeMap<String, String>, ports: &BTreeMap<String, u16>) -> String {
    let mut path = format!(
        "{INBOUND_POLICY_PATH}?labels={}",
        percent_encode(&labels_to_string(labels))
    );
    if !ports.is_empty() {
        let ports: BTreeMap<String, String> = ports
            .iter()
            .map(|(n, p)| (n.clone(), p.to_string()))
            .collect();
        path.push_str("&ports=");
        path.push_str(&percent_encode(&labels_to_string(&ports)));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports_join_the_query() {
        let labels: BTreeMap<String, String> = [("app".into(), "api".into())].into();
        assert_eq!(
            stream_path(&labels, &BTreeMap::new()),
            "/v1/policy/inbound?labels=app%3Dapi"
        );
        let ports: BTreeMap<String, u16> = [("http".into(), 8080), ("grpc".into(), 9090)].into();
        assert_eq!(
            stream_path(&labels, &ports),
            "/v1/policy/inbound?labels=app%3Dapi&ports=grpc%3D9090%2Chttp%3D8080"
        );
    }

    #[test]
    fn labels_are_percent_encoded() {
        assert_eq!(
            percent_encode("app=web,tier=a b"),
            "app%3Dweb%2Ctier%3Da%20b"
        );
    }
}
