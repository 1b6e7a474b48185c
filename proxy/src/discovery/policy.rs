//! The inbound-policy stream: at start (once the proxy has its
//! certificate) the proxy asks the controller for the policy of its ports
//! (`GET /v1/policy/inbound?labels=…`, its pod labels from
//! `PIMESH_PROXY_POD_LABELS`; its namespace is its identity's) and keeps
//! the latest [`InboundPolicies`] that connections read. A port the policy
//! does not select gets the default policy
//! (`PIMESH_PROXY_INBOUND_DEFAULT_POLICY`), and so does every port until
//! the controller first answers; when the stream fails the last policy is
//! kept and the stream resumes with backoff (as discovery's watches).

use super::client::{Client, Error};
use crate::authz::Server;
use bytes::BytesMut;
use http_body_util::BodyExt;
use pimesh_api::discovery::EventType;
use pimesh_api::policy::inbound::{
    labels_to_string, InboundPolicy, PolicyEvent, INBOUND_POLICY_PATH,
};
use pimesh_api::policy::DefaultPolicy;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A stream silent for longer is dead (twice the controller's bookmark
/// interval, as discovery's watches).
const SILENCE: Duration = Duration::from_secs(2 * pimesh_api::discovery::BOOKMARK_INTERVAL_SECS);
/// Longest event line accepted, bytes.
const MAX_LINE: usize = 1024 * 1024;
/// Reconnect backoff: first wait, doubling up to the maximum (jittered).
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// The policy of every inbound port, as connections read it.
#[derive(Debug)]
pub struct InboundPolicies {
    /// The server of ports the streamed policy does not select.
    default: Arc<Server>,
    /// The streamed servers by port; `None` until the controller answers.
    ports: RwLock<Option<HashMap<u16, Arc<Server>>>>,
}

impl InboundPolicies {
    /// Every port under the default `policy` until a policy is streamed.
    pub fn new(policy: DefaultPolicy) -> InboundPolicies {
        InboundPolicies {
            default: Arc::new(Server::default_policy(policy)),
            ports: RwLock::new(None),
        }
    }

    /// The server of inbound `port`.
    pub fn server(&self, port: u16) -> Arc<Server> {
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        ports
            .as_ref()
            .and_then(|p| p.get(&port).cloned())
            .unwrap_or_else(|| self.default.clone())
    }

    /// Whether a policy was ever streamed.
    pub fn streamed(&self) -> bool {
        self.ports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Replaces the streamed policy; a server whose policy did not change
    /// keeps its `Arc` (and so its connections' metric series).
    pub fn replace(&self, policy: InboundPolicy) {
        let mut ports = self.ports.write().unwrap_or_else(|e| e.into_inner());
        let old = ports.take().unwrap_or_default();
        let new = policy
            .servers
            .into_iter()
            .map(|(port, spec)| {
                let srv = match old.get(&port) {
                    Some(s) if s.spec == spec => s.clone(),
                    _ => Arc::new(Server::new(spec)),
                };
                (port, srv)
            })
            .collect();
        *ports = Some(new);
    }
}

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
    policies: Arc<InboundPolicies>,
    shutdown: CancellationToken,
) {
    let path = format!(
        "{INBOUND_POLICY_PATH}?labels={}",
        percent_encode(&labels_to_string(&labels))
    );
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
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(nl + 1);
            let line = &line[..nl];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev: PolicyEvent =
                serde_json::from_slice(line).map_err(|e| StreamError::Malformed(e.to_string()))?;
            *got_event = true;
            if let (EventType::Added | EventType::Modified, Some(p)) = (ev.kind, ev.object) {
                tracing::info!(revision = ev.revision, ports = ?p.servers.keys().collect::<Vec<_>>(), "inbound policy updated");
                policies.replace(p);
            }
        }
        if buf.len() > MAX_LINE {
            return Err(StreamError::Malformed(format!(
                "event longer than {MAX_LINE} bytes"
            )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use pimesh_api::policy::inbound::{InboundServer, ServerKind};

    fn server(name: &str) -> InboundServer {
        InboundServer {
            name: name.into(),
            kind: ServerKind::Server,
            protocol: Default::default(),
            authorizations: vec![],
            access_policy: DefaultPolicy::Deny,
        }
    }

    #[test]
    fn ports_get_the_streamed_server_or_the_default() {
        let p = InboundPolicies::new(DefaultPolicy::AllAuthenticated);
        assert!(!p.streamed());
        assert_eq!(&*p.server(80).name, "all-authenticated");
        let mut policy = InboundPolicy::default();
        policy.servers.insert(80, server("web"));
        policy.servers.insert(81, server("admin"));
        p.replace(policy.clone());
        assert!(p.streamed());
        let web = p.server(80);
        assert_eq!(&*web.name, "web");
        assert_eq!(web.spec.kind, ServerKind::Server);
        assert_eq!(&*p.server(82).name, "all-authenticated");
        // An unchanged server keeps its Arc; a changed one is new.
        policy.servers.insert(81, server("admin2"));
        p.replace(policy);
        assert!(Arc::ptr_eq(&web, &p.server(80)));
        assert_eq!(&*p.server(81).name, "admin2");
        p.replace(InboundPolicy::default());
        assert_eq!(&*p.server(80).name, "all-authenticated");
    }

    #[test]
    fn labels_are_percent_encoded() {
        assert_eq!(
            percent_encode("app=web,tier=a b"),
            "app%3Dweb%2Ctier%3Da%20b"
        );
    }
}
