//! The nano / pomelo wire protocol, sans-IO.
//!
//! Two independent layers:
//!
//! 1. **Packets** frame a byte stream (TCP, or the payload of WebSocket binary frames):
//!    `type (1 byte) | body length (24-bit big-endian) | body`. [`PacketCodec`] decodes them
//!    incrementally from a `BytesMut` ([`Packet`], [`PacketType`]); [`encode_packet`] and
//!    [`Packet::encode`] write them. With the `codec` feature, [`PacketCodec`] is also a
//!    tokio-util `Decoder`/`Encoder`.
//! 2. **Messages** are the body of a [`PacketType::Data`] packet:
//!    `flag | id (varint) | route | payload`. [`Message::decode`] parses one (zero-copy:
//!    route and payload are slices of the packet), [`Message::encode_packet`] writes a whole
//!    data packet, and [`DataPacketWriter`] lets a serializer write the payload straight
//!    into the outgoing packet. Routes may be compressed to `u16` codes with a
//!    [`Dictionary`] announced in the handshake.
//!
//! Files: `packet.rs` (packet layer), `codec.rs` ([`PacketCodec`] and the tokio-util impls),
//! `message.rs` (message layer, [`DataPacketWriter`]), `route.rs` ([`RouteName`]),
//! `dict.rs` ([`Dictionary`]), `varint.rs` (LEB128 ids), `error.rs` (one error enum per
//! layer, each with a stable `NANO-xxx` code).
//!
//! Decoding never panics on input and never allocates in proportion to a length that has
//! not arrived: a header announcing more than the configured limit is refused from its 4
//! bytes alone.
//!
//! # Examples
//!
//! Decode a packet from received bytes, then the message inside it:
//!
//! ```
//! use bytes::BytesMut;
//! use nano_core::protocol::{Message, MessageType, PacketCodec, PacketType};
//!
//! // A request, id 300, route "Room.Join", payload "{}" — arriving in two reads.
//! let wire = b"\x04\x00\x00\x0f\x00\xac\x02\x09Room.Join{}";
//! let mut codec = PacketCodec::default(); // 64 KiB limit
//! let mut buf = BytesMut::from(&wire[..5]);
//! assert!(codec.decode(&mut buf)?.is_none()); // incomplete: need more bytes
//! buf.extend_from_slice(&wire[5..]);
//! let packet = codec.decode(&mut buf)?.expect("a whole packet");
//! assert_eq!(packet.kind, PacketType::Data);
//!
//! let msg = Message::decode(packet.body, None)?;
//! assert_eq!(msg.kind, MessageType::Request);
//! assert_eq!(msg.id, 300);
//! assert_eq!(msg.route.as_ref().unwrap(), "Room.Join");
//! assert_eq!(&msg.payload[..], b"{}");
//!
//! // And back: the same bytes.
//! let mut out = BytesMut::new();
//! msg.encode_packet(None, &mut out)?;
//! assert_eq!(&out[..], &wire[..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod codec;
mod dict;
mod error;
mod message;
mod packet;
mod route;
mod varint;

pub use codec::PacketCodec;
pub use dict::Dictionary;
pub use error::{CodecError, DictError, MessageError};
pub use message::{DataPacketWriter, Message, MessageType, MAX_ROUTE_LEN};
pub use packet::{
    encode_packet, Packet, PacketType, DEFAULT_MAX_PACKET_SIZE, HEADER_LEN, MAX_BODY_LEN,
};
pub use route::RouteName;
pub use varint::{decode_varint, encode_varint, varint_len, MAX_VARINT_LEN};
