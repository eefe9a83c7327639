//! The server side of WebSocket (RFC 6455) over the two halves of an upgraded stream.
//!
//! The HTTP upgrade (`http::accept`) hands over the stream and the bytes read past the request
//! head; [`pair`] turns them into a [`WsSource`] and a [`WsSink`] for the agent. Frame headers
//! are parsed and formatted with tungstenite's [`FrameHeader`]; everything else is here.
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
use std::io::{self, Cursor, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use crate::transport::{PacketSink, PacketSource, TcpSource};

/// The largest control-frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// The largest header of a server frame (unmasked, 64-bit length).
const MAX_SERVER_HEAD: usize = 10;
/// The largest control frame the server writes: a 2-byte header and the payload.
const MAX_CONTROL_FRAME: usize = 2 + MAX_CONTROL_PAYLOAD;
/// The close-reason bytes that fit in a close frame after the 2-byte code.
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;
/// Slices gathered per `writev`.
const MAX_SLICES: usize = 64;
/// Frames up to this size (header included) are assembled on the stack and written at once.
const SMALL_FRAME: usize = 512;

/// A violation of RFC 6455 (or of our size limit) by the client; it ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// Client frames must be masked (§5.1).
    #[error("websocket: unmasked client frame")]
    Unmasked,
    /// RSV1-3 set although no extension was negotiated (§5.2).
    #[error("websocket: reserved bits set, but no extension was negotiated")]
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    #[error("websocket: reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// Text frames carry no nano packets.
    #[error("websocket: text frames are not part of the nano protocol")]
    Text,
    /// A control frame longer than 125 bytes (§5.5).
    #[error("websocket: control frame of {0} bytes (at most 125)")]
    ControlTooLong(u64),
    /// A control frame without FIN (§5.5).
    #[error("websocket: fragmented control frame")]
    FragmentedControl,
    /// A frame header announcing more than the limit.
    #[error("websocket: frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced payload length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A fragmented message growing past the limit.
    #[error("websocket: message exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The limit.
        max: u64,
    },
    /// A continuation frame with no message to continue (§5.4).
    #[error("websocket: continuation frame outside a message")]
    StrayContinuation,
    /// A new data frame while a fragmented message is still open (§5.4).
    #[error("websocket: new message before the previous one ended")]
    UnfinishedMessage,
    /// A close frame whose payload is one byte, or whose reason is not UTF-8 (§5.5.1).
    #[error("websocket: malformed close frame")]
    BadClose,
    /// A close code that must not be sent (§7.4).
    #[error("websocket: invalid close code {0}")]
    BadCloseCode(u16),
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// A control frame the server must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A ping and its (unmasked) payload: answered with a pong carrying the same bytes.
    Ping {
        payload: [u8; MAX_CONTROL_PAYLOAD],
        len: u8,
    },
    /// A close with its code, if it had one: echoed, then the connection ends.
    Close(Option<u16>),
}

/// What one pass over the raw bytes found.
#[derive(Debug)]
struct Pass {
    /// Unmasked payload bytes of binary and continuation frames, in order.
    data: BytesMut,
    /// A ping or close, with which the pass ended.
    answer: Option<Answer>,
}

/// Progress within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameState {
    /// At a frame header.
    Head,
    /// Inside the payload of a binary or continuation frame.
    Payload {
        /// Payload bytes still to come.
        left: u64,
        /// The frame's masking key.
        mask: [u8; 4],
        /// Payload bytes already unmasked, modulo 4: where in the key the next byte starts.
        phase: usize,
    },
}

/// The sans-IO frame parser of one connection (client to server).
#[derive(Debug)]
pub(crate) struct FrameReader {
    state: FrameState,
    /// A fragmented binary message is open: continuation frames are expected.
    in_message: bool,
    /// Payload bytes of the open message so far.
    message_len: u64,
    /// The largest frame payload and message accepted.
    max_payload: u64,
}

impl FrameReader {
    pub(crate) fn new(max_payload: usize) -> Self {
        FrameReader {
            state: FrameState::Head,
            in_message: false,
            message_len: 0,
            max_payload: max_payload as u64,
        }
    }

    /// Whether the stream may end here: between frames and messages.
    fn at_boundary(&self) -> bool {
        self.state == FrameState::Head && !self.in_message
    }

    /// Runs over `raw`: consumes every complete header and every payload byte there, unmasks
    /// the payload and returns it contiguous, split off the front of `raw`. Stops at an
    /// incomplete header or control frame (left in `raw`), after a ping, and at a close: after
    /// it when nothing was unmasked yet, before it otherwise (the data it follows goes first).
    ///
    /// Never reserves memory: what a header announces is only compared with the limit.
    fn parse(&mut self, raw: &mut BytesMut) -> Result<Pass, FrameError> {
        // raw[..out]: unmasked payload; raw[out..pos]: consumed headers; raw[pos..]: unread.
        // Until some payload is kept, consumed bytes are dropped from the front instead (no
        // gap, so the first frame's payload is unmasked where it lies and never moved).
        let mut out = 0;
        let mut pos = 0;
        let mut answer = None;
        while pos < raw.len() {
            if let FrameState::Payload { left, mask, phase } = self.state {
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(raw.len() - pos);
                if pos != out {
                    raw.copy_within(pos..pos + n, out);
                }
                unmask(&mut raw[out..out + n], mask, phase);
                out += n;
                pos += n;
                let left = left - n as u64;
                self.state = if left == 0 {
                    FrameState::Head
                } else {
                    FrameState::Payload {
                        left,
                        mask,
                        phase: (phase + n) % 4,
                    }
                };
                continue;
            }
            let mut cursor = Cursor::new(&raw[pos..]);
            let (head, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                // The only error parsing a header from memory: a reserved opcode.
                Err(_) => return Err(FrameError::ReservedOpcode(raw[pos] & 0x0f)),
            };
            let head_len = cursor.position() as usize;
            if head.rsv1 || head.rsv2 || head.rsv3 {
                return Err(FrameError::ReservedBits);
            }
            let Some(mask) = head.mask else {
                return Err(FrameError::Unmasked);
            };
            match head.opcode {
                OpCode::Control(control) => {
                    if !head.is_final {
                        return Err(FrameError::FragmentedControl);
                    }
                    if len > MAX_CONTROL_PAYLOAD as u64 {
                        return Err(FrameError::ControlTooLong(len));
                    }
                    let len = len as usize;
                    if raw.len() - pos < head_len + len {
                        break; // a control frame is handled whole (at most 139 bytes)
                    }
                    if control == Control::Close && out > 0 {
                        break; // the data before the close goes to the agent first
                    }
                    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                    payload[..len].copy_from_slice(&raw[pos + head_len..pos + head_len + len]);
                    unmask(&mut payload[..len], mask, 0);
                    consume(raw, &mut pos, out, head_len + len);
                    match control {
                        Control::Ping => {
                            answer = Some(Answer::Ping {
                                payload,
                                len: len as u8,
                            });
                            break;
                        }
                        Control::Pong => {}
                        Control::Close => {
                            answer = Some(Answer::Close(close_code(&payload[..len])?));
                            break;
                        }
                        Control::Reserved(op) => return Err(FrameError::ReservedOpcode(op)),
                    }
                }
                OpCode::Data(data) => {
                    match data {
                        Data::Binary if self.in_message => {
                            return Err(FrameError::UnfinishedMessage)
                        }
                        Data::Binary => self.message_len = 0,
                        Data::Continue if !self.in_message => {
                            return Err(FrameError::StrayContinuation)
                        }
                        Data::Continue => {}
                        Data::Text => return Err(FrameError::Text),
                        Data::Reserved(op) => return Err(FrameError::ReservedOpcode(op)),
                    }
                    if len > self.max_payload {
                        return Err(FrameError::FrameTooLarge {
                            len,
                            max: self.max_payload,
                        });
                    }
                    if len > self.max_payload - self.message_len {
                        return Err(FrameError::MessageTooLarge {
                            max: self.max_payload,
                        });
                    }
                    self.message_len += len;
                    self.in_message = !head.is_final;
                    consume(raw, &mut pos, out, head_len);
                    if len > 0 {
                        self.state = FrameState::Payload {
                            left: len,
                            mask,
                            phase: 0,
                        };
                    }
                }
            }
        }
        let data = if out > 0 {
            raw.split_to(out)
        } else {
            BytesMut::new()
        };
        raw.advance(pos - out);
        Ok(Pass { data, answer })
    }
}

/// Skips `n` consumed bytes at `pos`: dropped from the front of `raw` while no payload is kept
/// (`out == 0`, so `pos == 0`), left as a gap for the next payload to cover otherwise.
fn consume(raw: &mut BytesMut, pos: &mut usize, out: usize, n: usize) {
    if out == 0 {
        raw.advance(n);
    } else {
        *pos += n;
    }
}

/// The code of a close frame's payload (none when empty); checks the reason is UTF-8.
fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::BadClose),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !CloseCode::from(code).is_allowed() {
                return Err(FrameError::BadCloseCode(code));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::BadClose);
            }
            Ok(Some(code))
        }
    }
}

/// XORs `data` with `mask`, starting `phase` bytes into the key.
fn unmask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    let key: [u8; 4] = std::array::from_fn(|i| mask[(phase + i) % 4]);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = data.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    for (b, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

/// Formats a server (unmasked, final) frame header into `out`; returns its length.
fn format_head(opcode: OpCode, len: usize, out: &mut [u8]) -> io::Result<usize> {
    let head = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let room = out.len();
    let mut w = out;
    head.format(len as u64, &mut w)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(room - w.len())
}

/// The read half of an upgraded stream.
pub(crate) trait WsRead: AsyncRead + Unpin + Send + 'static {
    /// Waits until a read would find bytes, without a buffer. Halves that cannot tell return
    /// at once; their reads then wait with a buffer allocated.
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl WsRead for OwnedReadHalf {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
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
        write: shared.clone(),
        answer_queued: false,
        peer_closed: false,
    };
    (source, WsSink { write: shared })
}

/// The write half and what both halves write through it.
struct WriteSide<W> {
    io: W,
    /// A control frame to write (pong, close): `control[control_sent..control_len]` is left.
    control: [u8; MAX_CONTROL_FRAME],
    control_len: u8,
    control_sent: u8,
    /// A close frame was queued: no data frame may follow it.
    close_sent: bool,
    /// A data frame was begun and not finished; nothing else may be written before it ends.
    mid_frame: bool,
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
    fn poll_control(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
    /// The write side, for the pongs and the close echo.
    write: Arc<Mutex<WriteSide<W>>>,
    /// An answer was queued and may not have been written yet (the sink may write it first).
    answer_queued: bool,
    /// The peer's close was received (and its echo queued).
    peer_closed: bool,
}

impl<R: WsRead, W: AsyncWrite + Unpin + Send + 'static> WsSource<R, W> {
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
    // Cancel-safe: every await leaves the state in `self` (and what was delivered in `buf`).
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        // Hold no packet buffer while idle.
        if buf.is_empty() && buf.capacity() > 0 {
            *buf = BytesMut::new();
        }
        loop {
            if self.answer_queued {
                poll_fn(|cx| lock(&self.write).poll_control(cx)).await?;
                self.answer_queued = false;
            }
            if self.peer_closed {
                return Ok(0);
            }
            let pass = self.reader.parse(&mut self.raw)?;
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
            self.chunk = TcpSource::adapt(self.chunk, read, spare);
        }
    }
}

/// The write side of a server WebSocket: one binary frame per batch.
pub(crate) struct WsSink<W> {
    write: Arc<Mutex<WriteSide<W>>>,
}

impl<W: AsyncWrite + Unpin + Send + 'static> PacketSink for WsSink<W> {
    async fn send_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
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
                ready!(w.poll_control(cx))?;
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
                    total
                ))?;
                w.mid_frame = false;
            }
            Pin::new(&mut w.io).poll_flush(cx)
        })
        .await
    }

    async fn shutdown(&mut self, error: Option<String>) -> io::Result<()> {
        let mut queued = false;
        poll_fn(|cx| {
            let mut guard = lock(&self.write);
            let w = &mut *guard;
            if !queued {
                ready!(w.poll_control(cx))?;
                if !w.close_sent {
                    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                    let len = close_payload(error.as_deref(), &mut payload);
                    w.queue_control(Control::Close, &payload[..len])?;
                    w.close_sent = true;
                }
                queued = true;
            }
            ready!(w.poll_control(cx))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use nano_core::protocol::{Packet, PacketCodec, PacketType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const MAX: usize = 1024;

    type Source = WsSource<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;
    type Sink = WsSink<WriteHalf<DuplexStream>>;

    /// A client frame, built by hand: FIN, RSV, opcode, masked length, key, masked payload.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        f
    }

    const BIN: u8 = 0x82; // FIN + binary
    const BIN_MORE: u8 = 0x02; // binary, more to come
    const CONT: u8 = 0x00; // continuation, more to come
    const CONT_FIN: u8 = 0x80; // last continuation
    const PING: u8 = 0x89;
    const PONG: u8 = 0x8a;
    const CLOSE: u8 = 0x88;

    fn packet(body: &str) -> Vec<u8> {
        Packet::new(PacketType::Data, body.as_bytes().to_vec())
            .encode()
            .unwrap()
            .to_vec()
    }

    fn pair_over_duplex() -> (Source, Sink, DuplexStream) {
        let (server, client) = tokio::io::duplex(1 << 20);
        let (r, w) = tokio::io::split(server);
        let (source, sink) = pair(r, w, BytesMut::new(), MAX);
        (source, sink, client)
    }

    /// Reads until `want` bytes are in `buf` (or the source ends).
    async fn read_n(source: &mut Source, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        while buf.len() < want {
            if source.read_into(buf).await? == 0 {
                return Ok(0);
            }
        }
        Ok(buf.len())
    }

    fn decode_all(buf: &mut BytesMut) -> Vec<Bytes> {
        let mut codec = PacketCodec::new(MAX);
        let mut out = Vec::new();
        while let Some(p) = codec.decode(buf).unwrap() {
            out.push(p.body);
        }
        out
    }

    /// Parses one server frame: (first byte, payload); asserts it is unmasked.
    async fn server_frame(client: &mut DuplexStream) -> (u8, Vec<u8>) {
        let mut two = [0u8; 2];
        client.read_exact(&mut two).await.unwrap();
        assert_eq!(two[1] & 0x80, 0, "server frames are unmasked");
        let len = match two[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                client.read_exact(&mut l).await.unwrap();
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                client.read_exact(&mut l).await.unwrap();
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        client.read_exact(&mut payload).await.unwrap();
        (two[0], payload)
    }

    #[tokio::test]
    async fn a_binary_frame_with_two_packets() {
        let (mut source, _sink, mut client) = pair_over_duplex();
        let payload = [packet("one"), packet("two")].concat();
        client.write_all(&frame(BIN, &payload)).await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(source.read_into(&mut buf).await.unwrap(), payload.len());
        assert_eq!(&buf[..], &payload[..]);
        assert_eq!(decode_all(&mut buf), vec!["one", "two"]);
    }

    #[tokio::test]
    async fn a_packet_split_across_frames_and_continuations() {
        let p = packet("a packet in pieces");
        // Two frames, then four (a binary frame and three continuations, one of them empty).
        let two = [frame(BIN_MORE, &p[..5]), frame(CONT_FIN, &p[5..])].concat();
        let four = [
            frame(BIN_MORE, &p[..2]),
            frame(CONT, &p[2..9]),
            frame(CONT, &[]),
            frame(CONT_FIN, &p[9..]),
        ]
        .concat();
        for wire in [two, four] {
            let (mut source, _sink, mut client) = pair_over_duplex();
            client.write_all(&wire).await.unwrap();
            let mut buf = BytesMut::new();
            read_n(&mut source, &mut buf, p.len()).await.unwrap();
            assert_eq!(&buf[..], &p[..]);
            assert_eq!(decode_all(&mut buf), vec!["a packet in pieces"]);
            assert!(source.reader.at_boundary());
        }
    }

    /// A stream of frames of every kind the reader passes through or answers.
    fn mixed_stream() -> (Vec<u8>, Vec<u8>) {
        let p1 = packet("first");
        let p2 = packet(&"x".repeat(300)); // a 16-bit length
        let p3 = packet("third");
        let wire = [
            frame(BIN, &p1),
            frame(PONG, b"ignored"),
            frame(BIN_MORE, &p2[..100]),
            frame(PING, b"in between"), // control frames may come inside a message
            frame(CONT_FIN, &p2[100..]),
            frame(BIN, &[]),
            frame(BIN, &[p3.clone(), packet("fourth")].concat()),
        ]
        .concat();
        let data = [p1, p2, p3, packet("fourth")].concat();
        (wire, data)
    }

    /// Feeds `parts` to a reader one after the other; returns the data and the pings seen.
    fn feed(parts: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut reader = FrameReader::new(MAX);
        let mut raw = BytesMut::new();
        let mut data = Vec::new();
        let mut pings = 0;
        for part in parts {
            raw.extend_from_slice(part);
            loop {
                let pass = reader.parse(&mut raw).unwrap();
                data.extend_from_slice(&pass.data);
                match pass.answer {
                    Some(Answer::Ping { payload, len }) => {
                        assert_eq!(&payload[..usize::from(len)], b"in between");
                        pings += 1;
                    }
                    Some(Answer::Close(_)) => panic!("no close was sent"),
                    None if pass.data.is_empty() => break,
                    None => {}
                }
            }
        }
        assert!(reader.at_boundary() && raw.is_empty());
        (data, pings)
    }

    #[test]
    fn frames_split_at_every_byte_boundary() {
        let (wire, data) = mixed_stream();
        assert_eq!(feed(&[&wire]), (data.clone(), 1));
        for at in 0..=wire.len() {
            assert_eq!(feed(&[&wire[..at], &wire[at..]]), (data.clone(), 1), "{at}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(feed(&bytes), (data, 1));
    }

    #[tokio::test]
    async fn frames_arriving_a_byte_at_a_time() {
        let (wire, data) = mixed_stream();
        let (mut source, _sink, mut client) = pair_over_duplex();
        let writer = tokio::spawn(async move {
            for b in wire {
                client.write_all(&[b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let mut buf = BytesMut::new();
        read_n(&mut source, &mut buf, data.len()).await.unwrap();
        assert_eq!(&buf[..], &data[..]);
        let mut client = writer.await.unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (PONG, b"in between".to_vec())
        );
    }

    #[tokio::test]
    async fn a_ping_is_answered_with_its_payload() {
        let (mut source, _sink, mut client) = pair_over_duplex();
        let p = packet("after the ping");
        client
            .write_all(&[frame(PING, b"are you there"), frame(BIN, &p)].concat())
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        read_n(&mut source, &mut buf, p.len()).await.unwrap();
        assert_eq!(&buf[..], &p[..]);
        assert_eq!(
            server_frame(&mut client).await,
            (PONG, b"are you there".to_vec())
        );
    }

    #[tokio::test]
    async fn a_pong_still_queued_goes_before_the_next_frame() {
        let (mut source, mut sink, mut client) = pair_over_duplex();
        let p = packet("with a ping behind");
        client
            .write_all(&[frame(BIN, &p), frame(PING, b"p")].concat())
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        read_n(&mut source, &mut buf, p.len()).await.unwrap();
        // The ping was parsed with the data, and its pong queued behind it.
        assert!(source.answer_queued);
        let reply = Bytes::from(packet("reply"));
        sink.send_batch(std::slice::from_ref(&reply)).await.unwrap();
        assert_eq!(server_frame(&mut client).await, (PONG, b"p".to_vec()));
        assert_eq!(server_frame(&mut client).await, (BIN, reply.to_vec()));
    }

    #[tokio::test]
    async fn a_close_is_echoed_and_ends_the_source() {
        let (mut source, mut sink, mut client) = pair_over_duplex();
        let p = packet("last words");
        let close = [&1001u16.to_be_bytes()[..], b"bye"].concat();
        client
            .write_all(&[frame(BIN, &p), frame(CLOSE, &close)].concat())
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        // The data before the close is delivered first, then the close ends the source.
        assert_eq!(source.read_into(&mut buf).await.unwrap(), p.len());
        assert_eq!(source.read_into(&mut buf).await.unwrap(), 0);
        assert_eq!(&buf[..], &p[..]);
        assert_eq!(
            server_frame(&mut client).await,
            (CLOSE, 1001u16.to_be_bytes().to_vec())
        );
        // Nothing follows: no data frame, no second close.
        sink.send_batch(&[Bytes::from(packet("late"))])
            .await
            .unwrap();
        sink.shutdown(None).await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[tokio::test]
    async fn an_empty_close_gets_an_empty_close() {
        let (mut source, _sink, mut client) = pair_over_duplex();
        client.write_all(&frame(CLOSE, &[])).await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(source.read_into(&mut buf).await.unwrap(), 0);
        assert_eq!(server_frame(&mut client).await, (CLOSE, vec![]));
    }

    /// Sends `wire`, expects `error` at once, and that nothing near the announced size was
    /// allocated.
    async fn refused(wire: Vec<u8>, error: FrameError) {
        let (mut source, _sink, mut client) = pair_over_duplex();
        client.write_all(&wire).await.unwrap();
        let mut buf = BytesMut::new();
        let e = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            source.read_into(&mut buf),
        )
        .await
        .expect("refused from the header, without waiting for the payload")
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), error.to_string());
        assert!(buf.capacity() <= TcpSource::MAX_CHUNK);
        assert!(source.raw.capacity() <= TcpSource::MAX_CHUNK);
    }

    #[tokio::test]
    async fn protocol_violations_are_refused_from_the_header() {
        let p = packet("x");
        let mut unmasked = frame(BIN, &p);
        unmasked[1] &= 0x7f;
        unmasked.drain(2..6);
        refused(unmasked, FrameError::Unmasked).await;
        for rsv in [0x40, 0x20, 0x10] {
            refused(frame(BIN | rsv, &p), FrameError::ReservedBits).await;
        }
        refused(frame(0x81, b"{}"), FrameError::Text).await;
        refused(frame(0x83, &p), FrameError::ReservedOpcode(3)).await;
        refused(frame(0x8b, &[]), FrameError::ReservedOpcode(0xb)).await;
        refused(frame(CONT_FIN, &p), FrameError::StrayContinuation).await;
        refused(
            [frame(BIN_MORE, &p), frame(BIN, &p)].concat(),
            FrameError::UnfinishedMessage,
        )
        .await;
        refused(frame(0x09, b"ping"), FrameError::FragmentedControl).await;
        refused(frame(CLOSE, &[3]), FrameError::BadClose).await;
        refused(
            frame(CLOSE, &1005u16.to_be_bytes()),
            FrameError::BadCloseCode(1005),
        )
        .await;
        refused(
            frame(CLOSE, &[0x03, 0xe8, 0xff, 0xfe]),
            FrameError::BadClose,
        )
        .await;
    }

    #[tokio::test]
    async fn announced_sizes_are_refused_before_any_payload() {
        // A header announcing 2^62 bytes, with no payload behind it.
        let mut huge = vec![BIN, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
        huge.extend_from_slice(&MASK);
        refused(
            huge,
            FrameError::FrameTooLarge {
                len: 1 << 62,
                max: MAX as u64,
            },
        )
        .await;
        // Just over the limit.
        let mut over = vec![BIN, 0x80 | 126];
        over.extend_from_slice(&(MAX as u16 + 1).to_be_bytes());
        over.extend_from_slice(&MASK);
        refused(
            over,
            FrameError::FrameTooLarge {
                len: MAX as u64 + 1,
                max: MAX as u64,
            },
        )
        .await;
        // A fragmented message adding up to more than the limit: refused at the second
        // header, after the first frame's payload was delivered.
        let half = vec![0u8; MAX / 2 + 1];
        let mut parts = [frame(BIN_MORE, &half), frame(CONT, &half)].concat();
        parts.truncate(parts.len() - half.len()); // the second header is enough
        let (mut source, _sink, mut client) = pair_over_duplex();
        client.write_all(&parts).await.unwrap();
        let mut buf = BytesMut::new();
        let e = loop {
            match source.read_into(&mut buf).await {
                Ok(n) => assert!(n > 0 && buf.len() <= half.len()),
                Err(e) => break e,
            }
        };
        let error = FrameError::MessageTooLarge { max: MAX as u64 };
        assert_eq!(e.to_string(), error.to_string());
        // A control frame over 125 bytes, announced and not sent.
        let mut ping = vec![PING, 0x80 | 126];
        ping.extend_from_slice(&126u16.to_be_bytes());
        ping.extend_from_slice(&MASK);
        refused(ping, FrameError::ControlTooLong(126)).await;
    }

    #[tokio::test]
    async fn a_batch_is_one_unmasked_binary_frame() {
        for sizes in [&[3usize, 5][..], &[100, 100], &[40_000, 40_000, 1]] {
            let (_source, mut sink, mut client) = pair_over_duplex();
            let batch: Vec<Bytes> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
                .collect();
            sink.send_batch(&batch).await.unwrap();
            let (first, payload) = server_frame(&mut client).await;
            assert_eq!(first, BIN);
            assert_eq!(payload, batch.concat());
        }
    }

    #[tokio::test]
    async fn a_small_frame_written_in_pieces_arrives_whole() {
        // A 7-byte pipe: the stack-assembled small frame goes out in several partial writes,
        // the rest through the vectored path.
        let (server, mut client) = tokio::io::duplex(7);
        let (r, w) = tokio::io::split(server);
        let (_source, mut sink) = pair(r, w, BytesMut::new(), MAX);
        let batch = [Bytes::from(vec![1u8; 30]), Bytes::from(vec![2u8; 90])];
        let reader = tokio::spawn(async move {
            let frame = server_frame(&mut client).await;
            (frame, client)
        });
        sink.send_batch(&batch).await.unwrap();
        let ((first, payload), _client) = reader.await.unwrap();
        assert_eq!(first, BIN);
        assert_eq!(payload, batch.concat());
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_never_followed() {
        let (server, mut client) = tokio::io::duplex(16);
        let (r, w) = tokio::io::split(server);
        let (_source, mut sink) = pair(r, w, BytesMut::new(), MAX);
        let big = Bytes::from(vec![7u8; 100]);
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            sink.send_batch(std::slice::from_ref(&big)),
        )
        .await;
        assert!(cut.is_err(), "the duplex holds 16 bytes");
        let e = sink.send_batch(&[Bytes::from(packet("next"))]).await;
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert!(sink.shutdown(None).await.is_err());
        let mut first = [0u8; 16];
        client.read_exact(&mut first).await.unwrap();
        assert_eq!(&first[..4], &[BIN, 100, 7, 7]);
    }

    #[tokio::test]
    async fn shutdown_sends_a_close_frame() {
        let (_source, mut sink, mut client) = pair_over_duplex();
        sink.shutdown(None).await.unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (CLOSE, 1000u16.to_be_bytes().to_vec())
        );
        assert_eq!(client.read(&mut [0u8; 1]).await.unwrap(), 0);

        let (_source, mut sink, mut client) = pair_over_duplex();
        let reason = "é".repeat(100); // 200 bytes: cut to 122, the last whole char
        sink.shutdown(Some(reason.clone())).await.unwrap();
        let (first, payload) = server_frame(&mut client).await;
        assert_eq!(first, CLOSE);
        assert_eq!(&payload[..2], &1002u16.to_be_bytes());
        assert_eq!(payload.len(), 2 + 122);
        assert!(reason.starts_with(std::str::from_utf8(&payload[2..]).unwrap()));
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_read_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (r, w) = server.into_halves();
        let (mut source, _sink) = pair(r, w, BytesMut::new(), MAX);
        let p = packet("hello");
        client.write_all(&frame(BIN, &p)).await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(source.read_into(&mut buf).await.unwrap(), p.len());
        assert_eq!(decode_all(&mut buf).len(), 1);
        // Waiting for the next frame: neither buffer is held.
        let idle = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            source.read_into(&mut buf),
        )
        .await;
        assert!(idle.is_err());
        assert_eq!((buf.capacity(), source.raw.capacity()), (0, 0));
    }

    #[test]
    fn payload_is_unmasked_where_it_lies() {
        let (p1, p2) = (packet("one"), packet("two"));
        let mut raw = BytesMut::from(&[frame(BIN, &p1), frame(BIN, &p2)].concat()[..]);
        let start = raw.as_ptr() as usize;
        let pass = FrameReader::new(MAX).parse(&mut raw).unwrap();
        // The first payload stays put (after its 6-byte header); the second joins it.
        assert_eq!(pass.data.as_ptr() as usize, start + 6);
        assert_eq!(&pass.data[..], &[p1, p2].concat()[..]);
        assert!(raw.is_empty());
        // Handed to an empty packet buffer, it is not copied either.
        let mut buf = BytesMut::new();
        let at = pass.data.as_ptr();
        buf.unsplit(pass.data);
        assert_eq!(buf.as_ptr(), at);
    }

    #[test]
    fn unmasking_from_any_phase() {
        let data: Vec<u8> = (0..=40).collect();
        for phase in 0..4 {
            let mut d = data.clone();
            unmask(&mut d, MASK, phase);
            for (i, (a, b)) in d.iter().zip(&data).enumerate() {
                assert_eq!(*a, b ^ MASK[(phase + i) % 4]);
            }
        }
    }
}
