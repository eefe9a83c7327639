//! The packet layer: `type (1 byte) | length (24-bit big-endian) | body`.

use bytes::{BufMut, Bytes, BytesMut};

use super::CodecError;

/// Length of a packet header: 1 type byte and a 3-byte big-endian body length.
pub const HEADER_LEN: usize = 4;

/// Largest body the 24-bit length field can describe (16 MiB − 1).
pub const MAX_BODY_LEN: usize = 0xFF_FFFF;

/// Default limit on received packet bodies (64 KiB, as nano).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 64 * 1024;

/// The type byte of a packet.
///
/// # Examples
///
/// ```
/// use nano_core::protocol::{CodecError, PacketType};
///
/// assert_eq!(PacketType::try_from(4).unwrap(), PacketType::Data);
/// assert!(matches!(PacketType::try_from(0), Err(CodecError::UnknownPacketType(0))));
/// ```
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Handshake: JSON from the client, JSON answer from the server.
    Handshake = 1,
    /// Handshake acknowledgement from the client (empty body).
    HandshakeAck = 2,
    /// Heartbeat, both directions (empty body).
    Heartbeat = 3,
    /// Data: the body is a [`Message`](super::Message).
    Data = 4,
    /// Kick from the server: empty (nano) or a JSON reason (pomelo).
    Kick = 5,
}

impl TryFrom<u8> for PacketType {
    type Error = CodecError;

    #[inline]
    fn try_from(byte: u8) -> Result<Self, CodecError> {
        Ok(match byte {
            1 => PacketType::Handshake,
            2 => PacketType::HandshakeAck,
            3 => PacketType::Heartbeat,
            4 => PacketType::Data,
            5 => PacketType::Kick,
            other => return Err(CodecError::UnknownPacketType(other)),
        })
    }
}

impl From<PacketType> for u8 {
    #[inline]
    fn from(kind: PacketType) -> u8 {
        kind as u8
    }
}

/// A decoded packet: its type and its (opaque) body.
///
/// The body of a packet decoded by [`PacketCodec`](super::PacketCodec) is a zero-copy slice
/// of the read buffer.
///
/// # Examples
///
/// ```
/// use nano_core::protocol::{Packet, PacketType};
///
/// let kick = Packet::new(PacketType::Kick, &b"{}"[..]);
/// assert_eq!(&kick.encode()?[..], b"\x05\x00\x00\x02{}");
/// assert_eq!(&Packet::heartbeat().encode()?[..], [3, 0, 0, 0]);
/// # Ok::<(), nano_core::protocol::CodecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The packet type.
    pub kind: PacketType,
    /// The packet body (without the header).
    pub body: Bytes,
}

impl Packet {
    /// Creates a packet of `kind` with `body`.
    #[inline]
    pub fn new(kind: PacketType, body: impl Into<Bytes>) -> Self {
        Packet {
            kind,
            body: body.into(),
        }
    }

    /// A heartbeat packet (empty body).
    #[inline]
    #[must_use]
    pub fn heartbeat() -> Self {
        Packet::new(PacketType::Heartbeat, Bytes::new())
    }

    /// Encodes the whole packet (header and body) into a new buffer.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`] if the body exceeds [`MAX_BODY_LEN`].
    pub fn encode(&self) -> Result<Bytes, CodecError> {
        let mut dst = BytesMut::with_capacity(HEADER_LEN + self.body.len());
        encode_packet(self.kind, &self.body, &mut dst)?;
        Ok(dst.freeze())
    }
}

/// Appends a whole packet (header and `body`) to `dst`.
///
/// # Errors
///
/// [`CodecError::TooLarge`] if `body` exceeds [`MAX_BODY_LEN`]; nothing is written then.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use nano_core::protocol::{encode_packet, PacketType};
///
/// let mut out = BytesMut::new();
/// encode_packet(PacketType::HandshakeAck, &[], &mut out)?;
/// assert_eq!(&out[..], [2, 0, 0, 0]);
/// # Ok::<(), nano_core::protocol::CodecError>(())
/// ```
#[inline]
pub fn encode_packet(kind: PacketType, body: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
    dst.reserve(HEADER_LEN + body.len());
    put_header(kind, body.len(), dst)?;
    dst.extend_from_slice(body);
    Ok(())
}

/// Writes a packet header announcing `len` body bytes.
#[inline]
pub(crate) fn put_header(
    kind: PacketType,
    len: usize,
    dst: &mut impl BufMut,
) -> Result<(), CodecError> {
    dst.put_slice(&header_bytes(kind, len)?);
    Ok(())
}

/// The 4 header bytes of a packet of `kind` with a body of `len` bytes.
#[inline]
pub(crate) fn header_bytes(kind: PacketType, len: usize) -> Result<[u8; HEADER_LEN], CodecError> {
    if len > MAX_BODY_LEN {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_BODY_LEN,
        });
    }
    Ok([kind as u8, (len >> 16) as u8, (len >> 8) as u8, len as u8])
}
