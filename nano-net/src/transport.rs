//! What the agent reads from and writes to ([`PacketSource`], [`PacketSink`]), and the raw
//! stream paths (TCP, TLS over TCP). WebSocket's are in `ws`. Both feed the same incremental
//! packet decoder.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Where inbound bytes come from.
pub(crate) trait PacketSource: Send + 'static {
    /// Appends what arrived to `buf`; `Ok(0)` means the peer closed.
    fn read_into(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;

    /// Caps the read buffer allocated per read at `max` bytes (before the handshake completes,
    /// a peer is allowed only a small buffer), or lifts the cap (`None`).
    fn limit_reads(&mut self, max: Option<usize>);

    /// After `Ok(0)`: whether the peer said it was leaving, rather than its connection just
    /// ending: a WebSocket close frame (a WebSocket that ends without one dropped), or on a
    /// stream its FIN, the only goodbye the protocol has over TCP (pomelo's TCP clients close
    /// that way). A reset, silence or a failed read is never one.
    fn said_goodbye(&self) -> bool {
        false
    }
}

/// Where outbound packets go. Every write that the socket accepts bytes of marks `progress`
/// (the agent's write deadline counts time without progress).
pub(crate) trait PacketSink: Send + 'static {
    /// Writes every packet of the batch (one vectored write on streams, one frame on
    /// WebSocket) and flushes.
    fn send_batch_tracked(
        &mut self,
        batch: &[Bytes],
        progress: &Progress,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Closes the write side; `error` is a protocol-error reason for a WebSocket close frame.
    fn shutdown_tracked(
        &mut self,
        error: Option<String>,
        progress: &Progress,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// [`PacketSink::send_batch_tracked`] without a deadline (tests).
    #[cfg(test)]
    fn send_batch(&mut self, batch: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send {
        async move { self.send_batch_tracked(batch, &Progress::default()).await }
    }

    /// [`PacketSink::shutdown_tracked`] without a deadline (tests).
    #[cfg(test)]
    fn shutdown(&mut self, error: Option<String>) -> impl Future<Output = io::Result<()>> + Send {
        async move { self.shutdown_tracked(error, &Progress::default()).await }
    }
}

/// Whether a write made progress (the socket accepted bytes) since the deadline last looked.
/// Lives in the writing task's own future: marking it touches no shared cache line.
#[derive(Debug, Default)]
pub(crate) struct Progress(AtomicBool);

impl Progress {
    /// Bytes were accepted.
    #[inline]
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether bytes were accepted since the last call.
    #[inline]
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// Why a bounded write did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stalled {
    /// The connection was killed meanwhile.
    Killed,
    /// No byte was accepted for the whole write deadline.
    TimedOut,
}

/// Checks of the progress flag per write deadline: a stall is detected between 1 and 1 + 1/4
/// deadlines after the last byte was accepted.
const DEADLINE_CHECKS: u32 = 4;

/// Drives `write` to its end unless it accepts no byte for `limit` (its sink marks `progress`)
/// or `kill` is cancelled. A write that completes at once (the usual case) builds neither a
/// timer nor the kill token's future: the clock starts only once the write is pending.
pub(crate) async fn bounded_write<F: Future>(
    write: F,
    progress: &Progress,
    limit: Duration,
    kill: Option<&CancellationToken>,
) -> Result<F::Output, Stalled> {
    let mut write = std::pin::pin!(write);
    if let Poll::Ready(r) = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        return Ok(r);
    }
    if kill.is_some_and(CancellationToken::is_cancelled) {
        return Err(Stalled::Killed);
    }
    progress.take();
    // The slow path: its timer and the kill token's future live in one allocation, so the
    // connection's task (which holds this future while writing) stays small.
    let watchdog = Box::pin(async move {
        let step = (limit / DEADLINE_CHECKS).max(Duration::from_millis(1));
        let deadline = async {
            let mut silent = 0;
            loop {
                tokio::time::sleep(step).await;
                if progress.take() {
                    silent = 0;
                } else {
                    silent += 1;
                    if silent >= DEADLINE_CHECKS {
                        return Stalled::TimedOut;
                    }
                }
            }
        };
        match kill {
            Some(kill) => tokio::select! {
                biased;
                () = kill.cancelled() => Stalled::Killed,
                s = deadline => s,
            },
            None => deadline.await,
        }
    });
    tokio::select! {
        biased;
        r = write => Ok(r),
        s = watchdog => Err(s),
    }
}

/// A writer that marks `progress` whenever the stream accepts bytes.
struct Tracked<'a, W> {
    io: &'a mut W,
    progress: &'a Progress,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self.io).poll_write(cx, buf))?;
        if n > 0 {
            self.progress.mark();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self.io).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            self.progress.mark();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// The read half of a byte stream (TLS).
pub(crate) struct StreamSource<R> {
    io: R,
    /// Bytes reserved per read.
    chunk: usize,
}

impl<R> StreamSource<R> {
    /// Bytes reserved per read once the handshake is done.
    const CHUNK: usize = 4096;

    pub fn new(io: R) -> Self {
        StreamSource {
            io,
            chunk: Self::CHUNK,
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> PacketSource for StreamSource<R> {
    fn said_goodbye(&self) -> bool {
        true
    }

    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() - buf.len() < self.chunk / 4 {
            buf.reserve(self.chunk);
        }
        self.io.read_buf(buf).await
    }

    fn limit_reads(&mut self, max: Option<usize>) {
        self.chunk = max.map_or(Self::CHUNK, |m| m.clamp(64, Self::CHUNK));
    }
}

/// The read half of a plain TCP connection. It holds no read buffer while idle: the buffer is
/// released whenever it has been fully decoded, and allocated again only once the socket is
/// readable, so thousands of idle connections cost no buffer memory.
///
/// The size allocated follows what the reads bring: small (the allocator serves it from its
/// per-thread cache, so a request costs no trip into the heap proper) while requests are
/// small, doubling after each read that fills it, halving back after small ones.
pub(crate) struct TcpSource {
    half: tokio::net::tcp::OwnedReadHalf,
    chunk: usize,
    /// The largest buffer allocated per read ([`TcpSource::MAX_CHUNK`] unless limited).
    max_chunk: usize,
}

impl TcpSource {
    /// The smallest read buffer, and the first.
    pub(crate) const MIN_CHUNK: usize = 512;
    /// The largest read buffer allocated at once.
    pub(crate) const MAX_CHUNK: usize = 64 * 1024;

    pub fn new(half: tokio::net::tcp::OwnedReadHalf) -> Self {
        TcpSource {
            half,
            chunk: Self::MIN_CHUNK,
            max_chunk: Self::MAX_CHUNK,
        }
    }

    /// The next buffer size after a read of `n` bytes into `spare` free bytes.
    #[cfg(test)]
    pub(crate) fn adapt(chunk: usize, n: usize, spare: usize) -> usize {
        Self::adapt_to(chunk, n, spare, Self::MAX_CHUNK)
    }

    /// [`TcpSource::adapt`] with a cap of `max`.
    pub(crate) fn adapt_to(chunk: usize, n: usize, spare: usize, max: usize) -> usize {
        if n == spare {
            (chunk * 2).min(max)
        } else if n < chunk / 4 {
            (chunk / 2).max(Self::MIN_CHUNK)
        } else {
            chunk
        }
    }
}

impl PacketSource for TcpSource {
    fn said_goodbye(&self) -> bool {
        true
    }

    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.is_empty() {
            *buf = BytesMut::new();
        }
        wait_readable(&self.half).await?;
        if buf.capacity() - buf.len() < Self::MIN_CHUNK / 4 {
            buf.reserve(self.chunk);
        }
        let spare = buf.capacity() - buf.len();
        // `read_buf`, not `try_read_buf`: a short read clears the socket's readiness, saving
        // the extra read that would only return "would block".
        let n = self.half.read_buf(buf).await?;
        self.chunk = Self::adapt_to(self.chunk, n, spare, self.max_chunk);
        Ok(n)
    }

    fn limit_reads(&mut self, max: Option<usize>) {
        self.max_chunk = max.map_or(Self::MAX_CHUNK, |m| {
            m.clamp(Self::MIN_CHUNK, Self::MAX_CHUNK)
        });
        self.chunk = self.chunk.min(self.max_chunk);
    }
}

/// Waits until the socket is readable, without a buffer. Through the socket's own reader slot
/// (`poll_read_ready`, the one `poll_read` uses), not `readable()`, whose future joins and
/// leaves a waiter list under the socket's lock on every wait.
pub(crate) async fn wait_readable(half: &tokio::net::tcp::OwnedReadHalf) -> io::Result<()> {
    let stream: &tokio::net::TcpStream = half.as_ref();
    std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await
}

/// The write half of a byte stream.
pub(crate) struct StreamSink<W>(pub W);

impl<W: AsyncWrite + Unpin + Send + 'static> PacketSink for StreamSink<W> {
    async fn send_batch_tracked(&mut self, batch: &[Bytes], progress: &Progress) -> io::Result<()> {
        let mut w = Tracked {
            io: &mut self.0,
            progress,
        };
        write_all_vectored(&mut w, batch).await?;
        w.flush().await
    }

    async fn shutdown_tracked(
        &mut self,
        _error: Option<String>,
        _progress: &Progress,
    ) -> io::Result<()> {
        self.0.shutdown().await
    }
}

/// Writes all of `batch` with as few `writev` calls as the kernel allows (a `write` when one
/// packet is left).
async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, batch: &[Bytes]) -> io::Result<()> {
    const MAX_SLICES: usize = 16;
    let mut idx = 0; // first packet not fully written
    let mut off = 0; // bytes of batch[idx] already written
    while idx < batch.len() {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut n = 0;
        for (i, b) in batch[idx..].iter().enumerate().take(MAX_SLICES) {
            slices[i] = IoSlice::new(if i == 0 { &b[off..] } else { &b[..] });
            n = i + 1;
        }
        // One slice (the usual single reply): a plain write, which is cheaper in the kernel
        // than a one-element writev.
        let mut written = if n == 1 {
            w.write(&slices[0]).await?
        } else {
            w.write_vectored(&slices[..n]).await?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 && idx < batch.len() {
            let left = batch[idx].len() - off;
            if written >= left {
                written -= left;
                idx += 1;
                off = 0;
            } else {
                off += written;
                written = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TcpSource;

    #[test]
    fn the_read_buffer_follows_the_reads() {
        let min = TcpSource::MIN_CHUNK;
        // Small requests keep it small.
        assert_eq!(TcpSource::adapt(min, 30, min), min);
        // A read that fills it doubles it, up to the cap.
        assert_eq!(TcpSource::adapt(min, min, min), 2 * min);
        let max = TcpSource::MAX_CHUNK;
        assert_eq!(TcpSource::adapt(max, max, max), max);
        // Small reads after a burst shrink it back, not below the minimum.
        assert_eq!(TcpSource::adapt(8 * min, 40, 8 * min), 4 * min);
        assert_eq!(TcpSource::adapt(min, 1, min), min);
    }
}
