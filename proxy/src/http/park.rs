//! Parking idle HTTP/1 connections: between requests a keep-alive
//! connection waits for readability on the bare socket, holding no codec,
//! and is handed to hyper again only when its next bytes arrive. hyper's
//! HTTP/1 connection allocates an 8 KiB read buffer and an 8 KiB write
//! buffer and keeps them for its whole life; a parked connection costs its
//! socket and this module's few words instead.
//!
//! hyper serves the connection as usual; [`GatedIo`] and the service's
//! request/response guard ([`Gate`]) tell when it has gone idle: every
//! response ended and flushed, the last request carried no body (so no
//! unread body bytes can follow) and asked for no upgrade, and hyper's
//! next read of the socket found nothing. The task then stops polling
//! hyper and takes the connection back with `into_parts`, whose `read_buf`
//! (bytes hyper read ahead, e.g. the start of the next request) is
//! replayed first to the next hyper connection. It parks only after
//! [`LINGER`] without a new request, so that a busy connection keeps its
//! codec (re-creating it costs ~6.7k instructions, +13% per request). A
//! request with a body leaves the connection in hyper until a later
//! body-less request ends. A partial head read ahead is replayed at once,
//! and no parking happens before that connection's next request ends, so
//! the header read timeout still bounds a slow head.
//!
//! A parked connection is a value (`http::Parked`: the socket, the
//! connection's service and its gate), returned from the serving future so that the
//! connection's task keeps none of the futures that served it (nor their
//! largest states): the task waits (`Parked::readable`) and serves it
//! again (`Parked::serve`, a future freed when it parks).
//! Source: hyper 1.x `server::conn::http1::Connection::into_parts`.

use bytes::{Buf, Bytes};
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long an idle HTTP/1 connection stays in hyper before it is parked.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// An I/O that can wait for its next bytes without reading them.
pub trait Park {
    /// Whether [`Park::poll_park`] works for this I/O. TLS cannot: the
    /// session may hold decrypted bytes the socket no longer shows.
    fn can_park(&self) -> bool;

    /// Ready once a read would not block (bytes, EOF or an error are
    /// waiting); never reads.
    fn poll_park(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl<I: AsyncRead + AsyncWrite + Unpin> Park for tokio_rustls::server::TlsStream<I> {
    fn can_park(&self) -> bool {
        false
    }

    fn poll_park(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What a connection's service and its I/O know of hyper's state.
#[derive(Debug, Default)]
pub struct Gate {
    /// Requests whose response body has not ended (or been dropped).
    in_flight: AtomicUsize,
    /// The last request had no body and asked for no upgrade.
    bodyless: AtomicBool,
    /// Nothing was written since the last successful flush, which came
    /// after the last response ended.
    flushed: AtomicBool,
    /// hyper's read found nothing while the rest held: park now.
    idle: AtomicBool,
    /// Times `idle` became true: a new idle period restarts the linger.
    idles: AtomicUsize,
}

impl Gate {
    /// A new hyper connection starts: nothing served on it yet.
    pub fn reset(&self) {
        self.in_flight.store(0, Relaxed);
        self.bodyless.store(false, Relaxed);
        self.flushed.store(false, Relaxed);
        self.idle.store(false, Relaxed);
    }

    /// hyper went idle: the connection can be taken back.
    pub fn is_idle(&self) -> bool {
        self.idle.load(Relaxed)
    }

    /// How many idle periods began so far.
    pub fn idle_periods(&self) -> usize {
        self.idles.load(Relaxed)
    }

    /// Notes a request reaching the service; the guard ends it.
    pub fn request(self: &Arc<Self>, req: &Request<Incoming>) -> InFlight {
        let bodyless = req.body().is_end_stream()
            && req.method() != http::Method::CONNECT
            && !req.headers().contains_key(http::header::UPGRADE);
        self.bodyless.store(bodyless, Relaxed);
        self.idle.store(false, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        self.flushed.store(false, Relaxed);
        InFlight(self.clone())
    }

    fn read_pending(&self) {
        if self.in_flight.load(Relaxed) == 0
            && self.bodyless.load(Relaxed)
            && self.flushed.load(Relaxed)
            && !self.idle.swap(true, Relaxed)
        {
            self.idles.fetch_add(1, Relaxed);
        }
    }
}

/// One request in flight; dropped when its response body ends.
#[derive(Debug)]
pub struct InFlight(Arc<Gate>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
        // Its last bytes may still sit in hyper's write buffer.
        self.0.flushed.store(false, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request's [`InFlight`] when dropped.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

/// Attaches `in_flight` to `rsp`'s body.
pub fn track<B>(rsp: Response<B>, in_flight: InFlight) -> Response<Tracked<B>> {
    rsp.map(|body| Tracked { body, in_flight })
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The I/O hyper serves: replays `prefix` (what the previous hyper
/// connection read ahead) first, and reports to the [`Gate`].
#[derive(Debug)]
pub struct GatedIo<I> {
    /// The connection.
    pub io: I,
    /// Bytes to read before `io`'s.
    pub prefix: Bytes,
    /// The connection's gate.
    pub gate: Arc<Gate>,
}

impl<I: AsyncRead + Unpin> AsyncRead for GatedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        match r {
            Poll::Pending => this.gate.read_pending(),
            Poll::Ready(_) if buf.filled().len() > before => this.gate.idle.store(false, Relaxed),
            Poll::Ready(_) => {}
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for GatedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.gate.flushed.store(false, Relaxed);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.gate.flushed.store(false, Relaxed);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            self.gate.flushed.store(true, Relaxed);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
