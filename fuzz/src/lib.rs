//! Helpers shared by the fuzz targets: how an input is cut into reads, an in-memory stream
//! that delivers those reads, and a poll loop for futures that never wait on anything else.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use nano_net::fuzzing::{Answer, FrameError, FrameReader};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Cuts `len` bytes into consecutive chunk lengths chosen by `seed`.
///
/// The low 3 bits pick the largest chunk (0..=6: 1, 4, 16, 64, 256, 1024, 4096 bytes; 7: the
/// whole input in one chunk), the other bits seed a xorshift generator for the lengths, so the
/// fuzzer controls both the granularity and the pattern with one byte.
#[derive(Debug, Clone)]
pub struct Splits {
    left: usize,
    max: usize,
    state: u32,
}

impl Splits {
    /// The chunks of `len` bytes for `seed`.
    pub fn new(seed: u8, len: usize) -> Self {
        let max = match seed & 7 {
            7 => usize::MAX,
            k => 1 << (k * 2), // 1, 4, 16, 64, 256, 1024, 4096
        };
        Splits {
            left: len,
            max,
            state: u32::from(seed).wrapping_mul(0x9E37_79B9) | 1,
        }
    }
}

impl Iterator for Splits {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        let n = if self.max == usize::MAX {
            self.left
        } else {
            // xorshift32
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            1 + (self.state as usize) % self.max
        };
        let n = n.min(self.left);
        self.left -= n;
        Some(n)
    }
}

/// An in-memory stream: reads deliver `input` in the chunks of a [`Splits`] (a chunk larger
/// than the reader's buffer over several reads), then end of stream; writes are collected.
#[derive(Debug)]
pub struct MockStream {
    input: Vec<u8>,
    pos: usize,
    splits: Splits,
    /// Bytes left of the current chunk.
    chunk_left: usize,
    /// Everything written to the stream.
    pub written: Vec<u8>,
    /// `shutdown` was called.
    pub shut: bool,
}

impl MockStream {
    /// A stream reading `input` in chunks chosen by `seed`.
    pub fn new(input: &[u8], seed: u8) -> Self {
        MockStream {
            input: input.to_vec(),
            pos: 0,
            splits: Splits::new(seed, input.len()),
            chunk_left: 0,
            written: Vec::new(),
            shut: false,
        }
    }

    /// Bytes of the input delivered so far.
    pub fn delivered(&self) -> usize {
        self.pos
    }
}

impl AsyncRead for MockStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.chunk_left == 0 {
            this.chunk_left = this.splits.next().unwrap_or(0);
        }
        // chunk_left == 0 here means end of stream: nothing put, Ok.
        let n = this.chunk_left.min(buf.remaining());
        buf.put_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        this.chunk_left -= n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MockStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut = true;
        Poll::Ready(Ok(()))
    }
}

/// Polls `fut` to completion with a no-op waker. Everything the targets drive only waits on a
/// [`MockStream`], which is always ready, so a future still pending after a few polls is hung:
/// that is a bug, and this panics.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..16 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("future still pending on an always-ready stream: it would hang a connection");
}

/// A [`MockStream`] shared with the test, for code that takes its stream by value and keeps it
/// (`WsSource` splits it in halves): the test still sees what was written.
#[derive(Debug, Clone)]
pub struct SharedStream(pub Arc<Mutex<MockStream>>);

impl SharedStream {
    /// A shared stream reading `input` in chunks chosen by `seed`.
    pub fn new(input: &[u8], seed: u8) -> Self {
        SharedStream(Arc::new(Mutex::new(MockStream::new(input, seed))))
    }

    /// The stream.
    pub fn lock(&self) -> MutexGuard<'_, MockStream> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}

/// The most a quiescent pass leaves: a control frame one byte short. Its header can be the
/// longest one (14 bytes), as a peer may encode a length of at most 125 in 64 bits.
pub const MAX_LEFT: usize = 14 + 125 - 1;

/// What [`frame_run`] saw.
#[derive(Debug, Default)]
pub struct FrameRun {
    /// The unmasked payload bytes, in order.
    pub data: Vec<u8>,
    /// Each answer, with the number of payload bytes delivered before it.
    pub answers: Vec<(usize, Answer)>,
    /// The error that ended it.
    pub error: Option<FrameError>,
    /// It ended with a close.
    pub closed: bool,
    /// Bytes left unparsed at the end.
    pub left: usize,
    /// The reader was at a frame and message boundary at the end.
    pub boundary: bool,
}

/// Runs a [`FrameReader`] over `stream` arriving in `chunks`, as `WsSource` does: after each
/// arrival, passes until one yields nothing; a close or an error ends it. Asserts that no pass
/// grows the buffer and that a quiet pass leaves at most an incomplete control frame.
pub fn frame_run(limit: usize, stream: &[u8], chunks: impl Iterator<Item = usize>) -> FrameRun {
    let mut reader = FrameReader::new(limit);
    let mut raw = BytesMut::new();
    let mut out = FrameRun::default();
    let mut fed = 0;
    'feed: for n in chunks {
        raw.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let cap = raw.capacity();
            let (data, answer) = match reader.parse(&mut raw) {
                Ok(pass) => pass,
                Err(e) => {
                    out.error = Some(e);
                    break 'feed;
                }
            };
            assert!(raw.capacity() <= cap, "a pass grew the buffer");
            let progress = !data.is_empty() || answer.is_some();
            out.data.extend_from_slice(&data);
            drop(data);
            if let Some(answer) = answer {
                if let Answer::Ping(payload) = &answer {
                    assert!(payload.len() <= 125);
                }
                let close = matches!(answer, Answer::Close(_));
                out.answers.push((out.data.len(), answer));
                if close {
                    out.closed = true;
                    break 'feed;
                }
            }
            if !progress {
                assert!(
                    raw.len() <= MAX_LEFT,
                    "left {} bytes after a quiet pass",
                    raw.len()
                );
                break;
            }
        }
    }
    out.left = raw.len();
    out.boundary = reader.at_boundary();
    out
}

/// The payload limits the WebSocket targets try.
pub const WS_LIMITS: [usize; 8] = [0, 1, 125, 126, 1000, 65_535, 65_536, 1 << 20];
