//! [`PacketCodec`]: the incremental, sans-IO packet decoder, and its tokio-util
//! `Decoder`/`Encoder` impls (feature `codec`).
//!
//! The decoder is a two-state machine, so a header is parsed exactly once however the
//! bytes are split across reads:
//!
//! | state              | needs                     | on success                                  |
//! |--------------------|---------------------------|---------------------------------------------|
//! | `Head`             | 1 byte (type), 4 (length) | check type and limit, consume header, go to `Body` |
//! | `Body { kind, len }` | `len` body bytes        | `split_to(len)` (zero-copy), back to `Head` |
//!
//! A bad type byte is refused as soon as it arrives; a length over the limit is refused
//! from the 4 header bytes alone, before anything is reserved or buffered.

use bytes::{Buf, Bytes, BytesMut};

use super::packet::{DEFAULT_MAX_PACKET_SIZE, HEADER_LEN, MAX_BODY_LEN};
use super::{CodecError, Packet, PacketType};

/// Upper bound on what the decoder reserves ahead of a body's bytes. For the default limit
/// this is the whole body; with a larger configured limit, a header alone cannot make the
/// connection allocate more than this — the buffer grows as the bytes actually arrive.
const MAX_RESERVE_AHEAD: usize = 64 * 1024;

/// Where the decoder is within the current packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for (the rest of) a 4-byte header.
    Head,
    /// The header was consumed; waiting for `len` body bytes.
    Body {
        /// Type of the packet being read.
        kind: PacketType,
        /// Announced body length (already checked against the limit).
        len: usize,
    },
}

/// Incremental, sans-IO packet decoder (and encoder).
///
/// Feed it a `BytesMut` holding whatever bytes have arrived; [`decode`](Self::decode)
/// returns `Ok(Some(packet))` for each complete packet, `Ok(None)` when more bytes are
/// needed, and `Err` when the stream is corrupt (close the connection). With the `codec`
/// feature it is also a tokio-util `Decoder`/`Encoder`, so `Framed<TcpStream, PacketCodec>`
/// works directly.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use nano_core::protocol::{PacketCodec, PacketType};
///
/// let mut codec = PacketCodec::default();
/// let mut buf = BytesMut::from(&[3, 0, 0][..]); // a heartbeat, one byte missing
/// assert!(codec.decode(&mut buf)?.is_none());
/// buf.extend_from_slice(&[0, 2, 0, 0, 0]); // its last byte and a handshake ack
/// assert_eq!(codec.decode(&mut buf)?.unwrap().kind, PacketType::Heartbeat);
/// assert_eq!(codec.decode(&mut buf)?.unwrap().kind, PacketType::HandshakeAck);
/// assert!(codec.decode(&mut buf)?.is_none());
/// # Ok::<(), nano_core::protocol::CodecError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PacketCodec {
    /// Largest accepted body length, at most [`MAX_BODY_LEN`].
    max_packet_size: usize,
    /// Progress within the current packet.
    state: DecodeState,
}

impl PacketCodec {
    /// Creates a decoder that refuses bodies longer than `max_packet_size` bytes (clamped to
    /// [`MAX_BODY_LEN`], the most the 24-bit length can announce).
    #[inline]
    #[must_use]
    pub fn new(max_packet_size: usize) -> Self {
        PacketCodec {
            max_packet_size: max_packet_size.min(MAX_BODY_LEN),
            state: DecodeState::Head,
        }
    }

    /// The body-length limit in force.
    #[inline]
    #[must_use]
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Decodes the next packet from the front of `src`, consuming its bytes.
    ///
    /// `Ok(None)` means more bytes are needed (whatever was consumed is remembered).
    ///
    /// # Errors
    ///
    /// - [`CodecError::UnknownPacketType`] as soon as a type byte outside 1..=5 arrives;
    /// - [`CodecError::TooLarge`] when a header announces more than
    ///   [`max_packet_size`](Self::max_packet_size), before reserving or buffering the body.
    ///
    /// Errors leave `src` and the decoder unchanged.
    #[inline]
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let (kind, len) = match self.state {
            DecodeState::Body { kind, len } => (kind, len),
            DecodeState::Head => match self.decode_head(src)? {
                Some(head) => head,
                None => return Ok(None),
            },
        };
        if src.len() < len {
            self.state = DecodeState::Body { kind, len };
            return Ok(None);
        }
        self.state = DecodeState::Head;
        let body = if len == 0 {
            Bytes::new()
        } else {
            src.split_to(len).freeze()
        };
        Ok(Some(Packet { kind, body }))
    }

    /// Parses and consumes a header; reserves room for the body it announces.
    #[inline]
    fn decode_head(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<(PacketType, usize)>, CodecError> {
        let Some(&type_byte) = src.first() else {
            return Ok(None);
        };
        let kind = PacketType::try_from(type_byte)?;
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(src[1]) << 16 | usize::from(src[2]) << 8 | usize::from(src[3]);
        if len > self.max_packet_size {
            return Err(CodecError::TooLarge {
                len,
                max: self.max_packet_size,
            });
        }
        src.advance(HEADER_LEN);
        let missing = len.saturating_sub(src.len());
        if missing > 0 {
            src.reserve(missing.min(MAX_RESERVE_AHEAD));
        }
        Ok(Some((kind, len)))
    }

    /// Bytes of the current incomplete packet that are no longer in `src` (a consumed header).
    #[cfg(feature = "codec")]
    #[inline]
    fn consumed_of_partial(&self) -> usize {
        match self.state {
            DecodeState::Head => 0,
            DecodeState::Body { .. } => HEADER_LEN,
        }
    }
}

impl Default for PacketCodec {
    /// A decoder with the [`DEFAULT_MAX_PACKET_SIZE`] limit (64 KiB).
    #[inline]
    fn default() -> Self {
        PacketCodec::new(DEFAULT_MAX_PACKET_SIZE)
    }
}

#[cfg(feature = "codec")]
mod tokio_impls {
    use bytes::{Bytes, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    use super::PacketCodec;
    use crate::protocol::{encode_packet, CodecError, Packet};

    impl Decoder for PacketCodec {
        type Item = Packet;
        type Error = CodecError;

        #[inline]
        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
            PacketCodec::decode(self, src)
        }

        /// Like `decode`, but a partial packet left at the end of the stream is an error
        /// ([`CodecError::TrailingBytes`]).
        fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
            if let Some(packet) = PacketCodec::decode(self, src)? {
                return Ok(Some(packet));
            }
            let partial = src.len() + self.consumed_of_partial();
            if partial == 0 {
                Ok(None)
            } else {
                Err(CodecError::TrailingBytes(partial))
            }
        }
    }

    /// Encodes a packet (header and body).
    ///
    /// Only the 24-bit limit ([`MAX_BODY_LEN`](crate::protocol::MAX_BODY_LEN)) is enforced:
    /// the configured `max_packet_size` limits what this side accepts.
    impl Encoder<Packet> for PacketCodec {
        type Error = CodecError;

        #[inline]
        fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
            encode_packet(item.kind, &item.body, dst)
        }
    }

    /// Writes an already-encoded packet (for example the shared bytes of a broadcast, or a
    /// [`DataPacketWriter`](crate::protocol::DataPacketWriter) result) as-is.
    impl Encoder<Bytes> for PacketCodec {
        type Error = CodecError;

        #[inline]
        fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
            dst.extend_from_slice(&item);
            Ok(())
        }
    }
}
