//! A connection whose writes fail once they have waited too long with no byte moving either
//! way: served HTTPS connections wrap their stream in [`Idle`], so a client that stops reading
//! its answer gives its place back after [`IDLE`] instead of holding it for ever. Reads never
//! time out here — a request still being handled keeps its connection however long it takes,
//! and hyper's header-read timeout ends connections that send nothing ([`super::tls::serve`]).
//! The portal's live pages (server-sent events) write a keep-alive every 15 s.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a write may wait with no byte moving either way.
pub(super) const IDLE: Duration = Duration::from_secs(60);

/// `S` with an idle deadline, reset by every byte read or written.
pub(super) struct Idle<S> {
    inner: S,
    after: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Idle<S> {
    /// `inner`, closed with an error after `after` without a byte either way.
    pub(super) fn new(inner: S, after: Duration) -> Self {
        Self {
            inner,
            after,
            deadline: Box::pin(tokio::time::sleep(after)),
        }
    }

    fn moved(&mut self) {
        let at = Instant::now() + self.after;
        self.deadline.as_mut().reset(at);
    }

    /// `Pending` unless the deadline has passed (then the error that ends the connection); the
    /// waker is registered either way, so a stalled write wakes when its time is up.
    fn expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no byte moved on the connection for {} s",
                    self.after.as_secs()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(r)
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.expired(cx),
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(r)
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.expired(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.expired(cx),
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_read_waits_as_long_as_it_takes_and_a_talking_peer_keeps_writes_alive() {
        let (near, mut far) = tokio::io::duplex(8);
        let mut conn = Idle::new(near, Duration::from_secs(60));
        let mut buf = [0u8; 8];
        // A read may wait far longer than the deadline (a request being handled).
        let read = tokio::spawn(async move {
            let n = conn.read(&mut buf).await.unwrap();
            (conn, n)
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        far.write_all(b"x").await.unwrap();
        let (mut conn, n) = read.await.unwrap();
        assert_eq!(n, 1);
        // A write that fills the pipe waits while the peer keeps reading within the deadline.
        let writer = tokio::spawn(async move { conn.write_all(&[1u8; 64]).await });
        let mut got = 0;
        while got < 64 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            got += far.read(&mut buf).await.unwrap();
        }
        writer.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_cut_off() {
        let (near, _far) = tokio::io::duplex(16);
        let mut conn = Idle::new(near, Duration::from_secs(60));
        let err = conn.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
