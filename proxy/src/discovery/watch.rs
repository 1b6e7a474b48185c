//! One destination's watch loop: `GET /v1/discovery/watch`, read the
//! newline-delimited JSON events, publish each new state, and when the
//! stream ends, fails or stays silent longer than twice the controller's
//! bookmark interval, reconnect with backoff and resume from the last
//! revision. The last state stays published meanwhile. The loop ends when
//! nobody used the destination for the idle timeout, or at shutdown.

use super::client::Error;
use super::{Discovery, DstKey, Watch};
use crate::outbound::Dst;
use bytes::BytesMut;
use http_body_util::BodyExt;
use pimesh_api::discovery::{EventType, Resolution, WatchEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as channel;

/// The controller sends a `BOOKMARK` at least this often (api
/// `BOOKMARK_INTERVAL_SECS`, the one definition).
const BOOKMARK_INTERVAL: Duration =
    Duration::from_secs(pimesh_api::discovery::BOOKMARK_INTERVAL_SECS);
/// A stream silent for longer is dead.
const SILENCE: Duration = Duration::from_secs(2 * BOOKMARK_INTERVAL.as_secs());
/// Longest event line accepted, bytes (endpoint sets are small).
const MAX_LINE: usize = 1024 * 1024;
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
pub(super) async fn run(
    d: Arc<Discovery>,
    key: DstKey,
    w: Arc<Watch>,
    tx: channel::Sender<Option<Arc<Dst>>>,
) {
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
    let rsp = d
        .client
        .send(
            http::Method::GET,
            &key.query(*revision),
            bytes::Bytes::new(),
        )
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

/// The complete event lines at the front of `buf` (consumed); a partial
/// line stays for the next frame.
///
/// Errors: a line that is not a [`WatchEvent`], or a line longer than [`MAX_LINE`].
fn events(buf: &mut BytesMut) -> Result<Vec<WatchEvent>, StreamError> {
    let mut out = Vec::new();
    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
        let line = buf.split_to(nl + 1);
        let line = &line[..nl];
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let ev = serde_json::from_slice(line).map_err(|e| StreamError::Malformed(e.to_string()))?;
        out.push(ev);
    }
    if buf.len() > MAX_LINE {
        return Err(StreamError::Malformed(format!(
            "event longer than {MAX_LINE} bytes"
        )));
    }
    if buf.is_empty() && buf.capacity() > 16 * 1024 {
        *buf = BytesMut::new(); // release the capacity of a big event
    }
    Ok(out)
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
        let mut buf = BytesMut::from(&vec![b'x'; MAX_LINE + 1][..]);
        assert!(matches!(events(&mut buf), Err(StreamError::Malformed(_))));
    }
}
