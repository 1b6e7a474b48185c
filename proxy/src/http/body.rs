//! The response body handed back to the client: the target's streaming
//! body (data and trailers untouched) or a local one, recording the
//! exchange's metrics at the first frame and at the end of the stream. A
//! gRPC response whose target fails mid-body ends with `grpc-status: 14`
//! trailers rather than a reset (as linkerd2-proxy's `GrpcRescue`).

use crate::metrics::RequestMetrics;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Where the bytes come from.
#[derive(Debug)]
pub enum Inner {
    /// The target's response body.
    Upstream(Incoming),
    /// A body the proxy wrote (errors, `CONNECT` answers); `None` is empty.
    Local(Option<Bytes>),
}

/// A response body that records `response_latency_ms` at its first frame
/// and `response_total` when it ends (classified by status and, for gRPC,
/// the `grpc-status` trailer or trailers-only header). A body dropped
/// before its end, e.g. because the client went away, counts as a failure
/// with `error="cancel"`; one whose target failed, with `error="stream"`.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    metrics: Option<RequestMetrics>,
    status: u16,
    grpc_status: Option<u32>,
    /// A gRPC response (`content-type: application/grpc…`) not ended by
    /// its head: if the target's body fails, the client gets trailers
    /// with `grpc-status: 14` (UNAVAILABLE) and the reason, a status its
    /// gRPC library reports, instead of a stream reset (`INTERNAL`).
    rescue: bool,
}

/// The gRPC status of a response whose target failed mid-body:
/// UNAVAILABLE, as the proxy's own answers when a target fails.
const GRPC_UNAVAILABLE: u32 = 14;

impl ResponseBody {
    /// Wraps the target's response body; `headers` are the response's, where
    /// a trailers-only gRPC response carries its `grpc-status`.
    pub fn new(inner: Inner, metrics: RequestMetrics, status: u16, headers: &HeaderMap) -> Self {
        let grpc_status = grpc_status(headers);
        let mut body = ResponseBody {
            inner,
            metrics: Some(metrics),
            status,
            rescue: grpc_status.is_none() && is_grpc_over_h2(headers),
            grpc_status,
        };
        if body.is_end_stream() {
            body.finish("");
        }
        body
    }

    /// A body the proxy wrote itself, whose metrics are already recorded.
    /// An empty one ends with the response head (for gRPC, trailers-only).
    pub fn local(bytes: Bytes) -> Self {
        ResponseBody {
            inner: Inner::Local(Some(bytes).filter(|b| !b.is_empty())),
            metrics: None,
            status: 0,
            grpc_status: None,
            rescue: false,
        }
    }

    /// The trailers that end a gRPC response whose target failed with
    /// `e`; the body is over after them.
    fn rescued(&mut self, e: &hyper::Error) -> Frame<Bytes> {
        self.rescue = false;
        self.inner = Inner::Local(None);
        self.grpc_status = Some(GRPC_UNAVAILABLE);
        self.finish("stream");
        let mut trailers = HeaderMap::new();
        trailers.insert(
            &super::headers::GRPC_STATUS,
            http::HeaderValue::from(GRPC_UNAVAILABLE),
        );
        let msg = format!("target failed mid-response: {}", crate::error_chain(e));
        if let Some(v) = super::headers::percent_encoded(&msg) {
            trailers.insert(&super::headers::GRPC_MESSAGE, v);
        }
        Frame::trailers(trailers)
    }

    fn finish(&mut self, error: &'static str) {
        if let Some(m) = self.metrics.take() {
            m.end(Some(self.status), self.grpc_status, error);
        }
    }
}

/// Whether a response is gRPC over HTTP/2 (`application/grpc`, `+proto`
/// and the like), whose status may come in trailers; not gRPC-Web
/// (`application/grpc-web…`), which carries its trailers in the body and
/// may cross HTTP/1.
fn is_grpc_over_h2(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(&super::headers::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        let frame = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Err(e))) if this.rescue => {
                tracing::debug!(error = %crate::error_chain(&e), "gRPC response failed mid-body; ending it with grpc-status 14");
                return Poll::Ready(Some(Ok(this.rescued(&e))));
            }
            Poll::Ready(frame) => frame,
        };
        match &frame {
            Some(Ok(f)) => {
                let status = Some(this.status);
                if let Some(m) = this.metrics.as_mut() {
                    m.first_frame(status);
                }
                if let Some(trailers) = f.trailers_ref() {
                    if let Some(g) = grpc_status(trailers) {
                        this.grpc_status = Some(g);
                    }
                }
                if this.is_end_stream() {
                    this.finish("");
                }
            }
            Some(Err(_)) => this.finish("stream"),
            None => this.finish(""),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let error = if self.is_end_stream() { "" } else { "cancel" };
        self.finish(error);
    }
}

/// Most request-body bytes [`drain`] reads before a local answer.
pub const DRAIN_MAX_BYTES: usize = 64 * 1024;
/// Longest [`drain`] waits for the rest of a request body.
pub const DRAIN_MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Reads and drops what is left of a request body the proxy answers itself
/// (a refused request), up to [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_WAIT`],
/// so that the request ends before the answer: an HTTP/2 answer sent while
/// the request is still open is followed by `RST_STREAM` (RFC 9113 §8.1
/// allows it with `NO_ERROR`), and some clients (curl 7.88) then report a
/// framing error instead of the answer. A larger or slower body is left
/// unread: the answer goes out anyway. Never fails.
pub async fn drain(body: Incoming) {
    use http_body_util::BodyExt;
    let mut body = body;
    let read = async {
        let mut seen = 0usize;
        while !body.is_end_stream() && seen <= DRAIN_MAX_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_MAX_WAIT, read).await;
}
