//! Client frames in, server frame headers out: the sans-IO half of the WebSocket side.
//!
//! [`FrameReader`] parses, checks and unmasks what a client sends (see the table in the
//! parent module); [`format_head`] writes the header of a server frame.

use std::io::{self, Cursor};

use bytes::{Buf, BytesMut};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// The largest control-frame payload (RFC 6455 §5.5).
pub(super) const MAX_CONTROL_PAYLOAD: usize = 125;
/// The largest header of a server frame (unmasked, 64-bit length).
pub(super) const MAX_SERVER_HEAD: usize = 10;
/// The largest control frame the server writes: a 2-byte header and the payload.
pub(super) const MAX_CONTROL_FRAME: usize = 2 + MAX_CONTROL_PAYLOAD;
/// The close-reason bytes that fit in a close frame after the 2-byte code.
pub(super) const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// A violation of RFC 6455 (or of our size limit) by the client; it ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FrameError {
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
pub(super) enum Answer {
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
pub(super) struct Pass {
    /// Unmasked payload bytes of binary and continuation frames, in order.
    pub(super) data: BytesMut,
    /// A ping or close, with which the pass ended.
    pub(super) answer: Option<Answer>,
}

/// Progress within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameState {
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
pub(super) struct FrameReader {
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
    pub(super) fn at_boundary(&self) -> bool {
        self.state == FrameState::Head && !self.in_message
    }

    /// Runs over `raw`: consumes every complete header and every payload byte there, unmasks
    /// the payload and returns it contiguous, split off the front of `raw`. Stops at an
    /// incomplete header or control frame (left in `raw`), after a ping, and at a close: after
    /// it when nothing was unmasked yet, before it otherwise (the data it follows goes first).
    ///
    /// Never reserves memory: what a header announces is only compared with the limit.
    pub(super) fn parse(&mut self, raw: &mut BytesMut) -> Result<Pass, FrameError> {
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
pub(super) fn consume(raw: &mut BytesMut, pos: &mut usize, out: usize, n: usize) {
    if out == 0 {
        raw.advance(n);
    } else {
        *pos += n;
    }
}

/// The code of a close frame's payload (none when empty); checks the reason is UTF-8.
pub(super) fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
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
pub(super) fn unmask(data: &mut [u8], mask: [u8; 4], phase: usize) {
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
pub(super) fn format_head(opcode: OpCode, len: usize, out: &mut [u8]) -> io::Result<usize> {
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
