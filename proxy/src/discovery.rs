//! The discovery client: resolves destinations (service names and
//! `ip:port`s) through the controller's watch API and registers the
//! service this pod serves (api `discovery`).
//!
//! One watch per distinct destination, shared by every connection,
//! started on first use and closed after an idle period; the number of
//! watches is bounded. A watch keeps its last state while the controller
//! is unreachable and resumes from its last revision when it is back.
//! The first request to a destination waits (bounded) for the first answer.
//!
//! A watch's loop: `GET /v1/discovery/watch`, read the newline-delimited
//! JSON events, publish each new state, and when the stream ends, fails or
//! stays silent longer than twice the controller's bookmark interval,
//! reconnect with backoff and resume from the last revision. The loop ends
//! when nobody used the destination for the idle timeout, or at shutdown.
//!
//! Layout: `client` (the mTLS HTTP/2 connection to the controller), `key`
//! (what a watch resolves), `register` (registration with a lease,
//! renewed, and deregistration on shutdown), `policy` (the inbound-policy
//! stream of this proxy's ports).

pub mod client;
pub mod key;
mod lines;
pub mod policy;
pub mod register;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbound::dst::{Dst, DstBuilder};
use bytes::BytesMut;
use client::Error;
use http_body_util::BodyExt;
use pimesh_api::discovery::{EventType, Resolution, WatchEvent};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch as channel;
use tokio_util::sync::CancellationToken;

pub use client::Client;
pub use key::DstKey;

/// What a destination resolves to now.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The controller answered; `Dst::exists` says whether it is a service.
    Answered(Arc<Dst>),
    /// No answer (yet): the controller is unreachable, or the watch could
    /// not be started (the reason is a metric label).
    Unavailable(&'static str),
}

/// One destination's watch, as requests see it.
struct Watch {
    rx: channel::Receiver<Option<Arc<Dst>>>,
    /// Milliseconds since [`Discovery::epoch`] of the last use, for the idle expiry.
    last_used: AtomicU64,
    /// A request already waited for the first answer in vain: later ones
    /// do not wait again (a controller that is away must not slow every
    /// connection down by the wait).
    waited: AtomicBool,
}

/// The resolver shared by every connection.
pub struct Discovery {
    client: Arc<Client>,
    builder: DstBuilder,
    watches: Mutex<HashMap<DstKey, Arc<Watch>>>,
    wait: Duration,
    idle: Duration,
    max_watches: usize,
    epoch: Instant,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("max_watches", &self.max_watches)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// A resolver using `client`; watches end at `shutdown`.
    pub fn new(
        client: Arc<Client>,
        config: &Config,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Discovery {
        let o = &config.outbound;
        Discovery {
            builder: DstBuilder::new(config, metrics.clone()),
            client,
            watches: Mutex::new(HashMap::new()),
            wait: o.discovery_wait,
            idle: o.discovery_idle_timeout,
            max_watches: o.discovery_max_watches,
            epoch: Instant::now(),
            metrics,
            shutdown,
        }
    }

    /// The namespace bare names resolve in (the proxy's identity's).
    pub fn namespace(&self) -> &str {
        self.client.config().identity.namespace()
    }

    /// The cluster domain of fully-qualified names.
    pub fn cluster_domain(&self) -> &str {
        &self.builder.cluster_domain
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Resolves `key`: the watch's current state, or, on first use, its
    /// first answer within the configured wait.
    pub async fn resolve(self: &Arc<Self>, key: &DstKey) -> Resolved {
        let Some(w) = self.watch(key) else {
            return Resolved::Unavailable("discovery_limit");
        };
        w.last_used.store(self.now_ms(), Ordering::Relaxed);
        if let Some(dst) = w.rx.borrow().as_ref() {
            return Resolved::Answered(dst.clone());
        }
        if w.waited.load(Ordering::Relaxed) {
            return Resolved::Unavailable("discovery_unavailable");
        }
        let mut rx = w.rx.clone();
        let answered = tokio::time::timeout(self.wait, rx.wait_for(Option::is_some))
            .await
            .is_ok();
        if !answered {
            w.waited.store(true, Ordering::Relaxed);
        }
        let current = rx.borrow().clone();
        match current {
            Some(dst) => Resolved::Answered(dst),
            None => Resolved::Unavailable("discovery_unavailable"),
        }
    }

    /// The watch of `key`, started if there is none; `None` over the limit.
    fn watch(self: &Arc<Self>, key: &DstKey) -> Option<Arc<Watch>> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watches.get(key) {
            return Some(w.clone());
        }
        if watches.len() >= self.max_watches || self.shutdown.is_cancelled() {
            return None;
        }
        let (tx, rx) = channel::channel(None);
        let w = Arc::new(Watch {
            rx,
            last_used: AtomicU64::new(self.now_ms()),
            waited: AtomicBool::new(false),
        });
        watches.insert(key.clone(), w.clone());
        tokio::spawn(run(self.clone(), key.clone(), w.clone(), tx));
        Some(w)
    }

    /// When `w` expires if nobody uses it, and whether it has.
    fn idle_deadline(&self, w: &Watch) -> (tokio::time::Instant, bool) {
        let last = w.last_used.load(Ordering::Relaxed);
        let expires_ms = last.saturating_add(self.idle.as_millis() as u64);
        let now = self.now_ms();
        let left = Duration::from_millis(expires_ms.saturating_sub(now));
        (tokio::time::Instant::now() + left, now >= expires_ms)
    }

    /// Forgets `key`'s watch if it is still `w` (its task ended).
    fn remove(&self, key: &DstKey, w: &Arc<Watch>) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if watches.get(key).is_some_and(|x| Arc::ptr_eq(x, w)) {
            watches.remove(key);
        }
    }
}

/// The controller sends a `BOOKMARK` at least this often (api
/// `BOOKMARK_INTERVAL_SECS`, the one definition).
const BOOKMARK_INTERVAL: Duration =
    Duration::from_secs(pimesh_api::discovery::BOOKMARK_INTERVAL_SECS);
/// A stream silent for longer is dead.
const SILENCE: Duration = Duration::from_secs(2 * BOOKMARK_INTERVAL.as_secs());
/// Reconnect backoff: first wait, doubling up to the maximum (jittered).
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// How a stream ended without an error.
enum Ended {
    /// Nobody uses the destination any more.
    Idle,
    /// The controller closed the stream.
    Closed,
}

/// Why a stream failed (beyond the client's errors).
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Client(#[from] Error),
    #[error("no event for {0:?}")]
    Silent(Duration),
    #[error("malformed event: {0}")]
    Malformed(String),
}

impl StreamError {
    fn label(&self) -> &'static str {
        match self {
            StreamError::Client(e) => e.label(),
            StreamError::Silent(_) => "silent",
            StreamError::Malformed(_) => "malformed",
        }
    }
}

/// Runs `key`'s watch until it idles out or the proxy shuts down.
async fn run(d: Arc<Discovery>, key: DstKey, w: Arc<Watch>, tx: channel::Sender<Option<Arc<Dst>>>) {
    let metrics = d.metrics.outbound();
    metrics.watches(1);
    let mut revision = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut got_event = false;
        let ended = tokio::select! {
            r = stream(&d, &key, &w, &tx, &mut revision, &mut got_event) => r,
            _ = d.shutdown.cancelled() => break,
        };
        if got_event {
            backoff = MIN_BACKOFF;
        }
        let no_identity = matches!(ended, Err(StreamError::Client(Error::NoIdentity)));
        match ended {
            Ok(Ended::Idle) => break,
            Ok(Ended::Closed) => {
                metrics.stream_error("closed");
                tracing::debug!(dst = %key, "watch stream closed by the controller");
            }
            Err(e) => {
                metrics.stream_error(e.label());
                tracing::debug!(dst = %key, error = %crate::error_chain(&e), "watch failed");
                // A destination the controller refuses to resolve (400)
                // is unknown, not pending: answer the waiting requests.
                if let StreamError::Client(Error::Status(400..=499, _)) = e {
                    if tx.borrow().is_none() {
                        let unknown = d.builder.build(&key, &Resolution::default(), None, 0);
                        tx.send_replace(Some(Arc::new(unknown)));
                    }
                    backoff = MAX_BACKOFF;
                }
            }
        }
        let wait = if no_identity {
            // The certificate is on its way: look again soon.
            MIN_BACKOFF
        } else {
            let wait = backoff.mul_f64(1.0 + crate::balance::random_fraction() * 0.5);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            wait
        };
        let (idle_at, idle) = d.idle_deadline(&w);
        if idle {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::time::sleep_until(idle_at) => {
                if d.idle_deadline(&w).1 { break; }
            }
            _ = d.shutdown.cancelled() => break,
        }
    }
    d.remove(&key, &w);
    metrics.watches(-1);
    tracing::debug!(dst = %key, "watch ended");
}

/// One watch stream, from the request to its end.
async fn stream(
    d: &Discovery,
    key: &DstKey,
    w: &Watch,
    tx: &channel::Sender<Option<Arc<Dst>>>,
    revision: &mut Option<u64>,
    got_event: &mut bool,
) -> Result<Ended, StreamError> {
    // Routes do not move the registry revision: a destination holding
    // routes resumes without one, so that it gets its whole state (a
    // route removed meanwhile included).
    let has_routes = tx.borrow().as_ref().is_some_and(|d| d.routes.is_some());
    let resume = revision.filter(|_| !has_routes);
    let rsp = d
        .client
        .send(http::Method::GET, &key.query(resume), bytes::Bytes::new())
        .await?;
    let mut body = rsp.into_body();
    let mut buf = BytesMut::new();
    let mut silent_at = tokio::time::Instant::now() + SILENCE;
    loop {
        let (idle_at, idle) = d.idle_deadline(w);
        if idle {
            return Ok(Ended::Idle);
        }
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = tokio::time::sleep_until(silent_at) => return Err(StreamError::Silent(SILENCE)),
            _ = tokio::time::sleep_until(idle_at) => continue,
        };
        silent_at = tokio::time::Instant::now() + SILENCE;
        let data = match frame {
            None => return Ok(Ended::Closed),
            Some(Err(e)) => return Err(Error::Http(e).into()),
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
        };
        buf.extend_from_slice(&data);
        for ev in events(&mut buf)? {
            *got_event = true;
            apply(d, key, tx, revision, ev);
        }
    }
}

/// The complete [`WatchEvent`] lines at the front of `buf` ([`lines::events`]).
///
/// # Errors
///
/// [`StreamError::Malformed`]: a line that is not a [`WatchEvent`], or one
/// longer than [`lines::MAX_LINE`].
fn events(buf: &mut BytesMut) -> Result<Vec<WatchEvent>, StreamError> {
    lines::events(buf).map_err(StreamError::Malformed)
}

/// Publishes what one event changes.
fn apply(
    d: &Discovery,
    key: &DstKey,
    tx: &channel::Sender<Option<Arc<Dst>>>,
    revision: &mut Option<u64>,
    ev: WatchEvent,
) {
    let metrics = d.metrics.outbound();
    *revision = Some(ev.revision);
    let object = match ev.kind {
        EventType::Bookmark => {
            metrics.event("BOOKMARK");
            return;
        }
        EventType::Added | EventType::Modified => {
            metrics.event(if ev.kind == EventType::Added {
                "ADDED"
            } else {
                "MODIFIED"
            });
            match ev.object {
                Some(o) => o,
                None => {
                    tracing::debug!(dst = %key, "event without object ignored");
                    return;
                }
            }
        }
        EventType::Deleted => {
            metrics.event("DELETED");
            Resolution {
                exists: false,
                ..ev.object.unwrap_or_default()
            }
        }
    };
    let prev = tx.borrow().clone();
    let dst = d.builder.build(key, &object, prev.as_deref(), ev.revision);
    tracing::debug!(
        dst = %key,
        exists = dst.exists,
        endpoints = dst.balancer.endpoints().len(),
        revision = ev.revision,
        "resolution updated"
    );
    tx.send_replace(Some(Arc::new(dst)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_split_across_frames() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"{\"type\":\"BOOKMARK\",\"revision\":3}\n\n{\"type\":\"ADD");
        let evs = events(&mut buf).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!((evs[0].kind, evs[0].revision), (EventType::Bookmark, 3));
        buf.extend_from_slice(b"ED\",\"revision\":4,\"object\":{\"exists\":true}}\r\n");
        let evs = events(&mut buf).unwrap();
        assert_eq!(evs[0].kind, EventType::Added);
        assert!(evs[0].object.as_ref().unwrap().exists);
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_or_endless_lines_end_the_stream() {
        let mut buf = BytesMut::from(&b"{\"type\":\"EXPLODED\",\"revision\":1}\n"[..]);
        assert!(matches!(events(&mut buf), Err(StreamError::Malformed(_))));
        let mut buf = BytesMut::from(&b"not json\n"[..]);
        assert!(matches!(events(&mut buf), Err(StreamError::Malformed(_))));
        let mut buf = BytesMut::from(&vec![b'x'; lines::MAX_LINE + 1][..]);
        assert!(matches!(events(&mut buf), Err(StreamError::Malformed(_))));
    }
}
