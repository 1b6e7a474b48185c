//! Socket wrappers on the data path: [`PrefixedIo`] replays the bytes read
//! during protocol detection; [`MeteredIo`] counts bytes into the
//! connection's `tcp_read_bytes_total` / `tcp_write_bytes_total`;
//! [`splice`] forwards bytes both ways; [`idle`] ends idle connections.

use crate::metrics::TcpConnection;
use bytes::{Buf, Bytes};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    /// An I/O whose first reads return `prefix`, then the inner I/O's bytes.
    /// The prefix is freed as soon as it has been read.
    #[derive(Debug)]
    pub struct PrefixedIo<I> {
        prefix: Bytes,
        #[pin]
        io: I,
    }
}

impl<I> PrefixedIo<I> {
    /// Wraps `io`, replaying `prefix` first.
    pub fn new(prefix: Bytes, io: I) -> Self {
        PrefixedIo { prefix, io }
    }
}

impl<I: AsyncRead> AsyncRead for PrefixedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        this.io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for PrefixedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

impl crate::http::park::Park for PrefixedIo<tokio::net::TcpStream> {
    fn can_park(&self) -> bool {
        true
    }

    fn poll_park(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            self.io.poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

pin_project_lite::pin_project! {
    /// An I/O that counts the bytes it moves, and the first error it sees,
    /// into its connection's metrics.
    #[derive(Debug)]
    pub struct MeteredIo<I> {
        #[pin]
        io: I,
        conn: Arc<TcpConnection>,
    }
}

impl<I> MeteredIo<I> {
    /// Wraps `io`, counting into `conn`.
    pub fn new(io: I, conn: Arc<TcpConnection>) -> Self {
        MeteredIo { io, conn }
    }

    /// The connection's metrics.
    pub fn conn(&self) -> &Arc<TcpConnection> {
        &self.conn
    }
}

impl<I: crate::http::park::Park> crate::http::park::Park for MeteredIo<I> {
    fn can_park(&self) -> bool {
        self.io.can_park()
    }

    fn poll_park(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_park(cx)
    }
}

fn note<T>(conn: &TcpConnection, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
    if let Poll::Ready(Err(e)) = &r {
        conn.set_error(e);
    }
    r
}

impl<I: AsyncRead> AsyncRead for MeteredIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.conn.read(n);
        }
        note(this.conn, r)
    }
}

impl<I: AsyncWrite> AsyncWrite for MeteredIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.conn.wrote(n);
        }
        note(this.conn, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.conn.wrote(n);
        }
        note(this.conn, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        note(this.conn, this.io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        note(this.conn, this.io.poll_shutdown(cx))
    }
}

/// Copies both ways between `client` and `upstream` until both directions
/// closed or one failed; a FIN from one side becomes a write shutdown
/// towards the other (`copy_bidirectional`).
pub async fn splice<A, B>(client: &mut A, upstream: &mut B, target: SocketAddr)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(client, upstream).await {
        Ok((sent, received)) => tracing::debug!(%target, sent, received, "TCP connection closed"),
        Err(e) => tracing::debug!(%target, %e, "TCP connection failed"),
    }
}

/// Resolves once `conn` moved no byte for between `timeout` and twice it.
pub async fn idle(conn: &TcpConnection, timeout: Duration) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut seen = conn.bytes.load(Relaxed);
    loop {
        tokio::time::sleep(timeout).await;
        let now = conn.bytes.load(Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_replayed_then_inner() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut io = PrefixedIo::new(Bytes::from_static(b"hello"), b);
        let mut out = String::new();
        io.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
