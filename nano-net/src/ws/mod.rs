//! The server side of WebSocket (RFC 6455) over the two halves of an upgraded stream.
//!
//! The HTTP upgrade (`http::accept`) hands over the stream and the bytes read past the request
//! head; [`pair`] turns them into a [`WsSource`] and a [`WsSink`] for the agent. Frame headers
//! are parsed and formatted with tungstenite's
//! [`FrameHeader`](tokio_tungstenite::tungstenite::protocol::frame::FrameHeader); everything else is here.
//!
//! Reading: the source reads raw bytes into a buffer of its own (released whenever it has been
//! consumed, so an idle connection holds none), and [`FrameReader`] runs over it: it parses
//! each header, refuses what the protocol or the size limit forbids from the header alone,
//! unmasks the payload of binary and continuation frames in place, moves it over the headers
//! it follows so that everything unmasked in one pass is contiguous, and splits it off the
//! front of the buffer. That chunk is handed to the agent's packet buffer without a copy when
//! the packet buffer is empty (the usual case), appended to it otherwise: the payload is a
//! plain byte stream for the packet decoder, whatever the frame boundaries.
//!
//! | reader state | bytes at the front of the raw buffer | next |
//! |---|---|---|
//! | `Head` | a binary or continuation header | `Payload` (or `Head` for an empty payload) |
//! | `Head` | a ping (whole frame buffered) | `Head`; the pass ends, a pong is queued |
//! | `Head` | a pong (whole frame buffered) | `Head`, ignored |
//! | `Head` | a close (whole frame buffered) | the pass ends (before it, if it unmasked data) |
//! | `Head` | an incomplete header or control frame | the pass ends: more bytes needed |
//! | `Payload` | payload bytes | unmasked and kept; `Head` once the frame is done |
//!
//! Writing: [`WsSink::send_batch`] writes one unmasked binary frame per batch, header and
//! packets in one vectored write. Control frames the source must answer (pong, the close echo)
//! are queued in the write side both halves share, and written by whichever half writes next:
//! the source before it reads on, the sink before its next frame. One task (the agent) drives
//! both halves and never both at once, so the lock around the write side is never contended:
//! it makes the sharing sound. A control frame cut short (a read cancelled while it was being
//! written) is finished by the next writer before anything else; a data frame cut short (only
//! when the connection is being torn down) makes every later write fail instead of writing
//! into the middle of it.
//!
//! Idle memory: on plain TCP neither buffer is held between reads (the source waits for
//! readability first, as `TcpSource` does); a TLS read half cannot wait that way, so it waits
//! with a small read buffer allocated.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use crate::transport::{bounded_write, PacketSink, PacketSource, Progress, TcpSource};

mod frame;

use frame::{
    format_head, Answer, FrameReader, MAX_CLOSE_REASON, MAX_CONTROL_FRAME, MAX_CONTROL_PAYLOAD,
    MAX_SERVER_HEAD,
};

/// Slices gathered per `writev`.
const MAX_SLICES: usize = 64;
/// Frames up to this size (header included) are assembled on the stack and written at once.
const SMALL_FRAME: usize = 512;
#[cfg(test)]
mod tests;

/// The read half of an upgraded stream.
pub(crate) trait WsRead: AsyncRead + Unpin + Send + 'static {
    /// Waits until a read would find bytes, without a buffer. Halves that cannot tell return
    /// at once; their reads then wait with a buffer allocated.
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl WsRead for OwnedReadHalf {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        crate::transport::wait_readable(self)
    }
}

impl<T: AsyncRead + AsyncWrite + Send + 'static> WsRead for tokio::io::ReadHalf<T> {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// A stream the WebSocket upgrade can run on, and how it splits into halves.
pub(crate) trait Upgraded: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The read half.
    type Read: WsRead;
    /// The write half.
    type Write: AsyncWrite + Unpin + Send + 'static;
    /// Splits the stream.
    fn into_halves(self) -> (Self::Read, Self::Write);
}

impl Upgraded for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn into_halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split() // no lock between the halves
    }
}

impl Upgraded for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self) // one TLS session: its halves share it
    }
}

/// The source and sink of one upgraded connection. `leftover` holds the first WebSocket bytes
/// (read with the HTTP request head); frames longer than `max_payload`, and fragmented messages
/// adding up to more, end the connection.
pub(crate) fn pair<R: WsRead, W: AsyncWrite + Unpin + Send + 'static>(
    read: R,
    write: W,
    leftover: BytesMut,
    max_payload: usize,
) -> (WsSource<R, W>, WsSink<W>) {
    let shared = Arc::new(Mutex::new(WriteSide {
        io: write,
        control: [0; MAX_CONTROL_FRAME],
        control_len: 0,
        control_sent: 0,
        close_sent: false,
        mid_frame: false,
    }));
    let source = WsSource {
        io: read,
        raw: if leftover.is_empty() {
            BytesMut::new()
        } else {
            leftover
        },
        reader: FrameReader::new(max_payload),
        chunk: TcpSource::MIN_CHUNK,
        max_chunk: TcpSource::MAX_CHUNK,
        progress: Progress::default(),
        write_timeout: std::time::Duration::from_secs(5),
        write: shared.clone(),
        answer_queued: false,
        peer_closed: false,
    };
    (source, WsSink { write: shared })
}

/// The write half and what both halves write through it. Field order is layout (`repr(C)`):
/// what every data frame touches comes first, the control frame buffer last.
#[repr(C)]
struct WriteSide<W> {
    io: W,
    control_len: u8,
    control_sent: u8,
    /// A close frame was queued: no data frame may follow it.
    close_sent: bool,
    /// A data frame was begun and not finished; nothing else may be written before it ends.
    mid_frame: bool,
    /// A control frame to write (pong, close): `control[control_sent..control_len]` is left.
    control: [u8; MAX_CONTROL_FRAME],
}

impl<W: AsyncWrite + Unpin> WriteSide<W> {
    /// Queues a control frame.
    fn queue_control(&mut self, opcode: Control, payload: &[u8]) -> io::Result<()> {
        if self.control_len != 0 {
            return Err(io::Error::other(
                "websocket: a control frame is already queued",
            ));
        }
        let head = format_head(OpCode::Control(opcode), payload.len(), &mut self.control)?;
        let end = head + payload.len();
        self.control[head..end].copy_from_slice(payload);
        self.control_len = end as u8;
        self.control_sent = 0;
        Ok(())
    }

    /// Writes and flushes the queued control frame, if any.
    fn poll_control(&mut self, cx: &mut Context<'_>, progress: &Progress) -> Poll<io::Result<()>> {
        if self.control_len == 0 {
            return Poll::Ready(Ok(()));
        }
        if self.mid_frame {
            return Poll::Ready(Err(torn()));
        }
        while self.control_sent < self.control_len {
            let left = &self.control[usize::from(self.control_sent)..usize::from(self.control_len)];
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, left))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            progress.mark();
            self.control_sent += n as u8;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.control_len = 0;
        self.control_sent = 0;
        Poll::Ready(Ok(()))
    }
}

fn torn() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "websocket: a frame was left half written",
    )
}

fn lock<W>(shared: &Mutex<WriteSide<W>>) -> MutexGuard<'_, WriteSide<W>> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `head` then every packet of `batch`, resuming after `written` bytes, in as few
/// `writev` calls as the stream takes.
fn poll_write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut Context<'_>,
    head: &[u8],
    batch: &[Bytes],
    written: &mut usize,
    total: usize,
    progress: &Progress,
) -> Poll<io::Result<()>> {
    if *written == 0 && total <= SMALL_FRAME {
        // A small frame (the usual single reply): copied together on the stack and sent with
        // one plain write, cheaper in the kernel than a writev of header + packets.
        let mut frame = [0u8; SMALL_FRAME];
        let mut end = 0;
        for piece in std::iter::once(head).chain(batch.iter().map(|b| &b[..])) {
            frame[end..end + piece.len()].copy_from_slice(piece);
            end += piece.len();
        }
        let w = ready!(Pin::new(&mut *io).poll_write(cx, &frame[..end]))?;
        if w == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        progress.mark();
        *written = w;
    }
    while *written < total {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut n = 0;
        let mut skip = *written;
        for piece in std::iter::once(head).chain(batch.iter().map(|b| &b[..])) {
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            slices[n] = IoSlice::new(&piece[skip..]);
            skip = 0;
            n += 1;
            if n == MAX_SLICES {
                break;
            }
        }
        let w = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?;
        if w == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        progress.mark();
        *written += w;
    }
    Poll::Ready(Ok(()))
}

/// The read side of a server WebSocket: unmasked binary payload for the packet decoder.
pub(crate) struct WsSource<R, W> {
    io: R,
    /// Raw bytes read and not yet parsed; empty and unallocated between reads when idle.
    raw: BytesMut,
    reader: FrameReader,
    /// The next read buffer size (grows with the reads, as `TcpSource`'s does).
    chunk: usize,
    /// The largest read buffer allocated at once (small before the handshake completes).
    max_chunk: usize,
    /// Progress of the answers this half writes, for their write deadline.
    progress: Progress,
    /// How long an answer's write may accept no byte before the read fails.
    write_timeout: std::time::Duration,
    /// The write side, for the pongs and the close echo.
    write: Arc<Mutex<WriteSide<W>>>,
    /// An answer was queued and may not have been written yet (the sink may write it first).
    answer_queued: bool,
    /// The peer's close was received (and its echo queued).
    peer_closed: bool,
}

impl<R: WsRead, W: AsyncWrite + Unpin + Send + 'static> WsSource<R, W> {
    /// Bounds the writes of pongs and close echoes: one that accepts no byte for `t` fails the
    /// read (a peer that pings and never reads cannot park the connection in a write).
    pub(crate) fn with_write_timeout(mut self, t: std::time::Duration) -> Self {
        self.write_timeout = t;
        self
    }

    /// Queues the answer to a ping or a close.
    fn queue_answer(&mut self, answer: Answer) -> io::Result<()> {
        let mut w = lock(&self.write);
        match answer {
            Answer::Ping { payload, len } => {
                if !w.close_sent {
                    w.queue_control(Control::Pong, &payload[..usize::from(len)])?;
                }
            }
            Answer::Close(code) => {
                self.peer_closed = true;
                if !w.close_sent {
                    let code = code.map(u16::to_be_bytes);
                    w.queue_control(Control::Close, code.as_ref().map_or(&[], |c| &c[..]))?;
                    w.close_sent = true;
                }
            }
        }
        self.answer_queued = true;
        Ok(())
    }
}

impl<R: WsRead, W: AsyncWrite + Unpin + Send + 'static> PacketSource for WsSource<R, W> {
    fn said_goodbye(&self) -> bool {
        self.peer_closed
    }

    // Cancel-safe: every await leaves the state in `self` (and what was delivered in `buf`).
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        // Hold no packet buffer while idle. Released whatever its capacity: an empty buffer
        // split off a chunk still holds that chunk, better let go now, while it is in cache.
        if buf.is_empty() {
            *buf = BytesMut::new();
        }
        loop {
            if self.answer_queued {
                let (write, progress) = (&self.write, &self.progress);
                let answer = poll_fn(|cx| lock(write).poll_control(cx, progress));
                bounded_write(answer, progress, self.write_timeout, None)
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timeout"))??;
                self.answer_queued = false;
            }
            if self.peer_closed {
                return Ok(0);
            }
            let pass = self.reader.parse(&mut self.raw)?;
            if self.raw.is_empty() {
                // Everything parsed: let the read buffer's tail go while it is in cache.
                self.raw = BytesMut::new();
            }
            let n = pass.data.len();
            if n > 0 {
                buf.unsplit(pass.data); // no copy when `buf` is empty
            }
            if let Some(answer) = pass.answer {
                self.queue_answer(answer)?;
            }
            if n > 0 {
                return Ok(n); // an answer queued meanwhile is written next time, or by the sink
            }
            if self.answer_queued {
                continue;
            }
            if self.raw.is_empty() {
                // Hold no read buffer while idle either.
                if self.raw.capacity() > 0 {
                    self.raw = BytesMut::new();
                }
                self.io.wait_readable().await?;
            }
            if self.raw.capacity() - self.raw.len() < TcpSource::MIN_CHUNK / 4 {
                self.raw.reserve(self.chunk);
            }
            let spare = self.raw.capacity() - self.raw.len();
            let read = self.io.read_buf(&mut self.raw).await?;
            if read == 0 {
                if self.raw.is_empty() && self.reader.at_boundary() {
                    return Ok(0);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "websocket: connection closed inside a frame",
                ));
            }
            self.chunk = TcpSource::adapt_to(self.chunk, read, spare, self.max_chunk);
        }
    }

    fn limit_reads(&mut self, max: Option<usize>) {
        self.max_chunk = max.map_or(TcpSource::MAX_CHUNK, |m| {
            m.clamp(TcpSource::MIN_CHUNK, TcpSource::MAX_CHUNK)
        });
        self.chunk = self.chunk.min(self.max_chunk);
    }
}

/// The write side of a server WebSocket: one binary frame per batch.
pub(crate) struct WsSink<W> {
    write: Arc<Mutex<WriteSide<W>>>,
}

impl<W: AsyncWrite + Unpin + Send + 'static> PacketSink for WsSink<W> {
    async fn send_batch_tracked(&mut self, batch: &[Bytes], progress: &Progress) -> io::Result<()> {
        let total_payload: usize = batch.iter().map(Bytes::len).sum();
        let mut head = [0u8; MAX_SERVER_HEAD];
        let head_len = format_head(OpCode::Data(Data::Binary), total_payload, &mut head)?;
        let head = &head[..head_len];
        let total = head_len + total_payload;
        let mut written = 0;
        let mut started = false;
        poll_fn(|cx| {
            let mut guard = lock(&self.write);
            let w = &mut *guard;
            if !started {
                // A pong or close the source queued goes first, whole.
                ready!(w.poll_control(cx, progress))?;
                if w.close_sent {
                    return Poll::Ready(Ok(())); // nothing may follow a close frame
                }
                if w.mid_frame {
                    return Poll::Ready(Err(torn())); // an earlier frame was cut short
                }
                w.mid_frame = true;
                started = true;
            }
            if written < total {
                ready!(poll_write_frame(
                    &mut w.io,
                    cx,
                    head,
                    batch,
                    &mut written,
                    total,
                    progress
                ))?;
                w.mid_frame = false;
            }
            Pin::new(&mut w.io).poll_flush(cx)
        })
        .await
    }

    async fn shutdown_tracked(
        &mut self,
        error: Option<String>,
        progress: &Progress,
    ) -> io::Result<()> {
        let mut queued = false;
        poll_fn(|cx| {
            let mut guard = lock(&self.write);
            let w = &mut *guard;
            if !queued {
                ready!(w.poll_control(cx, progress))?;
                if !w.close_sent {
                    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                    let len = close_payload(error.as_deref(), &mut payload);
                    w.queue_control(Control::Close, &payload[..len])?;
                    w.close_sent = true;
                }
                queued = true;
            }
            ready!(w.poll_control(cx, progress))?;
            Pin::new(&mut w.io).poll_shutdown(cx)
        })
        .await
    }
}

/// Our close frame's payload: 1002 and the reason (cut at a char boundary to fit) for a
/// protocol error, 1000 otherwise. Returns its length.
fn close_payload(error: Option<&str>, out: &mut [u8; MAX_CONTROL_PAYLOAD]) -> usize {
    let (code, reason) = match error {
        Some(reason) => (CloseCode::Protocol, reason),
        None => (CloseCode::Normal, ""),
    };
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out[..2].copy_from_slice(&u16::from(code).to_be_bytes());
    out[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    2 + end
}
