//! Typed errors of the protocol layers.
//!
//! One enum per layer, no boxing: these values are produced on the hot path and a server
//! matches on them to decide between "answer with an error response" and "close the
//! connection". Every variant maps to a stable code string (see the `code` methods):
//!
//! | code       | meaning                                                        |
//! |------------|----------------------------------------------------------------|
//! | `NANO-400` | malformed input (bad type byte, truncated field, bad UTF-8, …) |
//! | `NANO-404` | a compressed route code that the dictionary does not know      |
//! | `NANO-409` | a dictionary entry that conflicts with an existing one         |
//! | `NANO-413` | a packet larger than the configured limit                      |
//! | `NANO-415` | a compressed payload (flag `0x10`), which we do not support    |
//! | `NANO-500` | an I/O error under the codec                                   |

use std::io;

/// Code for malformed input.
const BAD_REQUEST: &str = "NANO-400";
/// Code for an unknown (compressed) route.
const NOT_FOUND: &str = "NANO-404";
/// Code for conflicting dictionary entries.
const CONFLICT: &str = "NANO-409";
/// Code for a packet over the size limit.
const TOO_LARGE: &str = "NANO-413";
/// Code for an unsupported payload encoding.
const UNSUPPORTED: &str = "NANO-415";
/// Code for internal (I/O) failures.
const INTERNAL: &str = "NANO-500";

/// Error of the packet layer (framing), as returned by [`PacketCodec`](super::PacketCodec)
/// and the encoders.
///
/// Any decode error means the byte stream is corrupt or hostile: the connection should be
/// closed. Calling `decode` again after an error returns the same error.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use nano_core::protocol::{CodecError, PacketCodec};
///
/// let mut buf = BytesMut::from(&[0x09, 0, 0, 0][..]);
/// let err = PacketCodec::default().decode(&mut buf).unwrap_err();
/// assert!(matches!(err, CodecError::UnknownPacketType(9)));
/// assert_eq!(err.code(), "NANO-400");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The packet type byte is not one of 1..=5.
    #[error("unknown packet type {0:#04x}")]
    UnknownPacketType(u8),
    /// A packet body is larger than the limit (`max`): refused from the header alone when
    /// decoding, or refused before writing when encoding.
    #[error("packet body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Body length announced by the header (decode) or produced (encode).
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended in the middle of a packet; this many bytes of it were buffered
    /// (including a header that was already parsed).
    #[error("stream ended with {0} bytes of an incomplete packet")]
    TrailingBytes(usize),
    /// The body of a data packet is not a valid message.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// An I/O error from the underlying transport (tokio-util `Framed` wraps reads in this).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl CodecError {
    /// The stable error code (`NANO-400`, `NANO-413`, …) for logs and error responses.
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_core::protocol::CodecError;
    ///
    /// assert_eq!(CodecError::TooLarge { len: 10, max: 5 }.code(), "NANO-413");
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::UnknownPacketType(_) | CodecError::TrailingBytes(_) => BAD_REQUEST,
            CodecError::TooLarge { .. } => TOO_LARGE,
            CodecError::Message(e) => e.code(),
            CodecError::Io(_) => INTERNAL,
        }
    }
}

/// Error of the message layer: the body of a data packet is malformed, or a message cannot
/// be encoded.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use nano_core::protocol::{Message, MessageError};
///
/// // The 2-byte body of `04 00 00 02 00 01`: a request with id 1 and no route.
/// let err = Message::decode(Bytes::from_static(&[0x00, 0x01]), None).unwrap_err();
/// assert_eq!(err, MessageError::Truncated("route length"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The data packet has an empty body (no flag byte).
    #[error("empty message body")]
    Empty,
    /// The message type bits (1..=3 of the flag) hold 4..=7.
    #[error("invalid message type {0}")]
    BadMessageType(u8),
    /// Reserved flag bits 6 and 7 are set; carries the whole flag byte.
    #[error("reserved message flag bits set in {0:#04x}")]
    ReservedFlags(u8),
    /// The message id varint does not fit a u64 (more than 10 bytes, or overflow in the 10th).
    #[error("message id varint is longer than a u64")]
    VarintTooLong,
    /// The body ended before the named field was complete.
    #[error("message truncated: missing {0}")]
    Truncated(&'static str),
    /// A route longer than 255 bytes cannot be sent uncompressed (carries its length).
    #[error("route of {0} bytes exceeds 255 bytes")]
    RouteTooLong(usize),
    /// The route bytes are not valid UTF-8.
    #[error("route is not valid UTF-8")]
    RouteNotUtf8,
    /// A compressed route code that the dictionary does not contain.
    #[error("unknown compressed route code {0}")]
    UnknownRouteCode(u16),
    /// A compressed route arrived but no dictionary was negotiated.
    #[error("compressed route without a route dictionary")]
    MissingDictionary,
    /// The payload-compressed flag (`0x10`, a pitaya extension) is set; not supported.
    #[error("compressed payloads (flag 0x10) are not supported")]
    CompressedPayload,
    /// A request, notify or push to encode has neither a route nor a route code.
    #[error("a {0} message needs a route")]
    MissingRoute(&'static str),
}

impl MessageError {
    /// The stable error code (`NANO-400`, `NANO-404`, `NANO-415`).
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_core::protocol::MessageError;
    ///
    /// assert_eq!(MessageError::UnknownRouteCode(7).code(), "NANO-404");
    /// assert_eq!(MessageError::Empty.code(), "NANO-400");
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::UnknownRouteCode(_) => NOT_FOUND,
            MessageError::CompressedPayload => UNSUPPORTED,
            _ => BAD_REQUEST,
        }
    }
}

/// Error when building or parsing a route-compression [`Dictionary`](super::Dictionary).
///
/// # Examples
///
/// ```
/// use nano_core::protocol::{DictError, Dictionary};
///
/// let mut dict = Dictionary::new();
/// dict.insert("Room.Join", 1)?;
/// assert_eq!(dict.insert("Room.Leave", 1), Err(DictError::DuplicateCode(1)));
/// # Ok::<(), DictError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DictError {
    /// The route already has a code.
    #[error("route {0:?} is already in the dictionary")]
    DuplicateRoute(String),
    /// The code is already assigned to another route.
    #[error("route code {0} is already assigned")]
    DuplicateCode(u16),
    /// The JSON handshake `dict` is not an object.
    #[error("route dictionary must be a JSON object")]
    NotAnObject,
    /// A JSON handshake `dict` entry whose value is not an integer in 0..=65535.
    #[error("route {0:?} has a code that is not an integer in 0..=65535")]
    InvalidCode(String),
}

impl DictError {
    /// The stable error code (`NANO-409` for duplicates, `NANO-400` for malformed JSON).
    ///
    /// # Examples
    ///
    /// ```
    /// use nano_core::protocol::DictError;
    ///
    /// assert_eq!(DictError::DuplicateCode(3).code(), "NANO-409");
    /// ```
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            DictError::DuplicateRoute(_) | DictError::DuplicateCode(_) => CONFLICT,
            DictError::NotAnObject | DictError::InvalidCode(_) => BAD_REQUEST,
        }
    }
}
