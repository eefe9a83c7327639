//! What the agent reads from and writes to ([`PacketSource`], [`PacketSink`]), and the raw
//! stream paths (TCP, TLS over TCP). WebSocket's are in `ws`. Both feed the same incremental
//! packet decoder.

use std::future::Future;
use std::io::{self, IoSlice};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where inbound bytes come from.
pub(crate) trait PacketSource: Send + 'static {
    /// Appends what arrived to `buf`; `Ok(0)` means the peer closed.
    fn read_into(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;
}

/// Where outbound packets go.
pub(crate) trait PacketSink: Send + 'static {
    /// Writes every packet of the batch (one vectored write on streams, one frame on
    /// WebSocket) and flushes.
    fn send_batch(&mut self, batch: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send;

    /// Closes the write side; `error` is a protocol-error reason for a WebSocket close frame.
    fn shutdown(&mut self, error: Option<String>) -> impl Future<Output = io::Result<()>> + Send;
}

/// The read half of a byte stream.
pub(crate) struct StreamSource<R>(pub R);

impl<R: AsyncRead + Unpin + Send + 'static> PacketSource for StreamSource<R> {
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        self.0.read_buf(buf).await
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
        }
    }

    /// The next buffer size after a read of `n` bytes into `spare` free bytes.
    pub(crate) fn adapt(chunk: usize, n: usize, spare: usize) -> usize {
        if n == spare {
            (chunk * 2).min(Self::MAX_CHUNK)
        } else if n < chunk / 4 {
            (chunk / 2).max(Self::MIN_CHUNK)
        } else {
            chunk
        }
    }
}

impl PacketSource for TcpSource {
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
        self.chunk = Self::adapt(self.chunk, n, spare);
        Ok(n)
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
    async fn send_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
        write_all_vectored(&mut self.0, batch).await?;
        self.0.flush().await
    }

    async fn shutdown(&mut self, _error: Option<String>) -> io::Result<()> {
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
