//! `PacketCodec` incremental decoding.
//!
//! Input: `[limit selector][split seed][stream …]`. The stream is decoded twice with the same
//! limit: whole (one buffer), and fed in the chunks the split seed picks (see
//! `nano_fuzz::Splits`), decoding after every chunk as a connection does.
//!
//! Checks, beyond "no panic":
//! - every packet has a body within the limit and re-encodes to exactly the bytes it came from;
//! - the split decode yields the same packets, then the same error (or none), as the whole one;
//! - after `Ok(None)` the bytes waiting are less than one header plus the limit, and the
//!   buffer's capacity stays within a small multiple of what arrived plus the codec's
//!   reserve-ahead (a header alone never makes it reserve what it announces);
//! - an error leaves the buffer as it was, and decoding again gives the same error;
//! - `decode_eof` reports exactly the bytes of an unfinished packet as trailing.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nano_core::protocol::{
    CodecError, Packet, PacketCodec, DEFAULT_MAX_PACKET_SIZE, HEADER_LEN, MAX_BODY_LEN,
};
use nano_fuzz::Splits;
use tokio_util::codec::Decoder;

/// The limits tried: edge sizes, the default and the 24-bit maximum.
const LIMITS: [usize; 8] = [
    0,
    1,
    5,
    100,
    1024,
    DEFAULT_MAX_PACKET_SIZE,
    MAX_BODY_LEN,
    usize::MAX, // clamped to MAX_BODY_LEN by PacketCodec::new
];

/// What the codec may reserve ahead of a body's bytes (`MAX_RESERVE_AHEAD` in codec.rs).
const RESERVE_AHEAD: usize = 64 * 1024;

/// A comparable summary of a decode error (`CodecError` holds `io::Error`, so it is not `Eq`).
fn key(e: &CodecError) -> (u8, usize, usize) {
    match e {
        CodecError::UnknownPacketType(b) => (0, usize::from(*b), 0),
        CodecError::TooLarge { len, max } => (1, *len, *max),
        other => panic!("decode returned an error it does not document: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, seed, stream @ ..] = data else {
        return;
    };
    let limit = LIMITS[usize::from(*limit) % LIMITS.len()];
    let max = limit.min(MAX_BODY_LEN);
    let cap_bound = 4 * (stream.len() + RESERVE_AHEAD + 64);

    // Whole input.
    let mut codec = PacketCodec::new(limit);
    assert_eq!(codec.max_packet_size(), max);
    let mut buf = BytesMut::from(stream);
    let mut packets: Vec<Packet> = Vec::new();
    let mut offset = 0;
    let error = loop {
        let before = buf.len();
        match codec.decode(&mut buf) {
            Ok(Some(packet)) => {
                assert!(packet.body.len() <= max, "body over the limit");
                let wire = packet.encode().expect("a decoded packet re-encodes");
                assert_eq!(
                    &wire[..],
                    &stream[offset..offset + HEADER_LEN + packet.body.len()],
                    "re-encoded packet differs from its bytes"
                );
                offset += wire.len();
                assert_eq!(buf.len(), stream.len() - offset);
                packets.push(packet);
            }
            Ok(None) => {
                let pending = stream.len() - offset;
                assert!(pending < HEADER_LEN + max, "buffered a whole packet");
                assert!(buf.capacity() <= cap_bound, "reserved too much");
                // The tokio-util end of stream: an unfinished packet is trailing bytes.
                match Decoder::decode_eof(&mut codec.clone(), &mut buf.clone()) {
                    Ok(None) => assert_eq!(pending, 0),
                    Err(CodecError::TrailingBytes(n)) => assert_eq!(n, pending),
                    other => panic!("decode_eof after Ok(None): {other:?}"),
                }
                break None;
            }
            Err(e) => {
                assert_eq!(buf.len(), before, "an error consumed bytes");
                if let CodecError::TooLarge { len, max: m } = e {
                    assert!(len > m && m == max);
                }
                let again = codec.decode(&mut buf).err();
                assert_eq!(again.as_ref().map(key), Some(key(&e)), "error not sticky");
                break Some(key(&e));
            }
        }
        assert!(buf.capacity() <= cap_bound, "reserved too much");
    };

    // The same stream in chunks.
    let mut codec = PacketCodec::new(limit);
    let mut buf = BytesMut::new();
    let mut next = 0; // index into `packets`
    let mut fed = 0;
    let mut split_error = None;
    'feed: for n in Splits::new(*seed, stream.len()) {
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(packet)) => {
                    assert!(next < packets.len(), "split decode found an extra packet");
                    assert_eq!(packet, packets[next], "split decode differs");
                    next += 1;
                }
                Ok(None) => {
                    assert!(buf.len() < HEADER_LEN + max, "buffered a whole packet");
                    assert!(buf.capacity() <= cap_bound, "reserved too much (split)");
                    break;
                }
                Err(e) => {
                    split_error = Some(key(&e));
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(next, packets.len(), "split decode found fewer packets");
    assert_eq!(split_error, error, "split decode ended differently");
});
