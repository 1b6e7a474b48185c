//! Request bodies that can be sent again. A retryable request's body is
//! streamed to the first try as it arrives (nothing waits for the whole
//! body: a gRPC stream that waits for its answer keeps working) while a
//! copy of up to [`MAX_REPLAY_BYTES`](crate::outbound::retry::MAX_REPLAY_BYTES) is
//! kept; a retry replays the copy, then continues with what the client
//! has not sent yet. A body that outgrows the bound is no longer
//! replayable (the request is not retried), as linkerd2-proxy's
//! `ReplayBody`. Only the newest try reads: an older try that is still
//! being polled gets an error.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Errors of a request body on its way to a target.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request the proxy sends: the client's stream as it is, a
/// replayable one, or none.
#[derive(Debug)]
pub enum ReqBody {
    /// Streamed once (not retryable).
    Stream(Incoming),
    /// Recorded for retries.
    Replay(Replay),
    /// No body (most retried requests: GET, HEAD, ...).
    Empty,
}

impl From<Incoming> for ReqBody {
    fn from(b: Incoming) -> ReqBody {
        ReqBody::Stream(b)
    }
}

impl ReqBody {
    /// The body of a request that may be retried: empty bodies need no
    /// recording.
    pub fn replayable(body: Incoming, max_bytes: usize) -> ReqBody {
        if body.is_end_stream() {
            return ReqBody::Empty;
        }
        if body.size_hint().lower() > max_bytes as u64 {
            return ReqBody::Stream(body);
        }
        ReqBody::Replay(Replay {
            shared: Arc::new(Mutex::new(Shared {
                src: Some(body),
                chunks: Vec::new(),
                stored: 0,
                read: 0,
                max_bytes,
                trailers: None,
                done: false,
                unusable: false,
                generation: 0,
            })),
            pos: 0,
            generation: 0,
            trailers_sent: false,
        })
    }

    /// What makes the bodies of later tries; `None` for a streamed body.
    pub fn replayer(&self) -> Option<Replayer> {
        match self {
            ReqBody::Stream(_) => None,
            ReqBody::Empty => Some(Replayer(None)),
            ReqBody::Replay(r) => Some(Replayer(Some(r.shared.clone()))),
        }
    }
}

/// Makes the body of each retry of one request.
#[derive(Debug)]
pub struct Replayer(Option<Arc<Mutex<Shared>>>);

impl Replayer {
    /// A body for the next try (earlier tries stop reading), or `None`
    /// when the body cannot be replayed (too large, or it failed).
    pub fn next(&self) -> Option<ReqBody> {
        let Some(shared) = &self.0 else {
            return Some(ReqBody::Empty);
        };
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        if s.unusable {
            return None;
        }
        s.generation += 1;
        Some(ReqBody::Replay(Replay {
            shared: shared.clone(),
            pos: 0,
            generation: s.generation,
            trailers_sent: false,
        }))
    }
}

/// One try's view of a recorded body.
#[derive(Debug)]
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
    /// Data frames this try has sent.
    pos: usize,
    /// Which try this is; only the newest reads.
    generation: u64,
    trailers_sent: bool,
}

impl Replay {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct Shared {
    /// The client's body, until it ended.
    src: Option<Incoming>,
    /// Data frames read so far (all of them while not `unusable`).
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    stored: usize,
    /// Data frames read from `src` (the frontier).
    read: usize,
    max_bytes: usize,
    trailers: Option<HeaderMap>,
    /// `src` ended.
    done: bool,
    /// Too large to keep, or failed: no more retries.
    unusable: bool,
    /// The newest try.
    generation: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("request body superseded by a retry or no longer replayable")]
struct Superseded;

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ReqBody::Stream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Replay(r) => r.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Stream(b) => b.is_end_stream(),
            ReqBody::Empty => true,
            ReqBody::Replay(r) => {
                let s = r.lock();
                s.done
                    && r.pos >= s.read
                    && (r.trailers_sent || s.trailers.is_none())
                    && s.generation == r.generation
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Stream(b) => b.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Replay(r) => {
                let s = r.lock();
                match &s.src {
                    // The client's size (Content-Length) holds for every try.
                    Some(src) if s.read == 0 => src.size_hint(),
                    _ if s.done && !s.unusable => SizeHint::with_exact(s.stored as u64),
                    _ => SizeHint::default(),
                }
            }
        }
    }
}

impl Replay {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = self.shared.clone();
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        if s.generation != self.generation {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if self.pos < s.read {
            // Replaying what an earlier try sent.
            let Some(chunk) = s.chunks.get(self.pos).cloned() else {
                return Poll::Ready(Some(Err(Superseded.into())));
            };
            self.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.done {
            if !self.trailers_sent {
                self.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        let Some(src) = s.src.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(src).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.done = true;
                s.src = None;
                if let Some(t) = s.trailers.clone() {
                    self.trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.unusable = true;
                s.src = None;
                s.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    s.read += 1;
                    self.pos += 1;
                    if !s.unusable {
                        if s.stored + data.len() <= s.max_bytes {
                            s.stored += data.len();
                            s.chunks.push(data.clone());
                        } else {
                            // Too large to replay: stop keeping a copy.
                            s.unusable = true;
                            s.chunks = Vec::new();
                            s.stored = 0;
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        s.trailers = Some(trailers.clone());
                        s.done = true;
                        s.src = None;
                        self.trailers_sent = true;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Err(_) => Poll::Ready(Some(Err(Superseded.into()))),
                },
            },
        }
    }
}
